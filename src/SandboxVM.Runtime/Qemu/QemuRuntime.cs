using System.Collections.Concurrent;
using System.Diagnostics;
using Microsoft.Extensions.Logging;
using SandboxVM.Runtime.Cgroups;
using SandboxVM.Runtime.Process;

namespace SandboxVM.Runtime.Qemu;

/// <summary>
/// Runs each sandbox as a QEMU microvm: direct kernel boot, read-only ext4 root on virtio-blk, no
/// network device, the agent on a virtio-serial port whose host side is a unix socket. QEMU runs
/// under its seccomp filter, in a cgroup capping its memory, as its own unprivileged uid.
/// <para>
/// Snapshots: <see cref="PrepareSnapshotAsync"/> boots a template VM whose RAM is a shared file in the
/// snapshot store, warms it up, pauses it and saves the device state with x-ignore-shared (RAM stays
/// in the file). <see cref="StartAsync"/> then restores a clone: a new QEMU maps the same file private
/// (copy-on-write, the file is never written), loads the device state and continues.
/// </para>
/// <para>
/// The agent connection survives the snapshot: the host stays attached to the template's port while
/// it is saved and QEMU is SIGKILLed rather than quit (a detach, or QEMU's exit path, would write a
/// port-closed message into the guest RAM that is now the snapshot). A clone's host attaches before the
/// state is loaded, so the guest never sees a disconnect and answers at once, instead of noticing a
/// new connection only on its next poll (measured: ~90 ms less per restore under TCG).
/// </para>
/// <para>
/// One class in several files, one concern each: this one (construction, start), <c>.Snapshots</c>
/// (build, seal, key, stale removal), <c>.Start</c> (restore and boot), <c>.Launch</c> (run directory,
/// cgroup, uid and QEMU command line), <c>.Leftovers</c> (a dead server's VMs), and
/// <see cref="QemuHostPolicy"/> (accel and uid policy).
/// </para>
/// </summary>
public sealed partial class QemuRuntime : IVmRuntime
{
    internal const string SocketDirName = "s";
    internal const string AgentSocketName = "agent.sock";
    internal const string QmpSocketName = "qmp.sock";
    internal const string ConsoleSocketName = "console.sock";
    internal const string PidFileName = "pid";
    /// <summary>The pid of the server that started the VM: a later server ends the VM only once that one is gone.</summary>
    internal const string OwnerFileName = "owner";
    internal const string IdPrefix = "qemu-";
    internal const string MemFileName = "mem";
    internal const string StateFileName = "state";
    internal const string MetaFileName = "meta.json";
    private static readonly TimeSpan _qmpTimeout = TimeSpan.FromSeconds(10);

    private readonly QemuRuntimeOptions _options;
    private readonly CgroupManager _cgroups;
    private readonly ILogger<QemuRuntime> _logger;
    private readonly TimeProvider _time;
    private readonly QemuHostPolicy _policy;
    private readonly bool _useCgroups;
    private readonly string _runRoot;
    private readonly CachePhase _snapshotBuilds;
    private readonly ConcurrentDictionary<string, QemuVm> _live = new();

    /// <param name="options">Paths, limits and timeouts.</param>
    /// <param name="cgroups">Where each VM's cgroup is made.</param>
    /// <param name="logger">Receives the runtime's and its VMs' messages.</param>
    /// <param name="time">The clock of every wait (QMP socket, restore, save, quit, leftovers); the system's by default.</param>
    public QemuRuntime(QemuRuntimeOptions options, CgroupManager cgroups, ILogger<QemuRuntime> logger, TimeProvider? time = null)
    {
        _options = options;
        _cgroups = cgroups;
        _logger = logger;
        _time = time ?? TimeProvider.System;
        Version = QemuVersion.Read(options.QemuPath);
        _policy = QemuHostPolicy.Resolve(options, logger);
        Capabilities = new(IsolationLevel.Vm, Snapshots: Version.ReadOnlySnapshotMemory, Networking: false, OwnKernel: true,
            ColdRestores: _policy.Accel == QemuAccel.Tcg);
        if (!Version.ReadOnlySnapshotMemory)
        {
            QemuLog.SnapshotsOff(logger, Version.Text, QemuVersion.ReadOnlySnapshotMemorySince.ToString());
        }
        _useCgroups = cgroups.IsUsable;
        if (!_useCgroups)
        {
            if (options.RequireCgroups)
            {
                throw new InvalidOperationException(
                    $"the qemu runtime needs writable cgroups (found {cgroups.Version}); run as root or set RequireCgroups=false for development");
            }
            QemuLog.NoCgroups(logger);
        }
        _runRoot = options.RunDirectory ?? (Environment.IsPrivilegedProcess
            ? "/run/sandboxvm/qemu"
            : Path.Combine(Environment.GetEnvironmentVariable("XDG_RUNTIME_DIR") is { Length: > 0 } xdg ? xdg : Path.Combine(Path.GetTempPath(), "sandboxvm-" + Environment.UserName), "sandboxvm", "qemu"));
        // Locks beside the snapshots (a dot name: never taken for one), shared with every server using the store.
        _snapshotBuilds = new CachePhase(Path.Combine(options.SnapshotDirectory, ".locks"), null, logger);
        QemuLog.Configured(logger, Version.Text, _policy.AccelName, _policy.TscKhz, _runRoot, options.SnapshotDirectory, _useCgroups, _policy.DropPrivileges);
    }

