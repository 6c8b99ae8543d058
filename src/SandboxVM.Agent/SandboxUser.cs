using System.Globalization;

namespace SandboxVM.Agent;

/// <summary>
/// Who user work runs as, and who owns what the agent creates for it.
/// </summary>
/// <remarks>
/// In a VM the agent is init and root: it has to be, to set the clock, reseed the RNG, run the egress
/// proxy and kill whatever a step leaves behind. User code must not be: root ignores RLIMIT_NPROC (the
/// per-run process cap) and could kill or trace the agent. So when the agent runs as root, every process
/// it starts for user work (compile and run steps, the Python fork server and kernel, whose children and
/// runs inherit their identity) runs as the sandbox user (uid/gid 1000, <c>ImageLayout.UserId</c>/
/// <c>GroupId</c> in SandboxVM.Images) with no supplementary groups, and every file operation the agent
/// does for that work runs with its filesystem identity (<see cref="Files.PathThreads"/>), so what the
/// agent creates is the user's and what the user swapped in reaches no further than the user could.
/// <para>
/// Mechanism: posix_spawn cannot change credentials, so the spawned program is
/// <c>/usr/bin/setpriv --reuid=U --regid=G --clear-groups --no-new-privs -- ARGV...</c>. setpriv is part
/// of util-linux, which is Essential in Debian (every rootfs has it, like the prlimit the host already
/// prepends); it sets the gid and groups before the uid, then execs ARGV in the same process, so the
/// pid the agent supervises (session leader, process group, wait status) is the step's own, and a
/// failure to drop privileges ends the step before any user code runs. <c>--no-new-privs</c> also keeps
/// set-uid binaries of the image from giving root back. The agent keeps resolving argv[0] itself (for
/// its 127/126 answers); setpriv then execs argv[0] unchanged, looked up on the step's own PATH in the
/// step's working directory, which is the same lookup, so programs see the argv[0] they were given.
/// Alternatives ruled out: a fork in managed code (unsafe in a multithreaded runtime), a setuid helper
/// of our own (more code in the image for what setpriv does).
/// </para>
/// <para>
/// Without root (the process runtime, where the agent already is uid 1000 in a user namespace without
/// capabilities, or a developer's agent) nothing changes: steps run as the agent's own user.
/// </para>
/// </remarks>
internal sealed class SandboxUser
{
    /// <summary>The image's sandbox user and group (SandboxVM.Images <c>ImageLayout.UserId</c>/<c>GroupId</c>).</summary>
    public const int DefaultId = 1000;

    public const string SetprivPath = "/usr/bin/setpriv";

    private SandboxUser(int? uid, int? gid)
    {
        Uid = uid;
        Gid = gid;
    }

    /// <summary>Steps run as the agent's own user; file operations keep the agent's identity.</summary>
    public static SandboxUser Self { get; } = new(null, null);

    /// <summary>Uid user work runs as, or null when it runs as the agent itself.</summary>
    public int? Uid { get; }

    public int? Gid { get; }

    /// <summary>True when steps are started through setpriv and file operations take the user's identity.</summary>
    public bool Switches => Uid is not null;

    public static SandboxUser Of(int uid, int gid) => new(uid, gid);

    /// <summary>
    /// The identity for an agent whose effective uid is root or not (<paramref name="isRoot"/>) and whose
    /// command line said <paramref name="option"/> (<c>--user</c>: <c>UID:GID</c>, <c>self</c>, or null
    /// for the default: the sandbox user when root, else self). Throws <see cref="ArgumentException"/>
    /// for a value it cannot use (a uid switch needs root).
    /// </summary>
    public static SandboxUser Decide(bool isRoot, string? option)
    {
        if (option is null)
        {
            return isRoot ? Of(DefaultId, DefaultId) : Self;
        }
        if (option == "self")
        {
            return Self;
        }
        string[] parts = option.Split(':');
        if (parts.Length != 2
            || !int.TryParse(parts[0], NumberStyles.None, CultureInfo.InvariantCulture, out int uid)
            || !int.TryParse(parts[1], NumberStyles.None, CultureInfo.InvariantCulture, out int gid))
        {
            throw new ArgumentException($"--user '{option}' is neither UID:GID nor self");
        }
        if (!isRoot)
        {
            throw new ArgumentException("--user UID:GID needs an agent running as root");
        }
        return Of(uid, gid);
    }

    public override string ToString() => Switches ? $"uid {Uid}, gid {Gid}, no supplementary groups" : "the agent's own user";

    /// <summary>The program and argv that start <paramref name="argv"/> (resolved to <paramref name="path"/>) as this user.</summary>
    public (string Path, IReadOnlyList<string> Argv) Wrap(string path, IReadOnlyList<string> argv)
    {
        if (!Switches)
        {
            return (path, argv);
        }
        string[] wrapped =
        [
            SetprivPath,
            $"--reuid={Uid!.Value.ToString(CultureInfo.InvariantCulture)}",
            $"--regid={Gid!.Value.ToString(CultureInfo.InvariantCulture)}",
            "--clear-groups",
            "--no-new-privs",
            "--",
            .. argv,
        ];
        return (SetprivPath, wrapped);
    }
}
