namespace SandboxVM.Runtime.Gvisor;

public sealed class GvisorRuntimeOptions
{
    public string RunscPath { get; set; } = "/usr/bin/runsc";

    /// <summary>runsc platform: systrap works without KVM and without ptrace rights (kvm would need /dev/kvm).</summary>
    public string Platform { get; set; } = "systrap";

    /// <summary>Per-server directories (runsc state, bundles). Default: /run/sandboxvm/gvisor as root, else under the user's runtime dir.</summary>
    public string? RunDirectory { get; set; }

    /// <summary>Snapshot store; checkpoint images go to its <c>gvisor/</c> subdirectory. Default /dev/shm/sandboxvm.</summary>
    public string SnapshotDirectory { get; set; } = "/dev/shm/sandboxvm";

    /// <summary>Another checkpoint of a template is removed after a new one is saved only when it has not been restored for this long.</summary>
    public TimeSpan SnapshotGracePeriod { get; set; } = TimeSpan.FromMinutes(15);

    /// <summary>Path of the agent inside the rootfs.</summary>
    public string AgentPath { get; set; } = "/opt/sandboxvm/bin/sandboxvm-agent";

    public string Home { get; set; } = "/home/sandbox";

    /// <summary>Refuse to start without a host cgroup (memory, pids, cpu caps on the whole sandbox). Off only for unprivileged development.</summary>
    public bool RequireCgroups { get; set; } = true;

    /// <summary>Mount point of the cgroup hierarchy; must match the CgroupManager's (used to find leftovers).</summary>
    public string CgroupRoot { get; set; } = "/sys/fs/cgroup";

    /// <summary>
    /// Host memory allowed above the template's memory for the sandbox's own processes (the sentry, the
    /// gofer, the runsc that waits on them): the app's memory and tmpfs pages are the sentry's, so the cap
    /// on the cgroup is the template's memory plus this.
    /// </summary>
    public int MemoryOverheadMib { get; set; } = 192;

    /// <summary>
    /// Host tasks allowed above the template's process limit: under systrap every application thread is
    /// a host thread of a stub process, and the sentry, gofer and runsc have threads of their own.
    /// </summary>
    public int PidsHeadroom { get; set; } = 192;

    /// <summary>Cold start until the agent's hello.</summary>
    public TimeSpan BootTimeout { get; set; } = TimeSpan.FromSeconds(60);

    /// <summary>Restore until the agent's hello and reinit.</summary>
    public TimeSpan RestoreTimeout { get; set; } = TimeSpan.FromSeconds(30);

    /// <summary>runsc checkpoint, kill and delete.</summary>
    public TimeSpan CommandTimeout { get; set; } = TimeSpan.FromSeconds(60);
}
