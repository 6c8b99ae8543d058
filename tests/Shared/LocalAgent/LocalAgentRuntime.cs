using System.Diagnostics;
using System.Globalization;
using System.Reflection;
using SandboxVM.Runtime;
using SandboxVM.Runtime.Agent;
using Microsoft.Extensions.Logging.Abstractions;
using SandboxVM.Runtime.Cgroups;
using SandboxVM.Runtime.Process;

namespace SandboxVM.Testing;

/// <summary>
/// The fast runtime of the integration tier: each sandbox is the real guest agent (its build output,
/// <c>dotnet SandboxVM.Agent.dll</c>, or a published binary) as a local process speaking the real protocol
/// over its stdio, so RunService, sessions, streaming and the endpoints run against real steps (python3,
/// sh of the host) in well under a second per sandbox. No root and no bubblewrap: util-linux
/// <c>unshare</c> makes a PID namespace (so a one-shot run's end_user_processes reaches only the
/// sandbox) and a mount namespace with tmpfs on /tmp and /home (the paths RunService uses), as root of
/// a user namespace; the agent itself runs in a nested user namespace as uid 1000, the test's user
/// outside: an agent that is not root switches no users and drops no groups (which a user namespace
/// without setgroups would refuse), and cannot set the host's clock on reinit. When this
/// process may create cgroups (root), each sandbox gets one with the template's memory plus
/// <see cref="AgentHeadroomMib"/> for the agent itself, so OOM is counted by the host as in production;
/// otherwise <see cref="LimitsMemory"/> is false and tests that need it skip. Not isolation: a test tool.
/// </summary>
public sealed class LocalAgentRuntime : IVmRuntime, IAsyncDisposable
{
    /// <summary>
    /// What the agent needs in the sandbox's cgroup next to the code: the dll under the JIT is about 60 MB
    /// resident, the NativeAOT binary (SANDBOXVM_AGENT_BINARY) 8 MB (ps, an idle sandbox's agent). An OOM test
    /// must fill the whole cgroup, and each MiB written costs about 6 ms of CPU on the 2-core development VM
    /// (224 MiB: 1.3 s of CPU, 5-8 s of wall at a load of 20); behind the dll's headroom that outlasted a 10 s run
    /// timeout at a load of 40 (3 of 5 runs a timeout, not oom).
    /// </summary>
    public int AgentHeadroomMib { get; }

    private const string CgroupPrefix = "sbxlocal";

    /// <summary>
    /// PID 1 of the namespaces: mounts the sandbox's writable trees, then runs the agent as its child (not
    /// exec: an agent that is PID 1 takes itself for a VM's init) with the channel on its stdin and stdout,
    /// as uid 1000 of a user namespace of its own (which sees the trees as its own). Its death (SIGKILL
    /// from the host) ends every process of the PID namespace.
    /// </summary>
    private const string Init =
        "mount -t tmpfs -o size=\"$1\",mode=1777 sandbox-tmp /tmp; " +
        "mount -t tmpfs -o size=\"$1\",mode=0755 sandbox-home /home; " +
        "mkdir -p /home/sandbox; shift; " +
        // A background command's stdin is /dev/null unless redirected from another fd (a <&0 would dup that /dev/null).
        "exec 3<&0; unshare --user --map-user=1000 --map-group=1000 -- \"$@\" <&3 3<&- & exec 3<&-; wait $!";

    private readonly CgroupManager? _cgroups;
    private readonly string[] _agent;
    private readonly string? _stagedAgent;
    private readonly List<LocalAgentVm> _vms = [];
    // Process-wide: cgroup names carry this process's id and this number, and test classes running side by
    // side each have a runtime of their own (a per-runtime count gave two sandboxes the same cgroup).
    private static int _started;

    public LocalAgentRuntime()
    {
        (_agent, _stagedAgent) = StageAgent(AgentCommand());
        AgentHeadroomMib = _agent.Length == 1 ? 32 : 160;
        var cgroups = new CgroupManager();
        _cgroups = cgroups.IsUsable ? cgroups : null;
    }

    public string Name => "local";
    public RuntimeCapabilities Capabilities { get; } = new(IsolationLevel.SharedKernel, Snapshots: false, Networking: false, OwnKernel: false);
    public string? Accel => null;