    public string Name => "qemu";

    /// <summary>Snapshots only with a QEMU that maps their RAM read-only (<see cref="QemuVersion.ReadOnlySnapshotMemory"/>).</summary>
    public RuntimeCapabilities Capabilities { get; }

    /// <summary>The QEMU binary this runtime starts, as it reported itself when the runtime was created.</summary>
    public QemuVersion Version { get; }

    /// <summary>The accelerator every VM of this runtime uses.</summary>
    public QemuAccel Accel => _policy.Accel;

    /// <summary>"kvm" or "tcg", for reports.</summary>
    string? IVmRuntime.Accel => _policy.AccelName;

    /// <summary>Where this runtime keeps its per-VM directories.</summary>
    public string RunRoot => _runRoot;

    private string? Firmware => File.Exists(_options.Firmware) ? _options.Firmware : null;

    public static bool IsAvailable(QemuRuntimeOptions options) => File.Exists(options.QemuPath);

    public async Task<IVm> StartAsync(VmSpec spec, CancellationToken cancellationToken)
    {
        ValidateSpec(spec);
        var started = Stopwatch.StartNew();
        string key = SnapshotKey(spec);
        string snapshot = Path.Combine(_options.SnapshotDirectory, key);
        if (Capabilities.Snapshots && IsCompleteSnapshot(snapshot) && IsSealed(Path.Combine(snapshot, MemFileName)))
        {
            // Before the launch: a server of another build sharing the store sees the snapshot in use.
            SnapshotStore.MarkUsed(snapshot, _time);
            try
            {
                return await RestoreAsync(spec, snapshot, started, cancellationToken);
            }
            catch (SandboxStartException e) when (!cancellationToken.IsCancellationRequested)
            {
                // A snapshot that does not load (QEMU changed under it, file damaged) must not take the
                // template down: boot instead; the pool's next prepare rebuilds it if inputs changed.
                QemuLog.RestoreFailed(_logger, spec.TemplateName, key, e.Message);
            }
        }
        return await BootAsync(spec, started, GuestMemoryKind.Anonymous, null, cancellationToken);
    }

    private static void ValidateSpec(VmSpec spec)
    {
        Require(spec.KernelPath, "KernelPath");
        Require(spec.InitrdPath, "InitrdPath");
        Require(spec.RootfsImage, "RootfsImage");

        void Require(string? path, string name)
        {
            if (string.IsNullOrEmpty(path))
            {
                throw new ArgumentException($"the qemu runtime needs VmSpec.{name} (template {spec.TemplateName})", nameof(spec));
            }
            if (!File.Exists(path))
            {
                throw new FileNotFoundException($"{name} of template {spec.TemplateName} not found", path);
            }
        }
    }

    /// <summary>A token cancelled by <paramref name="cancellationToken"/> or after <paramref name="after"/> on this runtime's clock.</summary>
    private Deadline StartDeadline(TimeSpan after, CancellationToken cancellationToken) => new(after, _time, cancellationToken);

    private void TryDeleteDirectory(string dir)
    {
        try
        {
            if (Directory.Exists(dir))
            {
                Directory.Delete(dir, recursive: true);
            }
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            QemuLog.CleanupFailed(_logger, dir, e.Message);
        }
    }
}
