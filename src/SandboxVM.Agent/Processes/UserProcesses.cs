using System.Globalization;
using SandboxVM.Agent.Files;
using SandboxVM.Agent.Native;
using SandboxVM.Protocol;

namespace SandboxVM.Agent.Processes;

/// <summary>
/// Ends every process of a user (<see cref="ExecRequest.EndUserProcesses"/>), also those that left the
/// step's process group with setsid: the group kill at the end of a step does not reach them, and a
/// daemon could otherwise swap an artifact after it was hashed or wait for the next caller of a shared VM.
/// </summary>
/// <remarks>
/// kill(-1, SIGKILL) sent by a process running as the user reaches every process of that uid and nothing
/// else (the kernel checks the sender's uid against each target's), in one pass under the task list
/// lock, so a process forking meanwhile cannot outrun it; the sender, a short <c>/bin/sh -c 'kill -9 -1'</c>
/// started through setpriv like every step, survives it alone. The agent cannot send it from a thread of
/// its own with a changed uid: while that thread's uids are the user's, user code could signal it, and a
/// SIGKILL would end PID 1. An agent that does not switch users (the process runtime: all processes of the
/// sandbox are its own uid) sends kill(-1) itself. Either way the agent then reads /proc until no process
/// of the uid is left in its PID namespace (zombies until the reaper has them), sending again while live
/// ones remain. kill(-1) reaches the whole PID namespace, so this is allowed only where that namespace
/// is the sandbox: the agent is PID 1 (a VM), or in a PID namespace of its own (bubblewrap, tests).
/// </remarks>
internal static class UserProcesses
{
    /// <summary>Inode of the initial PID namespace (PROC_PID_INIT_INO): outside a VM, the host's own.</summary>
    private const string InitialPidNamespace = "pid:[4026531836]";

    private static readonly TimeSpan _deadline = TimeSpan.FromSeconds(5);
    private static readonly TimeSpan _pollInterval = TimeSpan.FromMilliseconds(10);
    private static readonly Lazy<string?> _ownNamespace = new(() => NamespaceOf("self"));

    /// <summary>Whether kill(-1) only reaches the sandbox: the agent is init, or not in the host's PID namespace.</summary>
    public static bool CanEnd => Environment.ProcessId == 1 || _ownNamespace.Value is { } ns && ns != InitialPidNamespace;

    /// <summary>gVisor's sentry names its root PID namespace by inode 1 (runsc 20240729: <c>readlink /proc/self/ns/pid</c> is <c>pid:[1]</c>).</summary>
    private const string GvisorRootPidNamespace = "pid:[1]";

    /// <summary>The agent is the init of a guest kernel (PID 1 of the initial PID namespace): a VM, not a test or bubblewrap.</summary>
    public static bool IsGuestInit => Environment.ProcessId == 1 && _ownNamespace.Value == InitialPidNamespace;

    /// <summary>
    /// The agent is the init of the whole sandbox, so every other process in it is user work: PID 1 of a VM's
    /// initial PID namespace, or of gVisor's root one (the sentry is the sandbox's kernel; nothing enters it
    /// but what the agent starts). Not a test's or bubblewrap's namespace, where the agent need not be alone.
    /// </summary>
    public static bool IsSandboxInit => IsGuestInit || Environment.ProcessId == 1 && _ownNamespace.Value == GvisorRootPidNamespace;

    /// <summary>Why <see cref="CanEnd"/> is false, for a bad_request.</summary>
    public const string CannotEndReason =
        "end_user_processes needs an agent that is PID 1 (a VM) or in a PID namespace of its own: kill(-1) would reach processes outside the sandbox";

    /// <summary>
    /// Kills every process of <paramref name="user"/> (the agent's own uid for <see cref="SandboxUser.Self"/>)
    /// in the agent's PID namespace and waits until none is left. Returns how many were found at first.
    /// Throws <see cref="AgentException"/> when that cannot be done.
    /// </summary>
    /// <param name="user">Whose processes; <see cref="SandboxUser.Self"/>: the agent's own uid.</param>
    /// <param name="supervisor">Starts the process that sends kill(-1) as the user.</param>
    /// <param name="everyoneElse">
    /// The caller knows every process but the agent is this user's work (a one-shot VM: the agent is the
    /// guest's init, the exec's user is the sandbox user, no per-run user is active): the agent then sends
    /// kill(-1) itself, which saves starting a process per round (about 25 ms on the host, several times
    /// that under emulation; under gVisor the sh rounds made this 200-450 ms of a pooled python print(1)).
    /// </param>
    public static async Task<int> EndAllAsync(SandboxUser user, ProcessSupervisor supervisor, bool everyoneElse = false)
    {
        if (!CanEnd)
        {
            throw AgentException.BadRequest(CannotEndReason);
        }
        uint uid = user.Uid is { } u ? (uint)u : (uint)Libc.EffectiveUid;
        var clock = System.Diagnostics.Stopwatch.StartNew();
        int first = -1;
        while (true)
        {
            var (live, zombies) = Count(uid);
            if (first < 0)
            {
                first = live + zombies;
            }
            if (live + zombies == 0)
            {
                return first;
            }
            if (clock.Elapsed > _deadline)
            {
                throw new AgentException(ErrorCodes.Internal,
                    $"{live} processes of uid {uid} were still alive {_deadline.TotalSeconds:0} s after SIGKILL (and {zombies} not reaped)");
            }
            if (live > 0)
            {
                await SendAsync(user, supervisor, everyoneElse);
            }
            await Task.Delay(_pollInterval);
        }
    }

