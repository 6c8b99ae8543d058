using SandboxVM.Core.Runs;
using SandboxVM.Core.Sessions;

namespace SandboxVM.Core.Tests.Sessions;

/// <summary>Sandboxes belong to the caller that created them; each owner has its own cap (the server's is 2 here).</summary>
public sealed partial class SessionManagerTests
{
    private static readonly SandboxOwner Alice = new("alice", 1);
    private static readonly SandboxOwner Bob = new("bob", 1);

    private Task<SandboxSession> CreateForAsync(SandboxOwner owner) =>
        _sessions.CreateAsync(new CreateSandboxRequest { Template = "py" }, owner, Ct);

    [Fact]
    public async Task ASandbox_IsFoundOnlyForItsOwner_WithTheSame404ForOthers()
    {
        var s = await CreateForAsync(Alice);

        Assert.Equal("alice", s.Owner);
        Assert.Same(s, _sessions.Get(s.Id, "alice"));
        var other = Assert.Throws<RunRequestException>(() => _sessions.Get(s.Id, "bob"));
        var unknown = Assert.Throws<RunRequestException>(() => _sessions.Get("sbx_unknown", "bob"));
        Assert.Equal((RefusalKind.NotFound, ProblemCodes.SandboxNotFound), (other.Kind, other.Code));
        Assert.Equal(unknown.Message.Replace("sbx_unknown", s.Id, StringComparison.Ordinal), other.Message);
        Assert.Same(s, _sessions.FindByVm(s.Vm.Id));
    }

    [Fact]
    public async Task EachOwner_HasItsOwnCap_WithoutTakingAVm()
    {
        await CreateForAsync(Alice);

        var e = await Assert.ThrowsAsync<RunRequestException>(() => CreateForAsync(Alice));
        Assert.Equal((RefusalKind.Busy, ProblemCodes.TooManySandboxes), (e.Kind, e.Code));
        Assert.Contains("this API key", e.Message);
        Assert.NotNull(e.RetryAfter);
        Assert.Equal(1, _runtime.Started);
        await CreateForAsync(new SandboxOwner("carol", null)); // no cap of its own; the server's still counts
        Assert.Equal(RefusalKind.Busy, (await Assert.ThrowsAsync<RunRequestException>(() => CreateForAsync(Bob))).Kind);
    }

    [Fact]
    public async Task AnEndedSandbox_GivesItsOwnersPlaceBack_WhicheverWayItEnded()
    {
        var deleted = await CreateForAsync(Bob);
        Assert.True(await _sessions.DeleteAsync(deleted.Id));
        var died = await CreateForAsync(Bob);

        VmOf(died).Die();

        // The place comes back once the manager has seen the VM die.
        var deadline = DateTime.UtcNow + TimeSpan.FromSeconds(5);
        while (true)
        {
            try
            {
                await CreateForAsync(Bob);
                break;
            }
            catch (RunRequestException e) when (e.Kind == RefusalKind.Busy && DateTime.UtcNow < deadline)
            {
                await Task.Delay(10, Ct);
            }
        }
        Assert.Equal(SessionState.Ended, died.State);
    }

    [Fact]
    public async Task AFailedStart_GivesTheOwnersPlaceBack()
    {
        _runtime.FailStart = n => n == 1 ? new InvalidOperationException("no VM today") : null;

        var e = await Assert.ThrowsAsync<RunRequestException>(() => CreateForAsync(Bob));

        Assert.Equal(ProblemCodes.SandboxStartFailed, e.Code);
        await CreateForAsync(Bob);
    }
}
