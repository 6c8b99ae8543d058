using System.Collections.Concurrent;
using System.Diagnostics;
using System.Globalization;
using System.Security.Cryptography;
using System.Text;
using System.Text.Json.Nodes;
using Microsoft.Extensions.Logging;
using SandboxVM.Protocol;
using SandboxVM.Runtime.Cgroups;
using SandboxVM.Runtime.Process;
using SandboxVM.Runtime.Qemu;

namespace SandboxVM.Runtime.Gvisor;

/// <summary>
/// Runs each sandbox in gVisor (<c>runsc</c>): the application talks to the sentry, a kernel written in
/// Go that runs in user space on the host, never to the host kernel directly. The template's unpacked
/// rootfs is the container's read-only root (an OCI bundle per sandbox, <see cref="OciBundle"/>), the
/// agent its init, speaking the protocol over runsc's stdio. The whole sandbox (runsc, sentry, stub
/// processes, gofer) runs in a host cgroup that caps memory, tasks and CPU, joined before runsc starts.
/// <para>
/// Snapshots: <see cref="PrepareSnapshotAsync"/> starts the template, runs the warm-up through its agent
/// and <c>runsc checkpoint</c>s it into the snapshot store; <see cref="StartAsync"/> then
/// <c>runsc restore</c>s a new sandbox from that image. The agent's channel survives: gVisor saves the
/// init's stdio as host files and rebinds them on restore to the stdio of the restoring runsc, so the
/// host keeps the template's channel open while it is saved (the agent sits in a read that is restarted
/// after the restore) and speaks to the clone over the new runsc's pipes, with no reconnection protocol.
/// </para>
/// </summary>
public sealed partial class GvisorRuntime : IVmRuntime, IAsyncDisposable
{
    /// <summary>Container ids and cgroups are <c>gvisor-SERVERPID-HEX</c>: the cgroup sweep of a later server recognises a dead one's.</summary>
    internal const string IdPrefix = "gvisor";
    internal const string OwnerFileName = "owner";
    internal const string StateDirName = "state";
    internal const string ImageDirName = "image";
    internal const string SnapshotSubdirectory = "gvisor";
    private const string SnapshotPhase = "gvisor";
    // 2: uncompressed images (see Runsc.CheckpointArguments).
    private const int KeyFormatVersion = 2;

    private readonly GvisorRuntimeOptions _options;
    private readonly CgroupManager _cgroups;
    private readonly ILogger<GvisorRuntime> _logger;
    private readonly bool _useCgroups;
    private readonly string _runRoot;
    private readonly string _instanceDir;
    private readonly string _snapshotRoot;
    private readonly Runsc _runsc;
    private readonly ConcurrentDictionary<string, GvisorVm> _live = new();
    private readonly CachePhase _snapshotBuilds;
    private readonly Lazy<Task<string>> _version;
    private readonly Lock _setupLock = new();
    private bool _setUp;

    public GvisorRuntime(GvisorRuntimeOptions options, CgroupManager cgroups, ILogger<GvisorRuntime> logger)
    {
        _options = options;
        _cgroups = cgroups;
        _logger = logger;
        _useCgroups = cgroups.UsableFor("gvisor", options.RequireCgroups);
        if (!_useCgroups)
        {
            GvisorLog.NoCgroups(logger);
        }
        _runRoot = options.RunDirectory ?? (Environment.IsPrivilegedProcess
            ? "/run/sandboxvm/gvisor"
            : Path.Combine(Environment.GetEnvironmentVariable("XDG_RUNTIME_DIR") is { Length: > 0 } xdg ? xdg : Path.Combine(Path.GetTempPath(), "sandboxvm-" + Environment.UserName), "sandboxvm", "gvisor"));
        // One directory per runtime instance (a test process may hold several), named after its server's pid.
        _instanceDir = Path.Combine(_runRoot, $"{Environment.ProcessId.ToString(CultureInfo.InvariantCulture)}-{Guid.NewGuid().ToString("N")[..8]}");
        _snapshotRoot = Path.Combine(options.SnapshotDirectory, SnapshotSubdirectory);
        _runsc = new Runsc(options.RunscPath, Path.Combine(_instanceDir, StateDirName), options.Platform, rootless: !Environment.IsPrivilegedProcess);
        _version = new Lazy<Task<string>>(ReadVersionAsync);
        _snapshotBuilds = new CachePhase(Path.Combine(_snapshotRoot, ".locks"), null, logger);
        GvisorLog.Configured(logger, options.Platform, _instanceDir, _snapshotRoot, _useCgroups);
    }

