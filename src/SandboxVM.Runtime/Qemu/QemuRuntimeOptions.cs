namespace SandboxVM.Runtime.Qemu;

public sealed class QemuRuntimeOptions
{
    public string QemuPath { get; set; } = "/usr/bin/qemu-system-x86_64";

    /// <summary>"auto" (kvm when KVM_CREATE_VM works here, else tcg), "kvm" or "tcg".</summary>
    public string Accel { get; set; } = "auto";

    /// <summary>Firmware passed with <c>-bios</c> when the file exists (qboot: boots the kernel directly); QEMU's default otherwise.</summary>
    public string Firmware { get; set; } = "/usr/share/qemu/qboot.rom";

    /// <summary>Per-VM run directories (sockets, pid file). Default: /run/sandboxvm/qemu as root, else under the user's runtime dir.</summary>
    public string? RunDirectory { get; set; }

    /// <summary>Snapshot store: guest RAM files and device state, best on tmpfs. Default /dev/shm/sandboxvm.</summary>
    public string SnapshotDirectory { get; set; } = "/dev/shm/sandboxvm";

    /// <summary>
    /// Another snapshot of a template is removed after a new one is saved only when it has not been
    /// restored for this long and no live VM maps it: servers of other builds sharing the store keep theirs.
    /// </summary>
    public TimeSpan SnapshotGracePeriod { get; set; } = TimeSpan.FromMinutes(15);

    /// <summary>QEMU's seccomp filter: -sandbox on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny.</summary>
    public bool Seccomp { get; set; } = true;

    /// <summary>
    /// A root server runs each QEMU as its own unprivileged uid (UidBase + a free slot), never as root,
    /// so one VM's QEMU cannot signal, trace or read another's. No free uid is a start error.
    /// </summary>
    public int UidBase { get; set; } = 900_000_001;
    public int UidCount { get; set; } = 100_000;
    /// <summary>Group of every QEMU; it may read (never write) snapshot RAM files.</summary>
    public int SandboxGid { get; set; } = 900_000_000;

    public string SetprivPath { get; set; } = "/usr/bin/setpriv";

    /// <summary>Refuse to start without a cgroup (memory cap on QEMU). Off only for unprivileged development.</summary>
    public bool RequireCgroups { get; set; } = true;

    /// <summary>Mount point of the cgroup hierarchy; must match the CgroupManager's (used to find leftovers).</summary>
    public string CgroupRoot { get; set; } = "/sys/fs/cgroup";

    /// <summary>Host memory allowed above the guest RAM for QEMU itself (plus the TCG code buffer under TCG).</summary>
    public int MemoryOverheadMib { get; set; } = 160;

    /// <summary>Threads QEMU may have (vCPUs, I/O workers, RCU...).</summary>
    public int PidsLimit { get; set; } = 256;

    /// <summary>TCG translation buffer (tb-size), bounded so it fits the cgroup (QEMU's default may reach 1 GiB).</summary>
    public int TcgTranslationBufferMib { get; set; } = 128;

    /// <summary>Host TSC frequency handed to TCG guests (tsc_early_khz); null = read it from the host kernel.</summary>
    public int? TscKhz { get; set; }

    /// <summary>Kernel command line before the runtime's and the template's own additions.</summary>
    public string KernelArgs { get; set; } = "console=ttyS0 quiet panic=-1 rdinit=/init";

    /// <summary>Cold boot until the agent's hello (TCG boots are slow on a loaded host).</summary>
    public TimeSpan BootTimeout { get; set; } = TimeSpan.FromSeconds(120);

    /// <summary>Restore until the agent's hello.</summary>
    public TimeSpan RestoreTimeout { get; set; } = TimeSpan.FromSeconds(30);

    /// <summary>Save of a running VM's whole RAM and device state (pause, fork) until QEMU says it is done.</summary>
    public TimeSpan SaveTimeout { get; set; } = TimeSpan.FromSeconds(120);

    /// <summary>How long DisposeAsync waits for QMP quit before SIGKILL.</summary>
    public TimeSpan QuitTimeout { get; set; } = TimeSpan.FromMilliseconds(500);
}
