using Microsoft.Extensions.Logging.Abstractions;
using Microsoft.Extensions.Time.Testing;
using SandboxVM.Core.Catalog;
using SandboxVM.Core.Pools;
using SandboxVM.Core.Runs;
using SandboxVM.Core.Sessions;
using SandboxVM.Core.Templates;
using SandboxVM.Core.Tests.Pools;
using SandboxVM.Images;
using SandboxVM.Runtime;
using SandboxVM.Testing;

namespace SandboxVM.Core.Tests.Sessions;

/// <summary>Sandbox lifecycle with fake VMs and injected time: creation, cap, keepalive, expiry, idle timeout, a dying VM.</summary>
[Trait("tier", "unit")]
public sealed partial class SessionManagerTests : IAsyncLifetime
{
    private readonly FakeRuntime _runtime = new();
    private readonly VmTracker _tracker = new(NullLogger<VmTracker>.Instance);
    private readonly FakeTimeProvider _time = new(new DateTimeOffset(2026, 11, 28, 12, 0, 0, TimeSpan.Zero));
    private readonly SandboxVmOptions _options = new() { MaxSandboxes = 2, SandboxTimeoutS = 600, SandboxIdleTimeoutS = 120, SandboxReapIntervalS = 3600 };
    private readonly string _cache = Path.Combine(Path.GetTempPath(), "sandboxvm-session-tests-" + Guid.NewGuid().ToString("N"));
    private PoolManager _pools = null!;
    private SessionManager _sessions = null!;

    private static CancellationToken Ct => TestContext.Current.CancellationToken;

    private sealed class Specs : IVmSpecProvider
    {
        public Task<VmSpec> GetSpecAsync(TemplateDefinition template, CancellationToken cancellationToken) =>
            Task.FromResult(new VmSpec { TemplateName = template.Name, RootfsDir = "/nonexistent" });
    }

    public ValueTask InitializeAsync()
    {
        var template = new TemplateDefinition
        {
            Name = "py",
            Source = new TemplateSource(),
            Language = new LanguageRecipe { Name = "python", SourceFile = "main.py", Run = ["python3", "main.py"] },
            Warmup = new WarmupPolicy { Strategy = WarmupStrategy.Cold },
        };
        var catalog = new TemplateCatalog(new TemplateRegistry([template]),
            new ImageBuilder(new ImageBuilderOptions { CacheRoot = _cache }, NullLogger<ImageBuilder>.Instance),
            _options, NullLogger<TemplateCatalog>.Instance);
        _pools = new PoolManager(_runtime, new Specs(), _tracker, NullLogger<PoolManager>.Instance);
        var runs = new RunService(catalog, _pools, _tracker, _options, NullLogger<RunService>.Instance);
        _sessions = new SessionManager(catalog, _pools, _tracker, runs, _options, _time, NullLogger<SessionManager>.Instance);
        return ValueTask.CompletedTask;
    }

    public async ValueTask DisposeAsync()
    {
        await _sessions.DisposeAsync();
        await _pools.DisposeAsync();
        await _tracker.DisposeAsync();
        if (Directory.Exists(_cache))
        {
            Directory.Delete(_cache, recursive: true);
        }
    }

    private Task<SandboxSession> CreateAsync(double? timeout = null, double? idle = null) =>
        _sessions.CreateAsync(new CreateSandboxRequest { Template = "py", TimeoutS = timeout, IdleTimeoutS = idle }, Ct);

    private FakeVm VmOf(SandboxSession s) => _runtime.Vms.Single(v => v.Id == s.Vm.Id);

    [Fact]
    public async Task Create_GivesALiveSandboxWithItsLifetime_ListedAndFoundById()
    {
        var s = await CreateAsync(timeout: 300, idle: 60);

        Assert.StartsWith("sbx_", s.Id);
        Assert.Equal(_time.GetUtcNow().AddSeconds(300), s.ExpiresAt);
        Assert.Same(s, _sessions.Get(s.Id));
        Assert.Equal([s.Id], _sessions.List().Select(x => x.Id));
    }

    [Fact]
    public async Task Get_UnknownId_Is404SandboxNotFound()
    {
        var e = Assert.Throws<RunRequestException>(() => _sessions.Get("sbx_nope"));
        Assert.Equal(RefusalKind.NotFound, e.Kind);
        Assert.Equal(ProblemCodes.SandboxNotFound, e.Code);
        await Task.CompletedTask;
    }

    [Fact]
    public async Task Create_PastTheCap_Is429_AndAfterADeleteThereIsRoomAgain()
    {
        var first = await CreateAsync();
        await CreateAsync();

        var e = await Assert.ThrowsAsync<RunRequestException>(() => CreateAsync());
        Assert.Equal(RefusalKind.Busy, e.Kind);
        Assert.Equal(ProblemCodes.TooManySandboxes, e.Code);
        Assert.Equal(2, _runtime.Started); // the refused one never took a VM

        Assert.True(await _sessions.DeleteAsync(first.Id));
        await CreateAsync();
    }

