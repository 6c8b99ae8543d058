namespace SandboxVM.Runtime.Process;

public sealed class ProcessRuntimeOptions
{
    public string BwrapPath { get; set; } = "/usr/bin/bwrap";
    public string SetprivPath { get; set; } = "/usr/bin/setpriv";

    /// <summary>
    /// When the server runs as root, each sandbox runs as its own unprivileged host uid (and gid of the
    /// same number) from [UidBase, UidBase + UidCount), the range QEMU processes are given theirs from
    /// (one pool: see HostUidPool).
    /// </summary>
    public int UidBase { get; set; } = 900_000_001;
    public int UidCount { get; set; } = 100_000;

    /// <summary>The seccomp filter of <see cref="SeccompFilter"/> (libseccomp2 must be installed). Off only to compare.</summary>
    public bool Seccomp { get; set; } = true;

    /// <summary>Path of the agent inside the rootfs.</summary>
    public string AgentPath { get; set; } = "/opt/sandboxvm/bin/sandboxvm-agent";
    public string Home { get; set; } = "/home/sandbox";
    /// <summary>Refuse to start without cgroup limits (memory, pids). Off only for unprivileged development.</summary>
    public bool RequireCgroups { get; set; } = true;
    public TimeSpan HelloTimeout { get; set; } = TimeSpan.FromSeconds(20);
}
