using System.Diagnostics;
using System.Text.Json.Nodes;
using SandboxVM.Runtime.Process;

namespace SandboxVM.Runtime.Qemu;

// Pause, resume and fork of one running VM: its whole RAM and device state migrated into a file, and a
// new QEMU loading it. Unlike a template snapshot the RAM goes into the stream: a clone's RAM is a private
// copy-on-write mapping of the template's file, which holds the template's pages, not the clone's.
public sealed partial class QemuRuntime : ISandboxSaver
{
    /// <summary>The guest's stopped, so the migration's rate limit (QEMU's default 128 MiB/s) only makes the pause longer.</summary>
    private const long SaveBandwidthBytesPerSecond = 64L << 30;

    public async Task<SavedSandbox> SaveAsync(IVm vm, VmSpec spec, string directory, bool keepRunning, CancellationToken cancellationToken)
    {
        if (vm is not QemuVm qvm || !_live.ContainsKey(qvm.Id) || qvm.Qmp is not { } qmp)
        {
            throw new ArgumentException($"VM {vm.Id} is not a live VM of this qemu runtime", nameof(vm));
        }
        var clock = Stopwatch.StartNew();
        string state = Path.Combine(directory, StateFileName);
        using var timeout = StartDeadline(_options.SaveTimeout, cancellationToken);
        bool stopped = false, keptGoing = false;
        try
        {
            await qmp.ExecuteAsync("stop", null, timeout.Token);
            stopped = true;
            await qmp.ExecuteAsync("migrate-set-capabilities", WholeMachineCapabilities(), timeout.Token);
            await qmp.ExecuteAsync("migrate-set-parameters", new JsonObject { ["max-bandwidth"] = SaveBandwidthBytesPerSecond }, timeout.Token);
            using (var handle = File.OpenHandle(state, FileMode.CreateNew, FileAccess.Write))
            {
                await qmp.ExecuteWithFdAsync("getfd", new JsonObject { ["fdname"] = "state" }, handle, timeout.Token);
            }
            await qmp.ExecuteAsync("migrate", new JsonObject { ["uri"] = "fd:state" }, timeout.Token);
            await qmp.WaitForMigrationAsync(timeout.Token);
            keptGoing = true;
            if (keepRunning)
            {
                // From postmigrate: the source goes on as if nothing happened (its disk is read-only).
                await qmp.ContinueAfterMigrationAsync(timeout.Token);
            }
            else
            {
                // SIGKILL with the agent's socket still attached, as for a template (see the class remarks):
                // the saved guest never saw its host go. Not waited for: the image is complete, and the
                // caller's dispose waits for the exit (which took 1-3 s of a 1.3-3.6 s pause under load).
                HostNative.Kill(qvm.ProcessId, HostNative.SIGKILL);
            }
        }
        catch (Exception e) when (stopped && !qvm.Exited.IsCompleted && !keptGoing)
        {
            // A failed save (disk full, QEMU refused) keeps the sandbox: it goes on where it stopped.
            try
            {
                using var resume = StartDeadline(TimeSpan.FromSeconds(10), CancellationToken.None);
                await qmp.ExecuteAsync("cont", null, resume.Token);
            }
            catch (Exception again) when (again is not OutOfMemoryException)
            {
                QemuLog.CleanupFailed(_logger, qvm.Id, "cont after a failed save: " + again.Message);
            }
            throw new InvalidOperationException($"saving {qvm.Id} failed: {e.Message}", e);
        }
        long bytes = new FileInfo(state).Length;
        await File.WriteAllTextAsync(Path.Combine(directory, MetaFileName), new JsonObject
        {
            ["template"] = spec.TemplateName,
            ["qemu_version"] = Version.Text,
            ["accel"] = _policy.AccelName,
            ["memory_mib"] = spec.MemoryMib,
            ["state_bytes"] = bytes,
            ["save_ms"] = clock.ElapsedMilliseconds,
        }.ToJsonString(), CancellationToken.None);
        QemuLog.SandboxSaved(_logger, qvm.Id, spec.TemplateName, clock.ElapsedMilliseconds, bytes, keepRunning);
        return new SavedSandbox(directory, bytes, clock.Elapsed);
    }

    public async Task<IVm> RestoreSavedAsync(VmSpec spec, string directory, CancellationToken cancellationToken)
    {
        ValidateSpec(spec);
        string state = Path.Combine(directory, StateFileName);
        if (!File.Exists(state))
        {
            throw new SandboxStartException($"no saved sandbox in {directory}");
        }
        if (File.Exists(Path.Combine(directory, SeedMarkerName)) && await File.ReadAllTextAsync(Path.Combine(directory, SeedMarkerName), cancellationToken) is { } seed
            && IsCompleteSnapshot(seed) && IsSealed(Path.Combine(seed, MemFileName)))
        {
            // A fork: a clone of the seed, as of a template snapshot (its RAM file mapped private, copy-on-write).
            return await RestoreAsync(spec, seed, Stopwatch.StartNew(), cancellationToken);
        }
        // Anonymous RAM filled from the stream: the restored VM owns every page it had, nothing is shared.
        return await IncomingAsync(spec, GuestMemoryKind.Anonymous, null, state, WholeMachineCapabilities(), Stopwatch.StartNew(), cancellationToken);
    }

