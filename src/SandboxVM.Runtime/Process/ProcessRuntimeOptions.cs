namespace SandboxVM.Runtime.Process;

public sealed class ProcessRuntimeOptions
{
    public string BwrapPath { get; set; } = "/usr/bin/bwrap";
    public string SetprivPath { get; set; } = "/usr/bin/setpriv";
    /// <summary>Host uid/gid the sandbox runs as (outside its user namespace). Default: nobody.</summary>
    public int HostUid { get; set; } = 65534;
    public int HostGid { get; set; } = 65534;
    /// <summary>Path of the agent inside the rootfs.</summary>
    public string AgentPath { get; set; } = "/opt/sandboxvm/bin/sandboxvm-agent";
    public string Home { get; set; } = "/home/sandbox";
    /// <summary>Refuse to start without cgroup limits (memory, pids). Off only for unprivileged development.</summary>
    public bool RequireCgroups { get; set; } = true;
    public TimeSpan HelloTimeout { get; set; } = TimeSpan.FromSeconds(20);
}
