using Microsoft.Extensions.Logging.Abstractions;
using Microsoft.Extensions.Time.Testing;
using SandboxVM.Core.Pools;
using SandboxVM.Core.Runs;
using SandboxVM.Core.Singletons;
using SandboxVM.Core.Templates;
using SandboxVM.Core.Tests.Pools;
using SandboxVM.Runtime;
using SandboxVM.Testing;

namespace SandboxVM.Core.Tests.Singletons;

/// <summary>
/// The one long-lived VM of a singleton template: shared, restarted when it dies or hangs, bounded queue.
/// The watchdog runs on a fake clock: a round happens when a test advances it by <see cref="Interval"/>.
/// </summary>
[Trait("tier", "unit")]
public sealed class SingletonManagerTests : IAsyncLifetime
{
    private static readonly TimeSpan Interval = TimeSpan.FromSeconds(5);
    private static readonly TimeSpan PingTimeout = TimeSpan.FromSeconds(3);
    private readonly FakeRuntime _runtime = new();
    private readonly FakeTimeProvider _time = new();
    private readonly VmTracker _tracker = new(NullLogger<VmTracker>.Instance);
    private readonly SandboxVmOptions _options = new() { SingletonConcurrency = 1, SingletonQueue = 1 };
    private PoolManager _pools = null!;
    private SingletonManager _singletons = null!;
    private static CancellationToken Ct => TestContext.Current.CancellationToken;

    private static readonly TemplateDefinition Web = new()
    {
        Name = "web",
        Source = new TemplateSource(),
        Language = new LanguageRecipe { Name = "python", SourceFile = "main.py", Run = ["python3", "main.py"] },
        Warmup = new WarmupPolicy { Strategy = WarmupStrategy.Singleton },
    };

    private sealed class Specs : IVmSpecProvider
    {
        public Task<VmSpec> GetSpecAsync(TemplateDefinition template, CancellationToken cancellationToken) =>
            Task.FromResult(new VmSpec { TemplateName = template.Name, RootfsDir = "/nonexistent" });
    }

    public ValueTask InitializeAsync()
    {
        _pools = new PoolManager(_runtime, new Specs(), _tracker, NullLogger<PoolManager>.Instance, _time);
        _singletons = new SingletonManager(_pools, _tracker, _options, NullLogger<SingletonManager>.Instance, _time)
        {
            HealthInterval = Interval,
            HealthTimeout = PingTimeout,
        };
        return ValueTask.CompletedTask;
    }

    public async ValueTask DisposeAsync()
    {
        await _singletons.DisposeAsync();
        await _pools.DisposeAsync();
        await _tracker.DisposeAsync();
    }

    private Task WaitForAsync(Func<bool> condition, string what) =>
        Eventually.TrueAsync(condition, () => $"{what}: {_singletons.Status("web")}");

    [Fact]
    public async Task Start_BootsOneVm_ThatEveryRequestShares()
    {
        _singletons.Start([Web], startNow: true);
        await WaitForAsync(() => _singletons.Status("web")!.State == "ready", "ready");

        string a = await _singletons.UseAsync(Web, (vm, _) => Task.FromResult(vm.Id), Ct);
        string b = await _singletons.UseAsync(Web, (vm, _) => Task.FromResult(vm.Id), Ct);

        Assert.Equal(a, b);
        Assert.Equal(1, _runtime.Started);
        Assert.Equal(0, _singletons.Status("web")!.Restarts);
    }

    [Fact]
    public async Task AVmThatDies_IsReplaced_AndTheRestartIsCounted()
    {
        _singletons.Start([Web], startNow: true);
        await WaitForAsync(() => _singletons.Status("web")!.State == "ready", "ready");

        _runtime.Vms[0].Die();
        _time.Advance(Interval);
        await WaitForAsync(() => _runtime.Started == 2 && _singletons.Status("web")!.State == "ready", "a second vm");

        Assert.Equal(1, _singletons.Status("web")!.Restarts);
        Assert.True(_runtime.Vms[0].Disposed);
        string id = await _singletons.UseAsync(Web, (vm, _) => Task.FromResult(vm.Id), Ct);
        Assert.Equal(_runtime.Vms[1].Id, id);
    }

    [Fact]
    public async Task AVmThatStopsAnswering_IsReplaced()
    {
        _singletons.Start([Web], startNow: true);
        await WaitForAsync(() => _singletons.Status("web")!.State == "ready", "ready");

        FakeVm hung = _runtime.Vms[0];
        int pings = hung.Requests;
        hung.Hung = true;

        _time.Advance(Interval);
        await WaitForAsync(() => hung.Requests == pings + 1, "the watchdog's ping");
        Assert.False(hung.Disposed);
        _time.Advance(PingTimeout);
        await WaitForAsync(() => _runtime.Started == 2 && _singletons.Status("web")!.State == "ready", "a second vm");
        Assert.True(hung.Disposed);
        Assert.Equal(1, _singletons.Status("web")!.Restarts);
    }