    [Fact]
    public async Task Delete_EndsTheVmAtOnce_AndTheIdIsGone()
    {
        var s = await CreateAsync();

        Assert.True(await _sessions.DeleteAsync(s.Id));

        Assert.True(VmOf(s).Disposed);
        Assert.Throws<RunRequestException>(() => _sessions.Get(s.Id));
        Assert.False(await _sessions.DeleteAsync(s.Id));
    }

    [Fact]
    public async Task Lifetime_WhenOver_EndsTheSandboxAndItsVm()
    {
        var s = await CreateAsync(timeout: 60, idle: 3600);

        _time.Advance(TimeSpan.FromSeconds(59));
        await _sessions.ReapAsync();
        Assert.Same(s, _sessions.Get(s.Id));

        _time.Advance(TimeSpan.FromSeconds(2));
        await _sessions.ReapAsync();
        Assert.Throws<RunRequestException>(() => _sessions.Get(s.Id));
        Assert.True(VmOf(s).Disposed);
        Assert.Equal("its lifetime ended", s.EndReason);
    }

    [Fact]
    public async Task IdleTimeout_EndsAnUntouchedSandbox_ButActivityKeepsItAlive()
    {
        var busy = await CreateAsync(timeout: 3600, idle: 30);
        var idle = await CreateAsync(timeout: 3600, idle: 30);

        _time.Advance(TimeSpan.FromSeconds(20));
        _sessions.KeepAlive(busy.Id, null);
        _time.Advance(TimeSpan.FromSeconds(20));
        await _sessions.ReapAsync();

        Assert.Same(busy, _sessions.Get(busy.Id));
        Assert.Throws<RunRequestException>(() => _sessions.Get(idle.Id));
        Assert.Equal("it was idle too long", idle.EndReason);
        Assert.True(VmOf(idle).Disposed);
        Assert.False(VmOf(busy).Disposed);
    }

    [Fact]
    public async Task KeepAlive_MovesTheEndOfTheLifetime()
    {
        var s = await CreateAsync(timeout: 60, idle: 3600);
        _time.Advance(TimeSpan.FromSeconds(50));

        _sessions.KeepAlive(s.Id, 120);
        _time.Advance(TimeSpan.FromSeconds(100));
        await _sessions.ReapAsync();

        Assert.Same(s, _sessions.Get(s.Id));
        Assert.Equal(_time.GetUtcNow().AddSeconds(20), s.ExpiresAt);
    }

    [Fact]
    public async Task KeepAlive_WithATimeoutOutOfRange_IsRefused()
    {
        var s = await CreateAsync();

        var e = Assert.Throws<RunRequestException>(() => _sessions.KeepAlive(s.Id, -1));
        Assert.Equal(ProblemCodes.TimeoutOutOfRange, e.Code);
    }

    [Fact]
    public async Task AVmThatDies_EndsItsSandbox()
    {
        var s = await CreateAsync();

        VmOf(s).Die();

        await Eventually.TrueAsync(() => s.State == SessionState.Ended, () => $"the sandbox is {s.State}, not ended");
        Assert.Throws<RunRequestException>(() => _sessions.Get(s.Id));
    }

    [Fact]
    public async Task Create_WithAnUnknownTemplate_IsRefusedWithoutTakingAVm()
    {
        var e = await Assert.ThrowsAsync<RunRequestException>(() =>
            _sessions.CreateAsync(new CreateSandboxRequest { Template = "nope" }, Ct));

        Assert.Equal(ProblemCodes.UnknownTemplate, e.Code);
        Assert.Equal(0, _runtime.Started);
    }

    [Fact]
    public async Task FifoLock_LetsWaitersInInArrivalOrder()
    {
        var gate = new FifoLock();
        IDisposable holder = await gate.AcquireAsync(Ct);
        // Five waiters arrive in order while the lock is held.
        var waiters = Enumerable.Range(0, 5).Select(_ => gate.AcquireAsync(Ct)).ToList();

        for (int i = 0; i < waiters.Count; i++)
        {
            Assert.All(waiters.Skip(i), w => Assert.False(w.IsCompleted));
            holder.Dispose();
            holder = await waiters[i].WaitAsync(TimeSpan.FromSeconds(5), Ct);
        }
        holder.Dispose();
        using var again = await gate.AcquireAsync(Ct).WaitAsync(TimeSpan.FromSeconds(5), Ct);
    }

    [Fact]
    public async Task FifoLock_ACancelledWaiterDoesNotBlockTheOnesBehindIt()
    {
        var gate = new FifoLock();
        var first = await gate.AcquireAsync(Ct);
        using var cancel = new CancellationTokenSource();
        var cancelled = gate.AcquireAsync(cancel.Token);
        var next = gate.AcquireAsync(Ct);

        await cancel.CancelAsync();
        await Assert.ThrowsAnyAsync<OperationCanceledException>(() => cancelled);
        first.Dispose();

        using var got = await next.WaitAsync(TimeSpan.FromSeconds(5), Ct);
    }
}
