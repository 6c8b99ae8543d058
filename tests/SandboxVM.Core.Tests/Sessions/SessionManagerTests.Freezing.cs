using SandboxVM.Core.Runs;
using SandboxVM.Core.Sessions;
using SandboxVM.Testing;

namespace SandboxVM.Core.Tests.Sessions;

/// <summary>Sandboxes frozen between calls: when the reaper freezes one, that every call thaws it first, keep_running.</summary>
public sealed partial class SessionManagerTests
{
    private List<string> EventsOf(SandboxSession s) =>
        [.. _runtime.Events.Where(e => e.StartsWith(s.Vm.Id + " ", StringComparison.Ordinal)).Select(e => e[(s.Vm.Id.Length + 1)..])];

    private async Task IdleForAsync(double seconds)
    {
        _time.Advance(TimeSpan.FromSeconds(seconds));
        await _sessions.ReapAsync();
    }

    [Fact]
    public async Task IdleSandbox_IsFrozen_AndACallThawsItFirst_ThenItIsFrozenAgain()
    {
        var s = await CreateAsync();
        await IdleForAsync(_options.SandboxFreezeAfterS);
        await Eventually.TrueAsync(() => s.Frozen, () => "the idle sandbox was not frozen");

        await _sessions.UseAsync(s.Id, "/tmp", (agent, _) => agent.PingAsync(Ct).ContinueWith(_ => 0, TaskScheduler.Default));

        Assert.False(s.Frozen);
        // The ping reached a running VM: thawed, its clock set (own kernel), then the call.
        Assert.Equal(["freeze", "thaw", "reinit", "ping"], EventsOf(s));
        await IdleForAsync(_options.SandboxFreezeAfterS);
        await Eventually.TrueAsync(() => s.Frozen, () => "the sandbox was not frozen again");
    }

    [Fact]
    public async Task SandboxWithACallInFlight_IsNotFrozen()
    {
        var s = await CreateAsync();
        VmOf(s).Hung = true;
        using var stop = new CancellationTokenSource();
        var call = _sessions.UseAsync(s.Id, "/tmp", (agent, _) => agent.PingAsync(stop.Token).ContinueWith(_ => 0, TaskScheduler.Default));

        await IdleForAsync(_options.SandboxFreezeAfterS * 5);

        Assert.False(s.Frozen);
        Assert.DoesNotContain("freeze", EventsOf(s));
        await stop.CancelAsync();
        await call;
    }

    [Fact]
    public async Task KeepRunningSandbox_IsNeverFrozen()
    {
        var s = await _sessions.CreateAsync(new CreateSandboxRequest { Template = "py", KeepRunning = true }, Ct);

        await IdleForAsync(_options.SandboxFreezeAfterS * 5);

        Assert.True(s.KeepRunning);
        Assert.False(s.Frozen);
        Assert.DoesNotContain("freeze", EventsOf(s));
    }

    [Fact]
    public async Task SandboxWhoseVmCannotBeThawed_Ends_AndTheCallIs404()
    {
        var s = await CreateAsync();
        await IdleForAsync(_options.SandboxFreezeAfterS);
        await Eventually.TrueAsync(() => s.Frozen, () => "the idle sandbox was not frozen");
        VmOf(s).FailThaw = true;

        var e = await Assert.ThrowsAsync<RunRequestException>(() =>
            _sessions.UseAsync(s.Id, "/tmp", (agent, _) => agent.PingAsync(Ct).ContinueWith(_ => 0, TaskScheduler.Default)));

        Assert.Equal(ProblemCodes.SandboxNotFound, e.Code);
        Assert.Equal(SessionState.Ended, s.State);
        Assert.True(VmOf(s).Disposed, "the lost VM was not ended");
        Assert.DoesNotContain("ping", EventsOf(s));
    }
}