    /// <summary>Whether sandboxes have a memory cgroup (OOM is then detected); false without root or writable cgroups.</summary>
    public bool LimitsMemory => _cgroups is not null;

    /// <summary>Why sandboxes cannot start on this host, or null.</summary>
    public static string? UnavailableReason { get; } = FindUnavailableReason();

    public IReadOnlyList<LocalAgentVm> Vms
    {
        get
        {
            lock (_vms)
            {
                return [.. _vms];
            }
        }
    }

    public async Task<IVm> StartAsync(VmSpec spec, CancellationToken cancellationToken)
    {
        string id = CgroupManager.OwnedName(CgroupPrefix, Interlocked.Increment(ref _started).ToString(CultureInfo.InvariantCulture));
        var cgroup = _cgroups?.Create(id, new CgroupLimits((long)(spec.MemoryMib + AgentHeadroomMib) << 20, spec.MaxProcesses + 128, spec.Vcpus));
        // The process runtime's launcher: joins the cgroup before anything else runs, then the namespaces.
        var psi = CgroupLauncher.StartInfo(cgroup);
        psi.Environment["PATH"] = "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin";
        psi.Environment["HOME"] = "/home/sandbox";
        psi.Environment["DOTNET_CLI_TELEMETRY_OPTOUT"] = "1";
        psi.Environment["DOTNET_NOLOGO"] = "1";
        // No diagnostics IPC socket in the sandbox's /tmp.
        psi.Environment["DOTNET_EnableDiagnostics"] = "0";
        foreach (string arg in (string[])
                 [
                     "unshare", "--user", "--map-root-user", "--pid", "--fork", "--mount-proc", "--kill-child", "--",
                     "/bin/sh", "-ec", Init, "sandboxvm-init", spec.WritableBytes.ToString(CultureInfo.InvariantCulture),
                     .. _agent, "--home", "/home/sandbox", "--outputs", "/tmp/outputs",
                 ])
        {
            psi.ArgumentList.Add(arg);
        }
        Process process;
        try
        {
            process = Process.Start(psi) ?? throw new InvalidOperationException("sh did not start");
        }
        catch
        {
            if (cgroup is not null)
            {
                await cgroup.DestroyAsync(CancellationToken.None);
            }
            throw;
        }
        // From here the VM owns the process and the cgroup, as a process-runtime sandbox does.
        var vm = new LocalAgentVm(new ProcessVm(id, spec.TemplateName, process, cgroup, null, NullLogger.Instance), process.Id);
        lock (_vms)
        {
            _vms.Add(vm);
        }
        try
        {
            using var hello = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
            hello.CancelAfter(TimeSpan.FromSeconds(60));
            await vm.Agent.HelloAsync(hello.Token);
        }
        catch (Exception e)
        {
            await vm.DisposeAsync();
            throw new SandboxStartException("its agent did not start", $"local agent {id} did not answer hello: {e.Message}. stderr: {vm.Diagnostics}", e);
        }
        return vm;
    }

    public Task<int> CleanupLeftoversAsync(CancellationToken cancellationToken) =>
        _cgroups?.SweepAsync(CgroupPrefix, cancellationToken) ?? Task.FromResult(0);

    public async ValueTask DisposeAsync()
    {
        foreach (var vm in Vms)
        {
            await vm.DisposeAsync();
        }
        if (_stagedAgent is not null && Directory.Exists(_stagedAgent))
        {
            Directory.Delete(_stagedAgent, recursive: true);
        }
    }

    /// <summary>
    /// SANDBOXVM_AGENT_BINARY (a published native agent), else the agent dll the test project was built
    /// with (its <c>SandboxVM.AgentPath</c> assembly metadata) run by this process's dotnet host.
    /// </summary>
    /// <summary>
    /// The sandbox mounts fresh tmpfs on /tmp and /home, so an agent under them (a checkout cloned into
    /// /tmp, as CI may) would vanish: such an agent is copied to /var/tmp first (its directory, for a dll).
    /// </summary>
    private static (string[] Command, string? Staged) StageAgent(string[] command)
    {
        string agent = command[^1];
        if (!AgentStaging.IsHidden(agent))
        {
            return (command, null);
        }
        string staged = Path.Combine("/var/tmp", $"sbxlocal-agent-{Environment.ProcessId}-{Guid.NewGuid():N}");
        return ([.. command[..^1], AgentStaging.CopyTo(agent, staged)], staged);
    }