    public string Name => "gvisor";

    /// <summary>
    /// No guest kernel image (the sentry is runsc itself), so no boot artifacts; the host clock and
    /// entropy reach every sandbox through the sentry, and a restored one gets a reinit anyway.
    /// </summary>
    public RuntimeCapabilities Capabilities { get; } = new(IsolationLevel.UserSpaceKernel, Snapshots: true, Networking: false, OwnKernel: false, ColdRestores: true);

    /// <summary>The runsc platform ("systrap", "kvm").</summary>
    public string Accel => _options.Platform;

    /// <summary>This instance's directory: runsc's state and one bundle per sandbox.</summary>
    public string InstanceDirectory => _instanceDir;

    public static bool IsAvailable(GvisorRuntimeOptions options) => File.Exists(options.RunscPath);

    public async Task<IVm> StartAsync(VmSpec spec, CancellationToken cancellationToken)
    {
        ValidateSpec(spec);
        var started = Stopwatch.StartNew();
        string key = await SnapshotKeyAsync(spec, cancellationToken);
        string snapshot = Path.Combine(_snapshotRoot, key);
        if (IsCompleteSnapshot(snapshot))
        {
            // Before the restore: a server sweeping stale snapshots sees this one in use.
            SnapshotStore.MarkUsed(snapshot);
            try
            {
                return await RestoreAsync(spec, snapshot, started, cancellationToken);
            }
            catch (SandboxStartException e) when (!cancellationToken.IsCancellationRequested)
            {
                // An image that does not restore (runsc changed under it, file damaged) must not take the
                // template down: start cold instead.
                GvisorLog.RestoreFailed(_logger, spec.TemplateName, key, e.Message);
            }
        }
        return await BootAsync(spec, started, cancellationToken);
    }

    private async Task<GvisorVm> BootAsync(VmSpec spec, Stopwatch started, CancellationToken cancellationToken)
    {
        GvisorVm vm = await LaunchAsync(spec, VmSource.Boot, imageDir: null, cancellationToken);
        return await VmStartup.CompleteAsync(vm, $"start of the gvisor sandbox for {spec.TemplateName} ({vm.Id})", _options.BootTimeout, TimeProvider.System, async ct =>
        {
            await vm.Agent.HelloAsync(ct);
            await ReinitAsync(vm, ct);
            vm.StartupTime = started.Elapsed;
            GvisorLog.Started(_logger, vm.Id, spec.TemplateName, VmSource.Boot, started.ElapsedMilliseconds);
        }, () => vm.Diagnostics, cancellationToken);
    }

    private async Task<GvisorVm> RestoreAsync(VmSpec spec, string snapshot, Stopwatch started, CancellationToken cancellationToken)
    {
        GvisorVm vm = await LaunchAsync(spec, VmSource.Restore, Path.Combine(snapshot, ImageDirName), cancellationToken);
        return await VmStartup.CompleteAsync(vm, $"restore of {spec.TemplateName} ({vm.Id})", _options.RestoreTimeout, TimeProvider.System, async ct =>
        {
            // The agent serves requests without waiting for hello: both at once save a round trip.
            await Task.WhenAll(vm.Agent.HelloAsync(ct), ReinitAsync(vm, ct));
            vm.StartupTime = started.Elapsed;
            GvisorLog.Started(_logger, vm.Id, spec.TemplateName, VmSource.Restore, started.ElapsedMilliseconds);
        }, () => vm.Diagnostics, cancellationToken);
    }

    /// <summary>
    /// Fresh identity for every sandbox, a clone above all. The sentry already reads the host's clock and
    /// randomness, so a clone's time and entropy are right without it; the reinit gives the agent its
    /// sandbox id and is the same round trip every runtime's start ends with.
    /// </summary>
    private static Task ReinitAsync(GvisorVm vm, CancellationToken cancellationToken) =>
        vm.Agent.ReinitAsync(new ReinitRequest
        {
            UnixTimeMs = DateTimeOffset.UtcNow.ToUnixTimeMilliseconds(),
            Entropy = RandomNumberGenerator.GetBytes(64),
            SandboxId = vm.Id,
        }, cancellationToken);

