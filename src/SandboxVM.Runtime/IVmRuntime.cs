using SandboxVM.Runtime.Agent;

namespace SandboxVM.Runtime;

/// <summary>How strongly a runtime separates sandboxed code from the host.</summary>
public enum IsolationLevel
{
    /// <summary>Namespaces and cgroups on the host kernel (bubblewrap): for development and fast tests.</summary>
    SharedKernel,
    /// <summary>A virtual machine with its own kernel.</summary>
    Vm,
    /// <summary>
    /// gVisor: code talks to a kernel implemented in user space (the sentry), which itself makes only a
    /// small, filtered set of host system calls; namespaces and a cgroup around it. Between the two above.
    /// </summary>
    UserSpaceKernel,
}

/// <summary>The names an isolation level goes by in the API, the CLI and the docs.</summary>
public static class IsolationNames
{
    /// <summary><c>vm</c>, <c>user-space-kernel</c> or <c>shared-kernel</c>.</summary>
    public static string Name(this IsolationLevel level) => level switch
    {
        IsolationLevel.Vm => "vm",
        IsolationLevel.UserSpaceKernel => "user-space-kernel",
        _ => "shared-kernel",
    };

    /// <summary>One line on what the level means, for `sandboxvm doctor`.</summary>
    public static string Describe(this IsolationLevel level) => level switch
    {
        IsolationLevel.Vm => "vm: a virtual machine with its own Linux kernel; code never reaches the host kernel",
        IsolationLevel.UserSpaceKernel => "user-space-kernel: gVisor's sentry answers the code's system calls in user space and uses few, filtered host calls itself",
        _ => "shared-kernel: bubblewrap namespaces and cgroups on the host kernel, weaker than a VM",
    };
}

/// <summary>How a VM was obtained for a request; reported in run metrics.</summary>
public enum VmSource
{
    Pool,
    Restore,
    Boot,
    Singleton,
    Process,
}

/// <param name="Isolation">What separates a sandbox from the host.</param>
/// <param name="Snapshots">Sandboxes can be restored from a warmed-up snapshot.</param>
/// <param name="Networking">Sandboxes can have a network device.</param>
/// <param name="OwnKernel">Each sandbox boots a kernel of its own.</param>
/// <param name="ColdRestores">
/// A restored clone's first run pays for what the runtime rebuilds lazily, so a pool primes its clones
/// (PoolManager.PrimeRestoredVms): QEMU's TCG translates guest code afresh and faults memory in on first
/// touch; gVisor's sentry maps the restored memory into the sandbox's stub processes page by page.
/// </param>
public sealed record RuntimeCapabilities(IsolationLevel Isolation, bool Snapshots, bool Networking, bool OwnKernel, bool ColdRestores = false);

/// <summary>What a runtime needs to start one sandbox of a template.</summary>
public sealed record VmSpec
{
    public required string TemplateName { get; init; }
    /// <summary>Unpacked root filesystem (process runtime), mounted read-only.</summary>
    public required string RootfsDir { get; init; }
    /// <summary>ext4 image of the same tree (VM runtimes).</summary>
    public string? RootfsImage { get; init; }
    public int Vcpus { get; init; } = 1;
    public int MemoryMib { get; init; } = 512;
    public int MaxProcesses { get; init; } = 128;
    /// <summary>Cap on each writable filesystem (work dir, /tmp).</summary>
    public long WritableBytes { get; init; } = 256L << 20;
    /// <summary>Guest kernel (bzImage) of VM runtimes that boot their own kernel.</summary>
    public string? KernelPath { get; init; }
    /// <summary>Initramfs that mounts <see cref="RootfsImage"/> and starts the agent.</summary>
    public string? InitrdPath { get; init; }
    /// <summary>Appended to the runtime's kernel command line.</summary>
    public string? KernelArgs { get; init; }
    /// <summary>Names the warm-up run before a snapshot (e.g. a hash of the script); part of the snapshot key.</summary>
    public string? WarmupKey { get; init; }
}