    private static string[] AgentCommand()
    {
        string? binary = Environment.GetEnvironmentVariable("SANDBOXVM_AGENT_BINARY");
        if (!string.IsNullOrEmpty(binary))
        {
            return [binary];
        }
        string? dll = typeof(LocalAgentRuntime).Assembly.GetCustomAttributes<AssemblyMetadataAttribute>()
            .FirstOrDefault(a => a.Key == "SandboxVM.AgentPath")?.Value;
        if (string.IsNullOrEmpty(dll) || !File.Exists(dll))
        {
            throw new InvalidOperationException($"agent dll not found at '{dll}': build src/SandboxVM.Agent first");
        }
        return [Environment.ProcessPath is { } host && Path.GetFileNameWithoutExtension(host) == "dotnet" ? host : "dotnet", dll];
    }

    private static string? FindUnavailableReason()
    {
        if (!OperatingSystem.IsLinux())
        {
            return "needs Linux namespaces";
        }
        if (!File.Exists("/usr/bin/unshare"))
        {
            return "needs unshare (util-linux)";
        }
        // The same namespaces a sandbox gets: fails where unprivileged user namespaces are off.
        var probe = Process.Start(new ProcessStartInfo("/usr/bin/unshare", ["--user", "--map-root-user", "--pid", "--fork", "--mount-proc", "--", "/bin/true"])
        {
            RedirectStandardError = true,
            UseShellExecute = false,
        })!;
        string stderr = probe.StandardError.ReadToEnd();
        if (!probe.WaitForExit(10_000))
        {
            probe.Kill();
            return "unshare did not finish within 10 s";
        }
        return probe.ExitCode == 0 ? null : $"cannot create user, PID and mount namespaces: {stderr.Trim()}";
    }
}

/// <summary>A sandbox of <see cref="LocalAgentRuntime"/>: a process-runtime sandbox (<see cref="ProcessVm"/>) whose agent a test can kill alone.</summary>
public sealed class LocalAgentVm : IVm
{
    private readonly ProcessVm _vm;
    private readonly int _launcherPid;

    internal LocalAgentVm(ProcessVm vm, int launcherPid)
    {
        _vm = vm;
        _launcherPid = launcherPid;
    }

    public string Id => _vm.Id;
    public string TemplateName => _vm.TemplateName;
    public VmSource Source => _vm.Source;
    public AgentClient Agent => _vm.Agent;
    public TimeSpan StartupTime => _vm.StartupTime;
    public Task Exited => _vm.Exited;

    /// <summary>True once the sandbox is gone (ended by the host, or dead).</summary>
    public bool Ended => _vm.Exited.IsCompleted;

    /// <summary>The agent's stderr (its log), the last 8 KiB.</summary>
    public string Diagnostics => _vm.Diagnostics;

    public VmUsage ReadUsage() => _vm.ReadUsage();

    /// <summary>The sandbox's root as the host reaches it (/proc/INIT/root): its /tmp and /home are the sandbox's own tmpfs.</summary>
    public string RootPath => $"/proc/{Children(_launcherPid).Single()}/root";

    /// <summary>
    /// SIGKILLs the agent process alone (a guest whose agent crashed): the host sees its channel end.
    /// The chain is the launcher (exec'd into unshare) → namespace init sh → agent.
    /// </summary>
    public void KillAgent()
    {
        int init = Children(_launcherPid).Single();
        int agent = Children(init).Single();
        Process.GetProcessById(agent).Kill();
    }

    private static List<int> Children(int pid) =>
    [
        .. File.ReadAllText($"/proc/{pid}/task/{pid}/children").Split(' ', StringSplitOptions.RemoveEmptyEntries)
            .Select(p => int.Parse(p, CultureInfo.InvariantCulture)),
    ];

    public ValueTask DisposeAsync() => _vm.DisposeAsync();
}