    /// <summary>Writes the bundle, creates the cgroup and starts <c>runsc run</c> (or <c>restore</c>) inside it.</summary>
    private async Task<GvisorVm> LaunchAsync(VmSpec spec, VmSource source, string? imageDir, CancellationToken cancellationToken)
    {
        EnsureInstanceDirectory();
        string id = CgroupManager.OwnedName(IdPrefix, Guid.NewGuid().ToString("N")[..12]);
        string bundle = Path.Combine(_instanceDir, id);
        Cgroup? cgroup = null;
        System.Diagnostics.Process? process = null;
        try
        {
            Directory.CreateDirectory(bundle);
            await File.WriteAllTextAsync(Path.Combine(bundle, OciBundle.ConfigFileName), BundleConfig(spec), cancellationToken);
            if (_useCgroups)
            {
                cgroup = _cgroups.Create(id, new CgroupLimits(
                    ((long)spec.MemoryMib + _options.MemoryOverheadMib) << 20, spec.MaxProcesses + _options.PidsHeadroom, spec.Vcpus));
            }
            var psi = CgroupLauncher.StartInfo(cgroup);
            psi.ArgumentList.Add(_runsc.Path);
            foreach (string arg in imageDir is null ? _runsc.RunArguments(bundle, id) : _runsc.RestoreArguments(bundle, imageDir, id))
            {
                psi.ArgumentList.Add(arg);
            }
            process = HostProcess.Start(psi);
        }
        catch (Exception e)
        {
            if (cgroup is not null)
            {
                await cgroup.DestroyAsync(CancellationToken.None);
            }
            TryDeleteDirectory(bundle);
            if (e is OperationCanceledException && cancellationToken.IsCancellationRequested)
            {
                throw;
            }
            throw new SandboxStartException($"runsc for {spec.TemplateName} did not start: {e.Message}", e);
        }
        var vm = new GvisorVm(id, spec.TemplateName, source, process, cgroup, bundle, ForgetAsync, _logger) { SetPaused = SetPausedAsync };
        _live[id] = vm;
        return vm;
    }

    /// <summary><c>runsc pause</c> or <c>resume</c> of one container; a non-zero exit is a failure (the VM is then treated as lost on thaw).</summary>
    private async Task SetPausedAsync(string id, bool pause, CancellationToken cancellationToken)
    {
        var (code, output) = await _runsc.RunAsync(_runsc.PauseArguments(id, pause), _options.CommandTimeout, cancellationToken);
        if (code != 0)
        {
            throw new InvalidOperationException($"runsc {(pause ? "pause" : "resume")} exited {code}: {output}");
        }
    }

    /// <summary>Lets runsc forget a container whose processes the cgroup has killed (or kills it, without a cgroup).</summary>
    private async Task ForgetAsync(string id)
    {
        try
        {
            var (code, output) = await _runsc.RunAsync(_runsc.DeleteArguments(id), _options.CommandTimeout, CancellationToken.None);
            if (code != 0 && !output.Contains("does not exist", StringComparison.OrdinalIgnoreCase))
            {
                GvisorLog.KillFailed(_logger, id, $"runsc delete exited {code}: {output}");
            }
        }
        finally
        {
            _live.TryRemove(id, out _);
        }
    }

    internal string BundleConfig(VmSpec spec) => OciBundle.Config(spec, _options.AgentPath, _options.Home);

    private void EnsureInstanceDirectory()
    {
        lock (_setupLock)
        {
            if (_setUp)
            {
                return;
            }
            Directory.CreateDirectory(Path.Combine(_instanceDir, StateDirName));
            File.WriteAllText(Path.Combine(_instanceDir, OwnerFileName), Environment.ProcessId.ToString(CultureInfo.InvariantCulture));
            _setUp = true;
        }
    }