    /// <summary>
    /// Before a fork's restores: the saved stream is loaded once into a RAM file in the snapshot store (a
    /// "seed" VM that never runs user code: loaded, continued and stopped at once), whose device state is then
    /// saved as a template's is. Each fork is then a clone of it: its RAM file mapped private, so the forks
    /// share every page none of them has written, and each restore loads 70 KB instead of the whole stream.
    /// The seed's files are removed on dispose; running forks keep their mappings.
    /// </summary>
    public async Task<IAsyncDisposable> PrepareRestoresAsync(VmSpec spec, string directory, CancellationToken cancellationToken)
    {
        ValidateSpec(spec);
        if (!Capabilities.Snapshots)
        {
            return NoPreparation.Instance;
        }
        var clock = Stopwatch.StartNew();
        string seed = Path.Combine(_options.SnapshotDirectory, ForkSeedsDirName, Guid.NewGuid().ToString("N"));
        string mem = Path.Combine(seed, MemFileName);
        var preparation = new ForkSeed(seed, Path.Combine(directory, SeedMarkerName), this);
        try
        {
            Directory.CreateDirectory(seed);
            // Allocated in full, as a template's RAM file (see PrepareSnapshotAsync).
            using (File.OpenHandle(mem, FileMode.CreateNew, FileAccess.Write, FileShare.None, FileOptions.None, preallocationSize: (long)spec.MemoryMib << 20))
            {
            }
            long allocated = clock.ElapsedMilliseconds;
            QemuVm vm = await LaunchAsync(spec, VmSource.Restore, GuestMemoryKind.SharedFile, mem, incoming: true, cancellationToken);
            long launched = clock.ElapsedMilliseconds, loaded = 0;
            try
            {
                using var timeout = StartDeadline(_options.SaveTimeout, cancellationToken);
                QmpClient qmp = vm.Qmp!;
                await qmp.ExecuteAsync("migrate-set-capabilities", WholeMachineCapabilities(), timeout.Token);
                using (var handle = File.OpenHandle(Path.Combine(directory, StateFileName), FileMode.Open, FileAccess.Read))
                {
                    await qmp.ExecuteWithFdAsync("getfd", new JsonObject { ["fdname"] = "state" }, handle, timeout.Token);
                }
                await qmp.ExecuteAsync("migrate-incoming", new JsonObject { ["uri"] = "fd:state" }, timeout.Token);
                await qmp.WaitForMigrationAsync(timeout.Token);
                loaded = clock.ElapsedMilliseconds;
                // Continued and stopped again, as a template VM is before its save (its disk active again).
                await qmp.ExecuteAsync("cont", null, timeout.Token);
                await qmp.ExecuteAsync("stop", null, timeout.Token);
                await qmp.ExecuteAsync("migrate-set-capabilities", MigrationCapabilities(), timeout.Token);
                using (var handle = File.OpenHandle(Path.Combine(seed, StateFileName), FileMode.CreateNew, FileAccess.Write))
                {
                    await qmp.ExecuteWithFdAsync("getfd", new JsonObject { ["fdname"] = "seed" }, handle, timeout.Token);
                }
                await qmp.ExecuteAsync("migrate", new JsonObject { ["uri"] = "fd:seed" }, timeout.Token);
                await qmp.WaitForMigrationAsync(timeout.Token);
                // Stopped and saved: killed without waiting for the exit (as a pause; its dispose waits, off this path).
                HostNative.Kill(vm.ProcessId, HostNative.SIGKILL);
            }
            finally
            {
                _ = vm.DisposeAsync().AsTask();
            }
            Seal(mem);
            await File.WriteAllTextAsync(Path.Combine(seed, MetaFileName), new JsonObject { ["template"] = spec.TemplateName, ["fork_seed"] = true }.ToJsonString(), CancellationToken.None);
            await File.WriteAllTextAsync(Path.Combine(directory, SeedMarkerName), seed, CancellationToken.None);
            QemuLog.ForkSeedReady(_logger, spec.TemplateName, clock.ElapsedMilliseconds, allocated, launched, loaded);
            return preparation;
        }
        catch (Exception e) when (e is not OperationCanceledException || !cancellationToken.IsCancellationRequested)
        {
            // Not fatal: each fork loads the whole stream instead.
            await preparation.DisposeAsync();
            QemuLog.CleanupFailed(_logger, seed, "fork seed not made, the forks load the whole image: " + e.Message);
            return NoPreparation.Instance;
        }
    }

    private const string ForkSeedsDirName = "fork-seeds";
    private const string SeedMarkerName = "seed";

    /// <summary>A fork seed's files; removed on dispose (forks already started keep their mapping of the RAM file).</summary>
    private sealed class ForkSeed(string directory, string marker, QemuRuntime runtime) : IAsyncDisposable
    {
        public ValueTask DisposeAsync()
        {
            try
            {
                File.Delete(marker);
            }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException)
            {
                QemuLog.CleanupFailed(runtime._logger, marker, e.Message);
            }
            runtime.TryDeleteDirectory(directory);
            return ValueTask.CompletedTask;
        }
    }

    /// <summary>Everything in the stream (x-ignore-shared off: a clone inherited it on); state changes as events.</summary>
    private static JsonObject WholeMachineCapabilities() => new()
    {
        ["capabilities"] = new JsonArray(
            new JsonObject { ["capability"] = "x-ignore-shared", ["state"] = false },
            new JsonObject { ["capability"] = "events", ["state"] = true }),
    };
}
