using System.Diagnostics;
using System.Security.Cryptography;
using System.Text.Json.Nodes;
using SandboxVM.Protocol;
using SandboxVM.Runtime.Process;

namespace SandboxVM.Runtime.Qemu;

// Restore and boot: a VM from its launch to an agent that has answered hello and reinit.
public sealed partial class QemuRuntime
{
    private Task<QemuVm> RestoreAsync(VmSpec spec, string snapshot, Stopwatch started, CancellationToken cancellationToken) =>
        IncomingAsync(spec, GuestMemoryKind.PrivateFile, Path.Combine(snapshot, MemFileName), Path.Combine(snapshot, StateFileName),
            MigrationCapabilities(), started, cancellationToken);

    /// <summary>
    /// Launches a QEMU waiting for migrate-incoming, attaches the host, loads <paramref name="stateFile"/>
    /// (device state, and the RAM too when it is not in <paramref name="memoryFile"/>), continues, hello + reinit.
    /// </summary>
    private async Task<QemuVm> IncomingAsync(VmSpec spec, GuestMemoryKind memory, string? memoryFile, string stateFile, JsonObject capabilities,
        Stopwatch started, CancellationToken cancellationToken)
    {
        QemuVm vm = await LaunchAsync(spec, VmSource.Restore, memory, memoryFile, incoming: true, cancellationToken);
        return await VmStartup.CompleteAsync(vm, $"restore of {spec.TemplateName} ({vm.Id})", _options.RestoreTimeout, _time, async ct =>
        {
            QmpClient qmp = vm.Qmp!;
            long launched = started.ElapsedMilliseconds;
            await qmp.ExecuteAsync("migrate-set-capabilities", capabilities, ct);
            using (var handle = File.OpenHandle(stateFile, FileMode.Open, FileAccess.Read))
            {
                await qmp.ExecuteWithFdAsync("getfd", new JsonObject { ["fdname"] = "state" }, handle, ct);
            }
            await qmp.ExecuteAsync("migrate-incoming", new JsonObject { ["uri"] = "fd:state" }, ct);
            // QEMU says when the state is loaded (MIGRATION "completed"); a failed load makes it exit,
            // which ends the QMP connection and this wait.
            await qmp.WaitForMigrationAsync(ct);
            long loaded = started.ElapsedMilliseconds;
            await qmp.ExecuteAsync("cont", null, ct);
            await HelloAndReinitAsync(vm, ct);
            vm.StartupTime = started.Elapsed;
            QemuLog.Restored(_logger, vm.Id, spec.TemplateName, started.ElapsedMilliseconds, launched, loaded);
        }, () => vm.Diagnostics, cancellationToken);
    }

    private async Task<QemuVm> BootAsync(VmSpec spec, Stopwatch started, GuestMemoryKind memory, string? memoryFile, CancellationToken cancellationToken)
    {
        QemuVm vm = await LaunchAsync(spec, VmSource.Boot, memory, memoryFile, incoming: false, cancellationToken);
        return await VmStartup.CompleteAsync(vm, $"boot of {spec.TemplateName} ({vm.Id})", _options.BootTimeout, _time, async ct =>
        {
            // Sequential here: a reinit queued while the guest boots would set a clock seconds old.
            await vm.Agent.HelloAsync(ct);
            await ReinitAsync(vm, _time, ct);
            vm.StartupTime = started.Elapsed;
            QemuLog.Started(_logger, vm.Id, spec.TemplateName, VmSource.Boot, started.ElapsedMilliseconds);
        }, () => vm.Diagnostics, cancellationToken);
    }

    /// <summary>
    /// Hello and reinit of a restored clone at once: the agent serves requests without waiting for
    /// hello, and the clone is already running, so the clock it is given is at most one round trip old
    /// while a round trip (tens of milliseconds under TCG) is saved.
    /// </summary>
    private Task HelloAndReinitAsync(QemuVm vm, CancellationToken cancellationToken) =>
        Task.WhenAll(vm.Agent.HelloAsync(cancellationToken), ReinitAsync(vm, _time, cancellationToken));

    /// <summary>Fresh identity for every VM, a clone above all: host clock, host entropy, its own id.</summary>
    private static Task ReinitAsync(QemuVm vm, TimeProvider time, CancellationToken cancellationToken) =>
        vm.Agent.ReinitAsync(new ReinitRequest
        {
            UnixTimeMs = time.GetUtcNow().ToUnixTimeMilliseconds(),
            Entropy = RandomNumberGenerator.GetBytes(64),
            SandboxId = vm.Id,
        }, cancellationToken);

    /// <summary>
    /// x-ignore-shared: the RAM stays in its file, only device state is saved; events: QEMU reports each
    /// migration state change (MIGRATION), which both ends wait on instead of polling query-migrate.
    /// </summary>
    private static JsonObject MigrationCapabilities() => new()
    {
        ["capabilities"] = new JsonArray(
            new JsonObject { ["capability"] = "x-ignore-shared", ["state"] = true },
            new JsonObject { ["capability"] = "events", ["state"] = true }),
    };
}