    public async Task<SnapshotInfo?> PrepareSnapshotAsync(VmSpec spec, Func<Agent.AgentClient, CancellationToken, Task>? warmup, CancellationToken cancellationToken)
    {
        ValidateSpec(spec);
        var started = Stopwatch.StartNew();
        string key = await SnapshotKeyAsync(spec, cancellationToken);
        string final = Path.Combine(_snapshotRoot, key);
        if (IsCompleteSnapshot(final))
        {
            return new SnapshotInfo(key, final, Built: false, started.Elapsed);
        }
        long checkpointMs = 0, imageBytes = 0;
        // Locked per key across servers, built into KEY.tmp-RANDOM, renamed into place (the shared cache-phase step).
        bool built = await _snapshotBuilds.EnsureAsync(new CacheBuild(SnapshotPhase, key, final, spec.TemplateName, async build =>
        {
            string imageDir = Path.Combine(build, ImageDirName);
            Directory.CreateDirectory(imageDir);
            checkpointMs = await CheckpointAsync(spec, warmup, imageDir, started, cancellationToken);
            imageBytes = Directory.EnumerateFiles(imageDir).Sum(f => new FileInfo(f).Length);
            var meta = new JsonObject
            {
                ["key"] = key,
                ["template"] = spec.TemplateName,
                ["created"] = DateTimeOffset.UtcNow.ToString("O", CultureInfo.InvariantCulture),
                ["runtime"] = Name,
                ["platform"] = _options.Platform,
                ["runsc_version"] = await _version.Value,
                ["memory_mib"] = spec.MemoryMib,
                ["vcpus"] = spec.Vcpus,
                ["image_bytes"] = imageBytes,
                ["checkpoint_ms"] = checkpointMs,
                ["build_ms"] = started.ElapsedMilliseconds,
            };
            // meta.json last: its presence marks the snapshot complete.
            await File.WriteAllTextAsync(Path.Combine(build, MetaFileName), meta.ToJsonString(), cancellationToken);
            UsageStamp.Touch(Path.Combine(build, SnapshotStore.LastUsedFileName), DateTime.UtcNow);
        })
        { IsComplete = IsCompleteSnapshot }, null, cancellationToken);
        if (built)
        {
            GvisorLog.SnapshotSaved(_logger, key, spec.TemplateName, started.ElapsedMilliseconds, checkpointMs, imageBytes);
            RemoveStaleSnapshots(spec.TemplateName, key);
        }
        return new SnapshotInfo(key, final, Built: built, started.Elapsed);
    }

    /// <summary>Starts the template cold, warms it up and checkpoints it into <paramref name="imageDir"/>. Returns the checkpoint's milliseconds.</summary>
    private async Task<long> CheckpointAsync(VmSpec spec, Func<Agent.AgentClient, CancellationToken, Task>? warmup, string imageDir,
        Stopwatch started, CancellationToken cancellationToken)
    {
        GvisorVm vm = await BootAsync(spec, started, cancellationToken);
        try
        {
            if (warmup is not null)
            {
                await warmup(vm.Agent, cancellationToken);
            }
            // The host stays attached while the sandbox is saved: the agent is blocked reading its stdin,
            // a read the restore restarts on the new runsc's pipe. The checkpoint ends the sandbox.
            var clock = Stopwatch.StartNew();
            var (code, output) = await _runsc.RunAsync(_runsc.CheckpointArguments(imageDir, vm.Id), _options.CommandTimeout, cancellationToken);
            long ms = clock.ElapsedMilliseconds;
            if (code != 0)
            {
                throw new InvalidOperationException($"runsc checkpoint exited {code}: {output}");
            }
            if (!File.Exists(Path.Combine(imageDir, "checkpoint.img")))
            {
                throw new InvalidOperationException($"runsc checkpoint wrote no checkpoint.img: {output}");
            }
            await vm.WaitExitedAsync(_options.CommandTimeout);
            return ms;
        }
        catch (Exception e) when (e is not OperationCanceledException || !cancellationToken.IsCancellationRequested)
        {
            throw new SandboxStartException($"snapshot of {spec.TemplateName} failed: {e.Message}. {vm.Diagnostics}", e);
        }
        finally
        {
            await vm.DisposeAsync();
        }
    }

    internal const string MetaFileName = QemuRuntime.MetaFileName;

    private static bool IsCompleteSnapshot(string dir) =>
        File.Exists(Path.Combine(dir, MetaFileName)) && File.Exists(Path.Combine(dir, ImageDirName, "checkpoint.img"));

    /// <summary>True while the checkpoint image and its meta.json are in the store.</summary>
    public bool SnapshotExists(SnapshotInfo snapshot) => IsCompleteSnapshot(snapshot.Directory);

    /// <summary>
    /// Content key of a checkpoint: everything that shapes the saved sandbox (runsc build and platform,
    /// the bundle config, which names the rootfs, memory, limits and the agent's path, the identity of
    /// the rootfs and of the agent in it, the warm-up).
    /// </summary>
    public async Task<string> SnapshotKeyAsync(VmSpec spec, CancellationToken cancellationToken)
    {
        string version = await _version.Value.WaitAsync(cancellationToken);
        var text = new StringBuilder();
        void Line(string name, string? value) => text.Append(name).Append('=').Append(value).Append('\n');
        Line("format", KeyFormatVersion.ToString(CultureInfo.InvariantCulture));
        Line("template", spec.TemplateName);
        Line("runsc", _options.RunscPath);
        Line("runsc-version", version);
        Line("platform", _options.Platform);
        Line("config", BundleConfig(spec));
        Line("rootfs", Fingerprint(spec.RootfsDir));
        Line("agent", Fingerprint(Path.Combine(spec.RootfsDir, _options.AgentPath.TrimStart('/'))));
        Line("warmup", spec.WarmupKey);
        return Convert.ToHexStringLower(SHA256.HashData(Encoding.UTF8.GetBytes(text.ToString())))[..32];
    }