    /// <summary>
    /// kill(-1, SIGKILL) from the agent, once, without waiting: only where the agent is the sandbox's init
    /// and every other process is user work (<see cref="IsSandboxInit"/>, see <see cref="EndAllAsync"/>).
    /// </summary>
    public static void KillEveryoneElseOnce()
    {
        if (!IsSandboxInit)
        {
            throw AgentException.BadRequest(CannotEndReason);
        }
        Libc.KillEveryoneElse();
    }

    /// <summary>
    /// kill(-1, SIGSTOP) from the agent, once: every other process stops where it is and runs no more user
    /// code, but does not exit (no teardown work), so a sandbox the host discards anyway is not busy
    /// unmapping a dying interpreter while the agent answers. Same conditions as <see cref="KillEveryoneElseOnce"/>;
    /// <see cref="EndAllAsync"/> still kills them (SIGKILL ends a stopped process).
    /// </summary>
    public static void StopEveryoneElseOnce()
    {
        if (!IsSandboxInit)
        {
            throw AgentException.BadRequest(CannotEndReason);
        }
        Libc.StopEveryoneElse();
    }

    private static async Task SendAsync(SandboxUser user, ProcessSupervisor supervisor, bool everyoneElse)
    {
        if (!user.Switches || everyoneElse)
        {
            Libc.KillEveryoneElse();
            return;
        }
        using var root = await UserFiles.OpenDirectoryAsync(SandboxUser.Self, "/");
        ChildProcess killer;
        try
        {
            killer = supervisor.Start("/bin/sh", ["sh", "-c", "kill -9 -1"], ["PATH=/usr/bin:/bin"], root, user);
        }
        catch (SpawnException e)
        {
            throw new AgentException(ErrorCodes.Internal, $"cannot start the process that ends user {user.Uid}'s processes: {e.Message}");
        }
        using (killer)
        {
            killer.Stdin.Dispose();
            await killer.Exited;
            killer.KillRemainingGroup();
        }
    }

    /// <summary>Processes of <paramref name="uid"/> (real uid) in the agent's PID namespace, other than the agent and the namespace's init: live ones and zombies.</summary>
    private static (int Live, int Zombies) Count(uint uid)
    {
        int live = 0;
        int zombies = 0;
        string self = Environment.ProcessId.ToString(CultureInfo.InvariantCulture);
        foreach (string dir in Directory.EnumerateDirectories("/proc"))
        {
            string name = Path.GetFileName(dir);
            // PID 1 of the namespace is out of kill(-1)'s reach and not user work: the agent itself in a
            // VM, bubblewrap's init in the process runtime.
            if (name.Length == 0 || !char.IsAsciiDigit(name[0]) || name == self || name == "1" || NamespaceOf(name) != _ownNamespace.Value)
            {
                continue;
            }
            uint? owner = null;
            bool zombie = false;
            try
            {
                foreach (string line in File.ReadLines(Path.Combine(dir, "status")))
                {
                    if (line.StartsWith("State:", StringComparison.Ordinal))
                    {
                        // "State:\tZ (zombie)"
                        zombie = line.Length > 7 && line[7] is 'Z' or 'X';
                    }
                    else if (line.StartsWith("Uid:", StringComparison.Ordinal))
                    {
                        owner = uint.Parse(line.Split('\t', StringSplitOptions.RemoveEmptyEntries)[1], CultureInfo.InvariantCulture);
                        break;
                    }
                }
            }
            catch (Exception e) when (AgentException.IsIo(e))
            {
                continue; // gone meanwhile
            }
            if (owner == uid)
            {
                _ = zombie ? zombies++ : live++;
            }
        }
        return (live, zombies);
    }

    private static string? NamespaceOf(string pid)
    {
        try
        {
            return new FileInfo($"/proc/{pid}/ns/pid").LinkTarget;
        }
        catch (Exception e) when (AgentException.IsIo(e))
        {
            return null;
        }
    }
}
