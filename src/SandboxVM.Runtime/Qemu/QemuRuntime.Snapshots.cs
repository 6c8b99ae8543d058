using System.Diagnostics;
using System.Globalization;
using System.Security.Cryptography;
using System.Text;
using System.Text.Json.Nodes;
using SandboxVM.Runtime.Process;

namespace SandboxVM.Runtime.Qemu;

// Snapshots: build (through the shared cache-phase step), seal, key, stale removal.
public sealed partial class QemuRuntime
{
    // 2: the RAM file is sealed read-only after the build; a snapshot of format 1 is group-writable and never restored.
    private const int KeyFormatVersion = 2;
    private const string SnapshotPhase = "qemu";

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
        long stateBytes = 0;
        // Locked per key across servers, built into KEY.tmp-RANDOM, renamed into place; a build a dead
        // server left behind is swept by the next build or leftover sweep.
        bool built = await _snapshotBuilds.EnsureAsync(new CacheBuild(SnapshotPhase, key, final, spec.TemplateName, async build =>
        {
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
            stateBytes = await BuildSnapshotAsync(spec, warmup, build, started, cancellationToken);
            Seal(mem);

            var meta = new JsonObject
            {
                ["key"] = key,
                ["template"] = spec.TemplateName,
                ["created"] = _time.GetUtcNow().ToString("O", CultureInfo.InvariantCulture),
                ["accel"] = _policy.AccelName,
                ["memory_mib"] = spec.MemoryMib,
                ["vcpus"] = spec.Vcpus,
                ["qemu_version"] = Version.Text,
                ["state_bytes"] = stateBytes,
                ["build_ms"] = started.ElapsedMilliseconds,
            };
            await File.WriteAllTextAsync(Path.Combine(build, MetaFileName), meta.ToJsonString(), cancellationToken);
            UsageStamp.Touch(Path.Combine(build, SnapshotStore.LastUsedFileName), _time.GetUtcNow().UtcDateTime);
        })
        { IsComplete = IsCompleteSnapshot }, null, cancellationToken);
        if (built)
        {
            QemuLog.SnapshotSaved(_logger, key, spec.TemplateName, started.ElapsedMilliseconds, stateBytes);
            RemoveStaleSnapshots(spec.TemplateName, key);
        }
        return new SnapshotInfo(key, final, Built: built, started.Elapsed);
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
            using var timeout = StartDeadline(_options.RestoreTimeout, cancellationToken);
            await qmp.ExecuteAsync("stop", null, timeout.Token);
            await qmp.ExecuteAsync("migrate-set-capabilities", MigrationCapabilities(), timeout.Token);
            string state = Path.Combine(build, StateFileName);
            using (var handle = File.OpenHandle(state, FileMode.CreateNew, FileAccess.Write))
            {
                await qmp.ExecuteWithFdAsync("getfd", new JsonObject { ["fdname"] = "state" }, handle, timeout.Token);
            }
            await qmp.ExecuteAsync("migrate", new JsonObject { ["uri"] = "fd:state" }, timeout.Token);
            await qmp.WaitForMigrationAsync(timeout.Token);
            // Not quit, and the agent socket stays open until QEMU is gone: see the class remarks.
            await vm.KillAsync();
            return new FileInfo(state).Length;
        }
        catch (Exception e) when (e is not OperationCanceledException || !cancellationToken.IsCancellationRequested)
        {
            throw new SandboxStartException($"snapshot of {spec.TemplateName} failed: {e.Message}. {vm.Diagnostics}", e);
        }
        finally
        {
            // The one disposal of the template VM, on every path.
            await vm.DisposeAsync();
        }
    }

    private static bool IsCompleteSnapshot(string dir) =>
        File.Exists(Path.Combine(dir, MetaFileName)) && File.Exists(Path.Combine(dir, StateFileName)) && File.Exists(Path.Combine(dir, MemFileName));

    /// <summary>True while the snapshot's files are all in the store (a tmpfs cleared, or a directory deleted by hand, is not).</summary>
    public bool SnapshotExists(SnapshotInfo snapshot) => IsCompleteSnapshot(snapshot.Directory);

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
        Line("accel", _policy.AccelName);
        if (Firmware is { } firmware)
        {
            // Only when one is passed: keys of hosts without it stay as they were.
            Line("firmware", Fingerprint(firmware));
        }
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

    /// <summary>
    /// Older snapshots of the same template hold host RAM (tmpfs) for nothing, but only once nobody
    /// uses them: another server (another build: other agent, other key) may share the store and restore
    /// from its own. Removed: those not restored within <see cref="QemuRuntimeOptions.SnapshotGracePeriod"/>
    /// that no live VM maps (see <see cref="SnapshotStore"/>). Unfinished builds are never touched here.
    /// Clones still running from a removed one keep their mapping of the deleted file.
    /// </summary>
    private void RemoveStaleSnapshots(string template, string keep) =>
        SnapshotStore.RemoveStale(_options.SnapshotDirectory, template, keep, _time.GetUtcNow().UtcDateTime, _options.SnapshotGracePeriod,
            () => SnapshotStore.Referenced(_options.SnapshotDirectory, _runRoot, runDir => _live.ContainsKey(Path.GetFileName(runDir)) || OwnerAlive(runDir)),
            dir => QemuLog.SnapshotRemoved(_logger, Path.GetFileName(dir), template),
            (path, error) => QemuLog.CleanupFailed(_logger, path, error));

    /// <summary>
    /// Hands a built snapshot's RAM file to the server, read-only to every VM: clones open it read-only
    /// (readonly=on,rom=off) and map it private, so a QEMU escape in one clone cannot change what the
    /// others start from. As root the VMs' group may read it; otherwise QEMU runs as the server's user.
    /// </summary>
    private void Seal(string mem)
    {
        if (_policy.DropPrivileges)
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

}
