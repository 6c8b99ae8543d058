using SandboxVM.Core.Runs;
using SandboxVM.Protocol;

namespace SandboxVM.Core.Tests.Runs;

/// <summary>
/// A one-shot run whose VM's connection closes: before the guest started anything the run goes to another
/// VM (the code never ran), after a step started it is the caller's sandbox_error (running it again could
/// run it twice).
/// </summary>
[Trait("tier", "unit")]
public sealed class VmLostBeforeRunTests
{
    private static CancellationToken Ct => TestContext.Current.CancellationToken;

    [Fact]
    public async Task AConnectionClosedBeforeAnyStep_RunsTheCodeOnAnotherVm()
    {
        await using var host = new HostileHost();
        host.Hostile(1, agent => agent.Override(Ops.Exec, op =>
        {
            agent.Crash();
            return Task.CompletedTask;
        }));

        var result = await host.RunAsync(cancellationToken: Ct).WaitAsync(TimeSpan.FromSeconds(60), Ct);

        Assert.True(result.Status == RunStatus.Ok, $"{result.Status}: {result.Error}");
        Assert.Equal("hello\n", result.Stdout);
        Assert.Equal(2, host.Runtime.Vms.Count);
        await host.Vm(1).Exited.WaitAsync(TimeSpan.FromSeconds(30), Ct);
    }

    [Fact]
    public async Task AConnectionClosedAfterTheRunStarted_IsASandboxError_AndRunsNothingElsewhere()
    {
        await using var host = new HostileHost();
        host.Hostile(1, agent => agent.Override(Ops.Exec, async op =>
        {
            await op.EventAsync("run_started");
            agent.Crash();
        }));

        var result = await host.RunAsync(cancellationToken: Ct).WaitAsync(TimeSpan.FromSeconds(60), Ct);

        Assert.Equal(RunStatus.SandboxError, result.Status);
        Assert.Contains("its VM stopped", result.Error);
        Assert.Single(host.Runtime.Vms);
    }
}