    private static string Fingerprint(string path)
    {
        ulong inode = HostNative.Stat(path)?.Inode ?? 0;
        var info = new FileInfo(path);
        long length = info.Exists ? info.Length : 0;
        return string.Create(CultureInfo.InvariantCulture, $"{Path.GetFullPath(path)}|{length}|{File.GetLastWriteTimeUtc(path).Ticks}|{inode}");
    }

    private async Task<string> ReadVersionAsync()
    {
        var (code, output) = await Runsc.RunCommandAsync(_options.RunscPath, ["--version"], _options.CommandTimeout, CancellationToken.None);
        if (code != 0)
        {
            throw new InvalidOperationException($"{_options.RunscPath} --version exited {code}: {output}");
        }
        return output.Split('\n')[0].Trim();
    }

    private static void ValidateSpec(VmSpec spec)
    {
        if (!Directory.Exists(spec.RootfsDir))
        {
            throw new DirectoryNotFoundException($"rootfs of template {spec.TemplateName} not found at {spec.RootfsDir}");
        }
    }

    /// <summary>
    /// Other checkpoints of the same template hold host memory (tmpfs) for nothing once nobody restores
    /// them: removed when not restored within the grace period. A restore reads its image whole when it
    /// starts, so a running sandbox never needs its image again.
    /// </summary>
    private void RemoveStaleSnapshots(string template, string keep) =>
        SnapshotStore.RemoveStale(_snapshotRoot, template, keep, DateTime.UtcNow, _options.SnapshotGracePeriod, () => new HashSet<string>(),
            dir => GvisorLog.SnapshotRemoved(_logger, Path.GetFileName(dir), template),
            (path, error) => GvisorLog.CleanupFailed(_logger, path, error));

    /// <summary>
    /// Ends what a dead server left: for every instance directory whose owner is gone, the cgroups of its
    /// sandboxes (SIGKILL to everything in them), runsc's state of each container, the directory; also
    /// unfinished checkpoint builds nobody holds the lock of. Instances of live servers (this one included) are
    /// left alone. Returns how many sandboxes it ended.
    /// </summary>
    public async Task<int> CleanupLeftoversAsync(CancellationToken cancellationToken)
    {
        int ended = 0;
        if (Directory.Exists(_runRoot))
        {
            foreach (string dir in Directory.GetDirectories(_runRoot))
            {
                if (dir == _instanceDir || QemuRuntime.OwnerAlive(dir))
                {
                    continue;
                }
                // Bundle directories are named after their containers (and cgroups).
                foreach (string bundle in Directory.GetDirectories(dir, IdPrefix + "-*"))
                {
                    string id = Path.GetFileName(bundle);
                    bool hadCgroup = await DestroyCgroupAsync(id, cancellationToken);
                    var leftover = new Runsc(_options.RunscPath, Path.Combine(dir, StateDirName), _options.Platform, rootless: !Environment.IsPrivilegedProcess);
                    var (code, _) = await leftover.RunAsync(leftover.DeleteArguments(id), _options.CommandTimeout, cancellationToken);
                    if (hadCgroup || code == 0)
                    {
                        ended++;
                        GvisorLog.LeftoverEnded(_logger, id);
                    }
                }
                TryDeleteDirectory(dir);
            }
        }
        await _snapshotBuilds.SweepAsync(SnapshotPhase, _snapshotRoot);
        return ended;
    }

    private async Task<bool> DestroyCgroupAsync(string id, CancellationToken cancellationToken)
    {
        if (!_useCgroups || _cgroups.OpenExisting(id) is not { } group)
        {
            return false;
        }
        await group.DestroyAsync(cancellationToken);
        return true;
    }

    /// <summary>Ends every sandbox this instance still has and removes its directory (runsc state, bundles).</summary>
    public async ValueTask DisposeAsync()
    {
        await Task.WhenAll(_live.Values.Select(async vm =>
        {
            await vm.DisposeAsync();
            // A sandbox ended earlier (or by another caller meanwhile) may still be with runsc delete.
            await vm.CleanedUp;
        }));
        TryDeleteDirectory(_instanceDir);
    }

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
            GvisorLog.CleanupFailed(_logger, dir, e.Message);
        }
    }
}