    [Fact]
    public async Task OnFirstUse_StartsTheVmOnlyWhenARequestComes()
    {
        // Start with startNow asks the pool for the VM before it returns; without, nothing does.
        _singletons.Start([Web], startNow: false);
        Assert.Equal(0, _runtime.Started);
        Assert.Equal("stopped", _singletons.Status("web")!.State);

        await _singletons.UseAsync(Web, (vm, _) => Task.FromResult(vm.Id), Ct);

        Assert.Equal(1, _runtime.Started);
    }

    [Fact]
    public async Task AFullQueue_Is429_NotAWait()
    {
        _singletons.Start([Web], startNow: true);
        var release = new TaskCompletionSource();
        // One running (concurrency 1), one waiting (queue 1): the third is refused.
        Task<int> running = _singletons.UseAsync(Web, async (_, _) => { await release.Task; return 1; }, Ct);
        await WaitForAsync(() => _singletons.Status("web")!.Running == 1, "the first request to run");
        Task<int> waiting = _singletons.UseAsync(Web, (_, _) => Task.FromResult(2), Ct);
        await WaitForAsync(() => _singletons.Status("web")!.Queued == 1, "the second request to queue");

        var e = await Assert.ThrowsAsync<RunRequestException>(() => _singletons.UseAsync(Web, (_, _) => Task.FromResult(3), Ct));

        Assert.Equal(RefusalKind.Busy, e.Kind);
        release.SetResult();
        Assert.Equal(1, await running);
        Assert.Equal(2, await waiting);
    }

    [Fact]
    public async Task ConcurrentWork_GetsDistinctSlots_EachWithARunUserOfItsOwn_AndFreedSlotsAreReused()
    {
        var options = new SandboxVmOptions { SingletonConcurrency = 3, SingletonQueue = 4 };
        await using var singletons = new SingletonManager(_pools, _tracker, options, NullLogger<SingletonManager>.Instance);
        singletons.Start([Web], startNow: false);
        var release = new TaskCompletionSource();
        var seen = new System.Collections.Concurrent.ConcurrentBag<SingletonSlot>();
        async Task<int> HoldAsync(IVm vm, SingletonSlot slot, CancellationToken ct)
        {
            seen.Add(slot);
            await release.Task;
            return slot.Index;
        }

        Task<int>[] running = [.. Enumerable.Range(0, 3).Select(_ => singletons.UseAsync(Web, HoldAsync, Ct))];
        await WaitForAsync(() => seen.Count == 3, "three to run at once");
        release.SetResult();
        await Task.WhenAll(running);
        var next = await singletons.UseAsync(Web, (_, slot, _) => Task.FromResult(slot), Ct);

        Assert.Equal([0, 1, 2], seen.Select(s => s.Index).Order());
        Assert.Equal([2000, 2001, 2002], seen.Select(s => s.RunUser!.Value).Order());
        Assert.InRange(next.Index, 0, 2);
        Assert.Equal(2000 + next.Index, next.RunUser);
    }

    [Fact]
    public async Task OnARuntimeWithoutUidsPerRun_WorkRunsOneAtATime_WithoutARunUser()
    {
        var runtime = new FakeRuntime { Capabilities = new RuntimeCapabilities(IsolationLevel.SharedKernel, false, false, false) };
        await using var pools = new PoolManager(runtime, new Specs(), _tracker, NullLogger<PoolManager>.Instance);
        var options = new SandboxVmOptions { SingletonConcurrency = 4, SingletonQueue = 4 };
        await using var singletons = new SingletonManager(pools, _tracker, options, NullLogger<SingletonManager>.Instance);
        singletons.Start([Web], startNow: false);
        var release = new TaskCompletionSource();

        Task<SingletonSlot> first = singletons.UseAsync(Web, async (_, slot, _) => { await release.Task; return slot; }, Ct);
        await WaitForAsync(() => singletons.Status("web")!.Running == 1, "the first to run");
        Task<SingletonSlot> second = singletons.UseAsync(Web, (_, slot, _) => Task.FromResult(slot), Ct);
        await WaitForAsync(() => singletons.Status("web")!.Queued == 1, "the second to wait");

        Assert.False(singletons.RunUsers);
        Assert.Equal(1, singletons.Concurrency);
        Assert.False(second.IsCompleted);
        release.SetResult();
        Assert.Equal(new SingletonSlot(0, null), await first);
        Assert.Equal(new SingletonSlot(0, null), await second);
    }
}