/// <summary>A runtime's saved template VM, restored by <see cref="IVmRuntime.StartAsync"/>.</summary>
public sealed record SnapshotInfo(string Key, string Directory, bool Built, TimeSpan Elapsed);

/// <summary>
/// One backend that runs sandboxes: process (bubblewrap), qemu, gvisor. The seam between
/// everything above (pools, runs, HTTP) and the machinery that isolates code.
/// </summary>
public interface IVmRuntime
{
    /// <summary>"process", "qemu" or "gvisor".</summary>
    string Name { get; }

    RuntimeCapabilities Capabilities { get; }

    /// <summary>How the runtime runs guest code: qemu's acceleration ("kvm", "tcg"), gvisor's platform ("systrap", "kvm"), or null where it does not apply.</summary>
    string? Accel { get; }

    /// <summary>Starts a sandbox and returns once its agent has answered hello.</summary>
    Task<IVm> StartAsync(VmSpec spec, CancellationToken cancellationToken);

    /// <summary>
    /// Makes sure a snapshot exists for <paramref name="spec"/>: when none matches its inputs, boots the
    /// template, runs <paramref name="warmup"/> through its agent and saves it. Later <see cref="StartAsync"/>
    /// calls with an equal spec restore from it. Null where the runtime has no snapshots.
    /// </summary>
    Task<SnapshotInfo?> PrepareSnapshotAsync(VmSpec spec, Func<AgentClient, CancellationToken, Task>? warmup, CancellationToken cancellationToken) =>
        Task.FromResult<SnapshotInfo?>(null);

    /// <summary>
    /// Whether a snapshot returned by <see cref="PrepareSnapshotAsync"/> is still there (someone may have
    /// removed it: a cleared tmpfs, a hand). When it is not, prepare it again.
    /// </summary>
    bool SnapshotExists(SnapshotInfo snapshot) => true;

    /// <summary>Ends sandboxes left behind by an earlier server process that died. Returns how many.</summary>
    Task<int> CleanupLeftoversAsync(CancellationToken cancellationToken);
}

/// <summary>Host-side resource facts about a sandbox, read from the host (never trusted from the guest).</summary>
public sealed record VmUsage(long OomKills, long? PeakMemoryBytes);

/// <summary>A running sandbox. Disposing it kills every process it has; calling it twice is safe.</summary>
public interface IVm : IAsyncDisposable
{
    string Id { get; }
    string TemplateName { get; }
    VmSource Source { get; }
    AgentClient Agent { get; }
    /// <summary>Time from the start request to the agent's hello.</summary>
    TimeSpan StartupTime { get; }
    /// <summary>Completes when the sandbox has died (or been disposed).</summary>
    Task Exited { get; }
    VmUsage ReadUsage();

    /// <summary>True while the sandbox is frozen (<see cref="FreezeAsync"/>): its code makes no progress and uses no CPU.</summary>
    bool IsFrozen => false;

    /// <summary>
    /// Stops every process of the sandbox where it is (qemu: QMP <c>stop</c>; gvisor: <c>runsc pause</c>;
    /// process: the cgroup freezer), so an idle sandbox costs no CPU. Idempotent and safe against
    /// concurrent calls with <see cref="ThawAsync"/>. Where the runtime cannot freeze it does nothing.
    /// </summary>
    Task FreezeAsync(CancellationToken cancellationToken) => Task.CompletedTask;

    /// <summary>
    /// Lets a frozen sandbox run again. Idempotent. A thaw that fails means the sandbox is lost: the
    /// caller ends it (as a dead pool member). The guest's clock stood still meanwhile in runtimes with
    /// their own kernel: the caller sets it again (reinit).
    /// </summary>
    Task ThawAsync(CancellationToken cancellationToken) => Task.CompletedTask;
}
