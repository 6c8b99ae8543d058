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
/// </summary>
public sealed class QemuRuntime : IVmRuntime
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
    private const string BuildPrefix = ".build-";
    // 2: the RAM file is sealed read-only after the build; a snapshot of format 1 is group-writable and never restored.
    private const int KeyFormatVersion = 2;
    private static readonly TimeSpan _qmpTimeout = TimeSpan.FromSeconds(10);

    private readonly QemuRuntimeOptions _options;
    private readonly CgroupManager _cgroups;
    private readonly ILogger<QemuRuntime> _logger;
    private readonly bool _useCgroups;
    private readonly bool _dropPrivileges;
    private readonly int? _kvmGroup;
    private readonly int? _tscKhz;
    private readonly string _runRoot;
    private readonly ConcurrentDictionary<string, QemuVm> _live = new();
    private readonly ConcurrentDictionary<string, SemaphoreSlim> _buildLocks = new();
    // Process-wide: another runtime instance in this process must not sweep a build in progress.
    private static readonly ConcurrentDictionary<string, byte> _building = new();

    public QemuRuntime(QemuRuntimeOptions options, CgroupManager cgroups, ILogger<QemuRuntime> logger)
    {
        _options = options;
        _cgroups = cgroups;
        _logger = logger;
        Version = QemuVersion.Read(options.QemuPath);
        Capabilities = new(IsolationLevel.Vm, Snapshots: Version.ReadOnlySnapshotMemory, Networking: false, OwnKernel: true);
        if (!Version.ReadOnlySnapshotMemory)
        {
            QemuLog.SnapshotsOff(logger, Version.Text, QemuVersion.ReadOnlySnapshotMemorySince.ToString());
        }
        Accel = options.Accel switch
        {
            "auto" => HostNative.KvmCanCreateVm() ? "kvm" : "tcg",
            "kvm" => HostNative.KvmCanCreateVm() ? "kvm" : throw new InvalidOperationException("accel kvm was requested but KVM_CREATE_VM fails on this host"),
            "tcg" => "tcg",
            _ => throw new ArgumentException($"unknown accel '{options.Accel}' (expected auto, kvm or tcg)", nameof(options)),
        };
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
        // A root server never runs QEMU as root: each VM gets its own uid, and what cannot work that way is an error.
        _dropPrivileges = Environment.IsPrivilegedProcess;
        if (_dropPrivileges && !File.Exists(options.SetprivPath))
        {
            throw new InvalidOperationException(
                $"the qemu runtime runs every QEMU as its own unprivileged uid with {options.SetprivPath}, which is missing (apt-get install util-linux)");
        }
        if (_dropPrivileges && Accel == "kvm")
        {
            // An unprivileged QEMU needs /dev/kvm through "other" or group bits (then it joins the group).
            var kvm = HostNative.Stat("/dev/kvm");
            if (kvm is { } k && (k.Mode & 0b110) != 0b110)
            {
                if ((k.Mode & 0b110_000) == 0b110_000)
                {
                    _kvmGroup = k.Gid;
                }
                else if (options.Accel == "kvm")
                {
                    throw new InvalidOperationException(
                        $"accel kvm was requested but /dev/kvm (mode {Convert.ToString(k.Mode & 0xfff, 8)}) only lets root in, and QEMU never runs as root: give it a group (chgrp kvm /dev/kvm; chmod 0660 /dev/kvm) or use accel tcg");
                }
                else
                {
                    QemuLog.KvmRootOnly(logger, Convert.ToString(k.Mode & 0xfff, 8));
                    Accel = "tcg";
                }
            }
        }
        _tscKhz = Accel == "tcg" ? options.TscKhz ?? HostTsc.Khz : null;
        if (Accel == "tcg" && _tscKhz is null)
        {
            QemuLog.NoTsc(logger);
        }
        _runRoot = options.RunDirectory ?? (Environment.IsPrivilegedProcess
            ? "/run/sandboxvm/qemu"
            : Path.Combine(Environment.GetEnvironmentVariable("XDG_RUNTIME_DIR") is { Length: > 0 } xdg ? xdg : Path.Combine(Path.GetTempPath(), "sandboxvm-" + Environment.UserName), "sandboxvm", "qemu"));
        QemuLog.Configured(logger, Version.Text, Accel, _tscKhz, _runRoot, options.SnapshotDirectory, _useCgroups, _dropPrivileges);
    }

    public string Name => "qemu";

    /// <summary>Snapshots only with a QEMU that maps their RAM read-only (<see cref="QemuVersion.ReadOnlySnapshotMemory"/>).</summary>
    public RuntimeCapabilities Capabilities { get; }

    /// <summary>The QEMU binary this runtime starts, as it reported itself when the runtime was created.</summary>
    public QemuVersion Version { get; }

    /// <summary>"kvm" or "tcg".</summary>
    public string Accel { get; }

    string? IVmRuntime.Accel => Accel;

    /// <summary>Where this runtime keeps its per-VM directories.</summary>
    public string RunRoot => _runRoot;

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
            SnapshotStore.MarkUsed(snapshot);
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

    public async Task<SnapshotInfo?> PrepareSnapshotAsync(VmSpec spec, Func<Agent.AgentClient, CancellationToken, Task>? warmup, CancellationToken cancellationToken)
    {
        ValidateSpec(spec);
        if (!Capabilities.Snapshots)
        {
            // Logged once at start-up; every VM boots cold.
            return null;
        }
        var started = Stopwatch.StartNew();
        string key = SnapshotKey(spec);
        string final = Path.Combine(_options.SnapshotDirectory, key);
        if (IsCompleteSnapshot(final))
        {
            return new SnapshotInfo(key, final, Built: false, started.Elapsed);
        }
        var gate = _buildLocks.GetOrAdd(key, _ => new SemaphoreSlim(1, 1));
        await gate.WaitAsync(cancellationToken);
        string? build = null;
        string buildName = $"{BuildPrefix}{key}-{Environment.ProcessId}-{Guid.NewGuid().ToString("N")[..8]}";
        try
        {
            if (IsCompleteSnapshot(final))
            {
                return new SnapshotInfo(key, final, Built: false, started.Elapsed);
            }
            Directory.CreateDirectory(_options.SnapshotDirectory);
            _building[buildName] = 0;
            build = Path.Combine(_options.SnapshotDirectory, buildName);
            Directory.CreateDirectory(build);
            string mem = Path.Combine(build, MemFileName);
            // Allocated in full (fallocate), not sparse: a clone touching a hole of its private mapping
            // would make tmpfs allocate the page in the snapshot file and then copy it, both charged to
            // the clone's cgroup (measured: a 512 MiB guest filling its RAM was OOM-killed at 800 MiB).
            // Allocated here, the RAM file is host memory once, and each clone pays only its own copies.
            using (File.OpenHandle(mem, FileMode.CreateNew, FileAccess.Write, FileShare.None, FileOptions.None, preallocationSize: (long)spec.MemoryMib << 20))
            {
            }

            // The template's QEMU writes the file as its owner while it runs (LaunchAsync); it is gone when this returns.
            long stateBytes = await BuildSnapshotAsync(spec, warmup, build, started, cancellationToken);
            Seal(mem);

            var meta = new JsonObject
            {
                ["key"] = key,
                ["template"] = spec.TemplateName,
                ["created"] = DateTimeOffset.UtcNow.ToString("O", CultureInfo.InvariantCulture),
                ["accel"] = Accel,
                ["memory_mib"] = spec.MemoryMib,
                ["vcpus"] = spec.Vcpus,
                ["qemu_version"] = Version.Text,
                ["state_bytes"] = stateBytes,
                ["build_ms"] = started.ElapsedMilliseconds,
            };
            await File.WriteAllTextAsync(Path.Combine(build, MetaFileName), meta.ToJsonString(), cancellationToken);
            UsageStamp.Touch(Path.Combine(build, SnapshotStore.LastUsedFileName), DateTime.UtcNow);
            try
            {
                Directory.Move(build, final);
                build = null;
            }
            catch (IOException) when (IsCompleteSnapshot(final))
            {
                // Another server published the same inputs first: theirs is as good as ours.
            }
            QemuLog.SnapshotSaved(_logger, key, spec.TemplateName, started.ElapsedMilliseconds, stateBytes);
            RemoveStaleSnapshots(spec.TemplateName, key);
            return new SnapshotInfo(key, final, Built: true, started.Elapsed);
        }
        finally
        {
            if (build is not null)
            {
                TryDeleteDirectory(build);
            }
            _building.TryRemove(buildName, out _);
            gate.Release();
        }
    }

    /// <summary>Boots the template VM, warms it up, saves its device state into <paramref name="build"/>. Returns the state size.</summary>
    private async Task<long> BuildSnapshotAsync(VmSpec spec, Func<Agent.AgentClient, CancellationToken, Task>? warmup, string build,
        Stopwatch started, CancellationToken cancellationToken)
    {
        QemuVm vm = await BootAsync(spec, started, GuestMemoryKind.SharedFile, Path.Combine(build, MemFileName), cancellationToken);
        try
        {
            if (warmup is not null)
            {
                await warmup(vm.Agent, cancellationToken);
            }
            QmpClient qmp = vm.Qmp!;
            // Saving takes a fraction of a second (RAM stays in the file); a QEMU stuck here must not hang the pool.
            using var timeout = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
            timeout.CancelAfter(_options.RestoreTimeout);
            await qmp.ExecuteAsync("stop", null, timeout.Token);
            await qmp.ExecuteAsync("migrate-set-capabilities", IgnoreSharedCapability(), timeout.Token);
            string state = Path.Combine(build, StateFileName);
            using (var handle = File.OpenHandle(state, FileMode.CreateNew, FileAccess.Write))
            {
                await qmp.ExecuteWithFdAsync("getfd", new JsonObject { ["fdname"] = "state" }, handle, timeout.Token);
            }
            await qmp.ExecuteAsync("migrate", new JsonObject { ["uri"] = "fd:state" }, timeout.Token);
            await WaitForMigrationAsync(qmp, timeout.Token);
            // Not quit, and the agent socket stays open until QEMU is gone: see the class remarks.
            await vm.KillAsync();
            return new FileInfo(state).Length;
        }
        catch (Exception e) when (e is not OperationCanceledException || !cancellationToken.IsCancellationRequested)
        {
            await vm.DisposeAsync();
            throw new SandboxStartException($"snapshot of {spec.TemplateName} failed: {e.Message}. {vm.Diagnostics}", e);
        }
        finally
        {
            await vm.DisposeAsync();
        }
    }

    private static async Task WaitForMigrationAsync(QmpClient qmp, CancellationToken cancellationToken)
    {
        while (true)
        {
            var info = await qmp.ExecuteAsync("query-migrate", null, cancellationToken) as JsonObject;
            string? status = info?["status"]?.GetValue<string>();
            switch (status)
            {
                case "completed":
                    return;
                case "failed" or "cancelled" or "cancelling":
                    throw new InvalidOperationException($"migration {status}: {info?["error-desc"]?.GetValue<string>() ?? "no reason given"}");
            }
            await Task.Delay(5, cancellationToken);
        }
    }

    private async Task<QemuVm> RestoreAsync(VmSpec spec, string snapshot, Stopwatch started, CancellationToken cancellationToken)
    {
        QemuVm vm = await LaunchAsync(spec, VmSource.Restore, GuestMemoryKind.PrivateFile, Path.Combine(snapshot, MemFileName), incoming: true, cancellationToken);
        try
        {
            using var timeout = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
            timeout.CancelAfter(_options.RestoreTimeout);
            QmpClient qmp = vm.Qmp!;
            long launched = started.ElapsedMilliseconds;
            await qmp.ExecuteAsync("migrate-set-capabilities", IgnoreSharedCapability(), timeout.Token);
            using (var handle = File.OpenHandle(Path.Combine(snapshot, StateFileName), FileMode.Open, FileAccess.Read))
            {
                await qmp.ExecuteWithFdAsync("getfd", new JsonObject { ["fdname"] = "state" }, handle, timeout.Token);
            }
            await qmp.ExecuteAsync("migrate-incoming", new JsonObject { ["uri"] = "fd:state" }, timeout.Token);
            while (true)
            {
                var status = (await qmp.ExecuteAsync("query-status", null, timeout.Token) as JsonObject)?["status"]?.GetValue<string>();
                if (status != "inmigrate")
                {
                    if (status is not ("paused" or "running"))
                    {
                        throw new InvalidOperationException($"restore ended in state {status}");
                    }
                    break;
                }
                // A failed load makes the destination QEMU exit; that ends the QMP connection and this loop.
                await Task.Delay(2, timeout.Token);
            }
            long loaded = started.ElapsedMilliseconds;
            await qmp.ExecuteAsync("cont", null, timeout.Token);
            await HelloAndReinitAsync(vm, timeout.Token);
            vm.StartupTime = started.Elapsed;
            QemuLog.Restored(_logger, vm.Id, spec.TemplateName, started.ElapsedMilliseconds, launched, loaded);
            return vm;
        }
        catch (Exception e)
        {
            await vm.DisposeAsync();
            if (cancellationToken.IsCancellationRequested)
            {
                throw;
            }
            throw new SandboxStartException($"restore of {spec.TemplateName} ({vm.Id}) failed: {e.Message}. {vm.Diagnostics}", e);
        }
    }

    private async Task<QemuVm> BootAsync(VmSpec spec, Stopwatch started, GuestMemoryKind memory, string? memoryFile, CancellationToken cancellationToken)
    {
        QemuVm vm = await LaunchAsync(spec, VmSource.Boot, memory, memoryFile, incoming: false, cancellationToken);
        try
        {
            using var timeout = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
            timeout.CancelAfter(_options.BootTimeout);
            // Sequential here: a reinit queued while the guest boots would set a clock seconds old.
            await vm.Agent.HelloAsync(timeout.Token);
            await ReinitAsync(vm, timeout.Token);
            vm.StartupTime = started.Elapsed;
            QemuLog.Started(_logger, vm.Id, spec.TemplateName, VmSource.Boot, started.ElapsedMilliseconds);
            return vm;
        }
        catch (Exception e)
        {
            await vm.DisposeAsync();
            if (cancellationToken.IsCancellationRequested)
            {
                throw;
            }
            throw new SandboxStartException($"boot of {spec.TemplateName} ({vm.Id}) failed: {e.Message}. {vm.Diagnostics}", e);
        }
    }

    /// <summary>
    /// Hello and reinit of a restored clone at once: the agent serves requests without waiting for
    /// hello, and the clone is already running, so the clock it is given is at most one round trip old
    /// while a round trip (tens of milliseconds under TCG) is saved.
    /// </summary>
    private static Task HelloAndReinitAsync(QemuVm vm, CancellationToken cancellationToken) =>
        Task.WhenAll(vm.Agent.HelloAsync(cancellationToken), ReinitAsync(vm, cancellationToken));

    /// <summary>Fresh identity for every VM, a clone above all: host clock, host entropy, its own id.</summary>
    private static Task ReinitAsync(QemuVm vm, CancellationToken cancellationToken) =>
        vm.Agent.ReinitAsync(new ReinitRequest
        {
            UnixTimeMs = DateTimeOffset.UtcNow.ToUnixTimeMilliseconds(),
            Entropy = RandomNumberGenerator.GetBytes(64),
            SandboxId = vm.Id,
        }, cancellationToken);

    private static JsonObject IgnoreSharedCapability() => new()
    {
        ["capabilities"] = new JsonArray(new JsonObject { ["capability"] = "x-ignore-shared", ["state"] = true }),
    };

    /// <summary>Starts QEMU in its run directory and cgroup and connects QMP, console and agent.</summary>
    private async Task<QemuVm> LaunchAsync(VmSpec spec, VmSource source, GuestMemoryKind memory, string? memoryFile, bool incoming, CancellationToken cancellationToken)
    {
        string id = IdPrefix + Guid.NewGuid().ToString("N")[..12];
        string runDir = Path.Combine(_runRoot, id);
        string sockets = Path.Combine(runDir, SocketDirName);
        int? uid = _dropPrivileges ? AllocateUid(spec.TemplateName) : null;
        Cgroup? cgroup = null;
        System.Diagnostics.Process? process = null;
        QemuVm? vm = null;
        try
        {
            // The run dir (pid file) stays the server's; QEMU may only write its socket dir, which no other VM's uid can enter.
            Directory.CreateDirectory(sockets);
            await File.WriteAllTextAsync(Path.Combine(runDir, OwnerFileName), Environment.ProcessId.ToString(CultureInfo.InvariantCulture), CancellationToken.None);
            if (memoryFile is not null)
            {
                // Which snapshot (or build) this VM maps: a server removing stale snapshots leaves it alone.
                await File.WriteAllTextAsync(Path.Combine(runDir, SnapshotStore.RunDirMemoryFileName), Path.GetFullPath(memoryFile), CancellationToken.None);
            }
            if (uid is { } u)
            {
                HostNative.Chown(sockets, u, _options.SandboxGid);
                SetMode(sockets, UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute);
                if (memory == GuestMemoryKind.SharedFile)
                {
                    // The template VM's RAM becomes the snapshot: only its own QEMU may write it while it
                    // is built, not every VM's group; Seal hands it back to the server read-only.
                    HostNative.Chown(memoryFile!, u, _options.SandboxGid);
                    SetMode(memoryFile!, UnixFileMode.UserRead | UnixFileMode.UserWrite);
                }
            }
            if (_useCgroups)
            {
                long overhead = _options.MemoryOverheadMib + (Accel == "tcg" ? _options.TcgTranslationBufferMib : 0);
                cgroup = _cgroups.Create(id, new CgroupLimits((spec.MemoryMib + overhead) << 20, _options.PidsLimit, spec.Vcpus + 1));
            }
            var launch = new QemuLaunchSpec
            {
                Name = id,
                Accel = Accel,
                MemoryMib = spec.MemoryMib,
                Vcpus = spec.Vcpus,
                KernelPath = spec.KernelPath!,
                InitrdPath = spec.InitrdPath!,
                RootfsImage = spec.RootfsImage!,
                KernelCmdline = KernelCmdline(spec),
                Memory = memory,
                MemoryFile = memoryFile,
                AgentSocket = Path.Combine(sockets, AgentSocketName),
                QmpSocket = Path.Combine(sockets, QmpSocketName),
                ConsoleSocket = Path.Combine(sockets, ConsoleSocketName),
                Incoming = incoming,
                Seccomp = _options.Seccomp,
                TcgTranslationBufferMib = _options.TcgTranslationBufferMib,
            };
            process = HostProcess.Start(BuildStartInfo(QemuCommandLine.Build(launch), Path.Combine(runDir, PidFileName), cgroup, uid));
            // process.StandardInput stays open as long as the VM: its end of file is the launch chain's
            // sign that this server is gone (CgroupLauncher, endWithServer).
            vm = new QemuVm(id, spec.TemplateName, source, process, cgroup, runDir, () => Release(id, uid), _options.QuitTimeout, _logger);
            _live[id] = vm;
            await vm.ConnectQmpAsync(_qmpTimeout, cancellationToken);
            await vm.ConnectConsoleAsync(cancellationToken);
            await vm.ConnectAgentAsync(cancellationToken);
            return vm;
        }
        catch (Exception e)
        {
            if (vm is not null)
            {
                await vm.DisposeAsync();
            }
            else
            {
                if (process is not null)
                {
                    HostNative.Kill(process.Id, HostNative.SIGKILL);
                    process.Dispose();
                }
                if (cgroup is not null)
                {
                    await cgroup.DestroyAsync(CancellationToken.None);
                }
                TryDeleteDirectory(runDir);
                Release(id, uid);
            }
            if (e is OperationCanceledException && cancellationToken.IsCancellationRequested)
            {
                throw;
            }
            throw new SandboxStartException($"qemu for {spec.TemplateName} did not start: {e.Message}. {vm?.Diagnostics}", e);
        }
    }

    private ProcessStartInfo BuildStartInfo(IReadOnlyList<string> qemuArgs, string pidFile, Cgroup? cgroup, int? uid)
    {
        var psi = CgroupLauncher.StartInfo(cgroup, pidFile, endWithServer: true);
        var a = psi.ArgumentList;
        if (uid is { } u)
        {
            a.Add(_options.SetprivPath);
            a.Add($"--reuid={u}");
            a.Add($"--regid={_options.SandboxGid}");
            a.Add(_kvmGroup is { } g ? $"--groups={g}" : "--clear-groups");
            a.Add("--no-new-privs");
            a.Add("--");
        }
        a.Add(_options.QemuPath);
        foreach (string arg in qemuArgs)
        {
            a.Add(arg);
        }
        return psi;
    }

    internal string KernelCmdline(VmSpec spec)
    {
        var parts = new List<string> { _options.KernelArgs };
        if (_tscKhz is { } khz)
        {
            // The rate, and tsc=reliable: without it the clocksource watchdog compares the TSC with
            // jiffies, whose ticks arrive late or bunched under TCG, calls the TSC unstable and switches
            // the guest to jiffies, whose rate then follows the host's load (measured 0.80-0.97 of real
            // time; a snapshot taken after the switch hands the jiffies clock to every clone). The TCG
            // guest TSC is the host's, so it is as stable as the host's (constant_tsc, HostTsc checks it).
            parts.Add($"tsc_early_khz={khz.ToString(CultureInfo.InvariantCulture)} tsc=reliable");
        }
        if (!string.IsNullOrWhiteSpace(spec.KernelArgs))
        {
            parts.Add(spec.KernelArgs);
        }
        return string.Join(' ', parts.Where(p => p.Length > 0));
    }

    /// <summary>
    /// Content key of a snapshot: everything that shapes the saved guest (QEMU build, accel, machine
    /// size, kernel command line, the identity of kernel, initrd and rootfs image, the warm-up).
    /// Files are identified by path, size, mtime and inode, not hashed (images are gigabytes and their
    /// builder already names them by content).
    /// </summary>
    public string SnapshotKey(VmSpec spec)
    {
        // The binary as it is now (an upgrade in place changes the key), read once per binary.
        string version = QemuVersion.Read(_options.QemuPath).Text;
        var text = new StringBuilder();
        void Line(string name, string? value) => text.Append(name).Append('=').Append(value).Append('\n');
        Line("format", KeyFormatVersion.ToString(CultureInfo.InvariantCulture));
        Line("template", spec.TemplateName);
        Line("qemu", _options.QemuPath);
        Line("qemu-version", version);
        Line("accel", Accel);
        Line("memory-mib", spec.MemoryMib.ToString(CultureInfo.InvariantCulture));
        Line("vcpus", spec.Vcpus.ToString(CultureInfo.InvariantCulture));
        Line("cmdline", KernelCmdline(spec));
        Line("kernel", Fingerprint(spec.KernelPath!));
        Line("initrd", Fingerprint(spec.InitrdPath!));
        Line("rootfs", Fingerprint(spec.RootfsImage!));
        Line("warmup", spec.WarmupKey);
        return Convert.ToHexStringLower(SHA256.HashData(Encoding.UTF8.GetBytes(text.ToString())))[..32];
    }

    private static string Fingerprint(string path)
    {
        var info = new FileInfo(path);
        ulong inode = HostNative.Stat(info.FullName)?.Inode ?? 0;
        return string.Create(CultureInfo.InvariantCulture, $"{info.FullName}|{info.Length}|{info.LastWriteTimeUtc.Ticks}|{inode}");
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

    private static bool IsCompleteSnapshot(string dir) =>
        File.Exists(Path.Combine(dir, MetaFileName)) && File.Exists(Path.Combine(dir, StateFileName)) && File.Exists(Path.Combine(dir, MemFileName));

    /// <summary>True while the snapshot's files are all in the store (a tmpfs cleared, or a directory deleted by hand, is not).</summary>
    public bool SnapshotExists(SnapshotInfo snapshot) => IsCompleteSnapshot(snapshot.Directory);

    /// <summary>
    /// Older snapshots of the same template hold host RAM (tmpfs) for nothing, but only once nobody
    /// uses them: another server (another build: other agent, other key) may share the store and restore
    /// from its own. Removed: those not restored within <see cref="QemuRuntimeOptions.SnapshotGracePeriod"/>
    /// that no live VM maps (see <see cref="SnapshotStore"/>). Unfinished builds are never touched here.
    /// Clones still running from a removed one keep their mapping of the deleted file.
    /// </summary>
    private void RemoveStaleSnapshots(string template, string keep)
    {
        try
        {
            var referenced = SnapshotStore.Referenced(_options.SnapshotDirectory, _runRoot,
                runDir => _live.ContainsKey(Path.GetFileName(runDir)) || OwnerAlive(runDir));
            foreach (string dir in SnapshotStore.SelectStale(_options.SnapshotDirectory, template, keep, DateTime.UtcNow, _options.SnapshotGracePeriod, referenced))
            {
                try
                {
                    Directory.Delete(dir, recursive: true);
                    QemuLog.SnapshotRemoved(_logger, Path.GetFileName(dir), template);
                }
                catch (Exception e) when (e is IOException or UnauthorizedAccessException)
                {
                    // Half gone or not ours to delete: leave it.
                    QemuLog.CleanupFailed(_logger, dir, e.Message);
                }
            }
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            QemuLog.CleanupFailed(_logger, _options.SnapshotDirectory, e.Message);
        }
    }

    internal static bool OwnerAlive(string runDir) => HostProcs.ReadPid(Path.Combine(runDir, OwnerFileName)) is int owner && HostProcs.IsAlive(owner);

    /// <summary>
    /// Ends what a dead server left: QEMU processes (only those whose command line names their run
    /// directory, so a recycled pid is never killed), their cgroups and run directories, and unfinished
    /// snapshot builds. VMs of a server that is still running (this one included) are left alone.
    /// </summary>
    public async Task<int> CleanupLeftoversAsync(CancellationToken cancellationToken)
    {
        int ended = 0;
        // Only run directories are walked, never every qemu-* cgroup: another server (or test) with
        // its own run directory may share the cgroup parent. Each VM's run dir is created before its
        // cgroup and removed after it, so a leftover cgroup always has one.
        if (Directory.Exists(_runRoot))
        {
            foreach (string dir in Directory.GetDirectories(_runRoot, IdPrefix + "*"))
            {
                string id = Path.GetFileName(dir);
                if (_live.ContainsKey(id) || OwnerAlive(dir))
                {
                    // Ours, or another live server's (this process's other runtimes count as live).
                    continue;
                }
                bool killed = false;
                if (HostProcs.ReadPid(Path.Combine(dir, PidFileName)) is int pid && IsOurQemu(pid, dir))
                {
                    HostNative.Kill(pid, HostNative.SIGKILL);
                    await WaitGoneAsync(pid, cancellationToken);
                    QemuLog.LeftoverEnded(_logger, id, pid);
                    killed = true;
                }
                bool hadCgroup = await DestroyCgroupAsync(id, cancellationToken);
                if (killed || hadCgroup)
                {
                    ended++;
                }
                TryDeleteDirectory(dir);
            }
        }
        if (Directory.Exists(_options.SnapshotDirectory))
        {
            foreach (string dir in Directory.GetDirectories(_options.SnapshotDirectory, BuildPrefix + "*"))
            {
                string name = Path.GetFileName(dir);
                var parts = name.Split('-');
                bool ownerAlive = parts.Length >= 3 && int.TryParse(parts[^2], CultureInfo.InvariantCulture, out int owner)
                    && owner != Environment.ProcessId && Directory.Exists($"/proc/{owner}");
                if (!_building.ContainsKey(name) && !ownerAlive)
                {
                    TryDeleteDirectory(dir);
                }
            }
        }
        return ended;
    }

    private static bool IsOurQemu(int pid, string runDir)
    {
        string? cmdline = HostProcs.CommandLine(pid);
        return cmdline is not null && cmdline.Contains(runDir + "/", StringComparison.Ordinal);
    }

    private static async Task WaitGoneAsync(int pid, CancellationToken cancellationToken)
    {
        var deadline = DateTime.UtcNow + TimeSpan.FromSeconds(5);
        // A zombie (our own child, not yet reaped) counts as gone.
        while (HostProcs.IsRunning(pid) && DateTime.UtcNow < deadline)
        {
            await Task.Delay(10, cancellationToken);
        }
    }

    private async Task<bool> DestroyCgroupAsync(string id, CancellationToken cancellationToken)
    {
        if (!_useCgroups)
        {
            return false;
        }
        Cgroup? group = OpenCgroup(id);
        if (group is null)
        {
            return false;
        }
        await group.DestroyAsync(cancellationToken);
        return true;
    }

    private Cgroup? OpenCgroup(string name)
    {
        string root = _options.CgroupRoot;
        return _cgroups.Version switch
        {
            CgroupVersion.V1 when CgroupV1.Controllers.Any(c => Directory.Exists(Path.Combine(root, c, Cgroup.ParentName, name)))
                => CgroupV1.Open(root, name),
            CgroupVersion.V2 when Directory.Exists(Path.Combine(root, Cgroup.ParentName, name)) => CgroupV2.Open(root, name),
            _ => null,
        };
    }

    private int AllocateUid(string template)
    {
        try
        {
            return HostUidPool.Allocate(_options.UidBase, _options.UidCount);
        }
        catch (InvalidOperationException e)
        {
            // Never a shared uid, never root: no VM starts without a uid of its own.
            throw new SandboxStartException(
                $"qemu for {template} did not start: {e.Message} ({_options.UidBase}..{_options.UidBase + _options.UidCount - 1})");
        }
    }

    private void Release(string id, int? uid)
    {
        _live.TryRemove(id, out _);
        if (uid is { } u)
        {
            HostUidPool.Release(u);
        }
    }

    /// <summary>
    /// Hands a built snapshot's RAM file to the server, read-only to every VM: clones open it read-only
    /// (readonly=on,rom=off) and map it private, so a QEMU escape in one clone cannot change what the
    /// others start from. As root the VMs' group may read it; otherwise QEMU runs as the server's user.
    /// </summary>
    private void Seal(string mem)
    {
        if (_dropPrivileges)
        {
            HostNative.Chown(mem, 0, _options.SandboxGid);
            SetMode(mem, UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.GroupRead);
        }
        else
        {
            SetMode(mem, UnixFileMode.UserRead | UnixFileMode.UserWrite);
        }
    }

    /// <summary>A RAM file is restored from only when it is the server's and neither its group nor others may write it.</summary>
    private bool IsSealed(string mem)
    {
        var file = HostNative.Stat(mem);
        if (file is { } f && f.Uid == HostNative.EffectiveUid() && (f.Mode & 0b010_010) == 0)
        {
            return true;
        }
        QemuLog.SnapshotNotSealed(_logger, mem, file is { } g ? $"owner {g.Uid}, mode {Convert.ToString(g.Mode & 0xfff, 8)}" : "gone");
        return false;
    }

    private static void SetMode(string path, UnixFileMode mode)
    {
        // The runtime is Linux-only (QEMU microvm, cgroups); the guard satisfies the platform analyzer.
        if (!OperatingSystem.IsWindows())
        {
            File.SetUnixFileMode(path, mode);
        }
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
            QemuLog.CleanupFailed(_logger, dir, e.Message);
        }
    }
}
