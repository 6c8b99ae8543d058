using System.Globalization;
using Microsoft.Win32.SafeHandles;
using SandboxVM.Agent.Native;

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
/// <c>GroupId</c> in SandboxVM.Images) with no supplementary groups, and what the agent creates for that
/// work (directories, written files, the home skeleton, the fork server's directory) is chowned to it.
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

    /// <summary>Steps run as the agent's own user; nothing is chowned.</summary>
    public static SandboxUser Self { get; } = new(null, null);

    /// <summary>Uid user work runs as, or null when it runs as the agent itself.</summary>
    public int? Uid { get; }

    public int? Gid { get; }

    /// <summary>True when steps are started through setpriv and created files are chowned.</summary>
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

    /// <summary>Gives <paramref name="path"/> (not a symlink's target) to the user. Throws <see cref="IOException"/>.</summary>
    public void Own(string path)
    {
        if (!Switches)
        {
            return;
        }
        int errno = Libc.Lchown(path, Uid!.Value, Gid!.Value);
        if (errno != 0)
        {
            throw new IOException($"cannot give {path} to uid {Uid}: {Libc.DescribeErrno(errno)}");
        }
    }

    /// <summary>
    /// Gives a file the agent opened for writing at <paramref name="path"/> to the user, but only when it
    /// is a regular file and the very file at that path: a symlink planted there (by user code, pointing at
    /// a device, say) is written through as before, but its target is never given away. Throws <see cref="IOException"/>.
    /// </summary>
    public void OwnWritten(SafeFileHandle handle, string path)
    {
        if (!Switches)
        {
            return;
        }
        if (Libc.Stat(handle, out var opened) != 0 || Libc.Stat(path, out var named) != 0
            || opened.Kind != FileKindBits.Regular || named.Kind != FileKindBits.Regular
            || opened.Inode != named.Inode || opened.Device != named.Device)
        {
            AgentLog.Write($"{path} is not a plain file of its own (a symlink?): left to its owner");
            return;
        }
        int errno = Libc.Fchown(handle, Uid!.Value, Gid!.Value);
        if (errno != 0)
        {
            throw new IOException($"cannot give {path} to uid {Uid}: {Libc.DescribeErrno(errno)}");
        }
    }

    /// <summary>
    /// Like <see cref="Directory.CreateDirectory(string)"/> (parents too, an existing directory is fine),
    /// giving every directory it creates to the user. Existing ones keep their owner.
    /// </summary>
    public void CreateDirectory(string path)
    {
        path = Path.TrimEndingDirectorySeparator(Path.GetFullPath(path));
        if (!Switches)
        {
            Directory.CreateDirectory(path);
            return;
        }
        var missing = new Stack<string>();
        for (string? dir = path; dir is not null && !Directory.Exists(dir); dir = Path.GetDirectoryName(dir))
        {
            missing.Push(dir);
        }
        while (missing.TryPop(out string? dir))
        {
            // Created one level at a time so each new level can be given away; one that appeared
            // meanwhile (a concurrent request) is someone else's and keeps its owner.
            if (Directory.Exists(dir))
            {
                continue;
            }
            Directory.CreateDirectory(dir);
            Own(dir);
        }
    }
}
