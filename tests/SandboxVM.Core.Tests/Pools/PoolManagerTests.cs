using Microsoft.Extensions.Logging.Abstractions;
using Microsoft.Extensions.Time.Testing;
using SandboxVM.Core.Pools;
using SandboxVM.Core.Runs;
using SandboxVM.Core.Templates;
using SandboxVM.Runtime;
using SandboxVM.Testing;

namespace SandboxVM.Core.Tests.Pools;

/// <summary>
/// Pools on a fake clock: health-check timeouts, the freshness window, idle re-checks and the refill
/// backoff move only when a test advances it, so a slow host cannot time a healthy VM out.
/// </summary>
[Trait("tier", "unit")]
public class PoolManagerTests : IAsyncLifetime
{
    private static readonly TimeSpan CheckTimeout = TimeSpan.FromSeconds(2);
    private readonly FakeRuntime _runtime = new();
    private readonly FakeTimeProvider _time = new();
    private readonly VmTracker _tracker = new(NullLogger<VmTracker>.Instance);
    private PoolManager _pools = null!;
    private static CancellationToken Ct => TestContext.Current.CancellationToken;

    private sealed class Specs : IVmSpecProvider
    {
        public Task<VmSpec> GetSpecAsync(TemplateDefinition template, CancellationToken cancellationToken) =>
            Task.FromResult(new VmSpec { TemplateName = template.Name, RootfsDir = "/nonexistent" });
    }

    private static TemplateDefinition Template(string name, WarmupStrategy strategy, int size) => new()
    {
        Name = name,
        Source = new TemplateSource(),
        Language = new LanguageRecipe { Name = "x", SourceFile = "x", Run = ["x"] },
        Warmup = new WarmupPolicy { Strategy = strategy, PoolSize = size },
    };

    public ValueTask InitializeAsync()
    {
        _pools = Create(freshness: TimeSpan.Zero, recheck: TimeSpan.Zero);
        return ValueTask.CompletedTask;
    }

    /// <summary>A pool manager whose takes trust a check younger than <paramref name="freshness"/> and that re-checks waiting VMs every <paramref name="recheck"/> (zero: never).</summary>
    private PoolManager Create(TimeSpan freshness, TimeSpan recheck) => new(_runtime, new Specs(), _tracker, NullLogger<PoolManager>.Instance, _time)
    {
        MaxBackoff = TimeSpan.FromSeconds(1),
        HealthCheckTimeout = CheckTimeout,
        HealthCheckFreshness = freshness,
        IdleRecheckInterval = recheck,
        // The paths of a pool whose members keep running (frozen members: PoolDemandTests).
        FreezeWaiting = false,
    };

    private async Task UseAsync(PoolManager pools)
    {
        await _pools.DisposeAsync();
        _pools = pools;
    }

    private FakeVm[] StartedVms()
    {
        lock (_runtime.Vms)
        {
            return [.. _runtime.Vms];
        }
    }

    public async ValueTask DisposeAsync()
    {
        await _pools.DisposeAsync();
        await _tracker.DisposeAsync();
    }

    private Task WaitForReadyAsync(string template, int ready) =>
        Eventually.TrueAsync(() => _pools.Status(template)!.Ready == ready, () => $"pool of {template} has {_pools.Status(template)} and not {ready} ready");

    [Fact]
    public async Task A_snapshot_removed_underneath_is_prepared_again_and_the_pool_keeps_filling()
    {
        _runtime.MakesSnapshots = true;
        var t = Template("py", WarmupStrategy.Pool, 2);
        _pools.Start([t]);
        await WaitForReadyAsync("py", 2);
        Assert.Equal(1, _runtime.SnapshotsPrepared);

        // Cached while it is there: no second prepare for later refills.
        var lease = await _pools.AcquireAsync(t, Ct);
        _tracker.Release(lease.Vm);
        await WaitForReadyAsync("py", 2);
        Assert.Equal(1, _runtime.SnapshotsPrepared);

        _runtime.SnapshotPresent = false;
        var next = await _pools.AcquireAsync(t, Ct);
        Assert.Equal(VmSource.Pool, next.Source);
        _tracker.Release(next.Vm);
        await WaitForReadyAsync("py", 2);
        Assert.Equal(2, _runtime.SnapshotsPrepared);
        Assert.Null(_pools.Status("py")!.LastError);

        var info = await _pools.EnsureSnapshotAsync(t, Ct);
        Assert.Equal("/fake/snapshots/2", info!.Directory);
    }

    [Fact]
    public async Task Pool_FillsToItsTarget_AndRefillsAfterATake()
    {
        var t = Template("py", WarmupStrategy.Pool, 3);
        _pools.Start([t]);
        await WaitForReadyAsync("py", 3);

        // Freshness zero: the take checks the VM. On the real clock that check had 300 ms, which a
        // loaded host could miss: the healthy VM was discarded and one more started (5, not 4).
        var lease = await _pools.AcquireAsync(t, Ct);
        Assert.Equal(VmSource.Pool, lease.Source);
        await WaitForReadyAsync("py", 3);
        Assert.Equal(4, _runtime.Started);
        _tracker.Release(lease.Vm);
    }

    [Fact]
    public async Task ConcurrentTakes_NeverHandOneVmToTwoCallers()
    {
        var t = Template("py", WarmupStrategy.Pool, 4);
        _pools.Start([t]);
        await WaitForReadyAsync("py", 4);

        var leases = await Task.WhenAll(Enumerable.Range(0, 8).Select(_ => _pools.AcquireAsync(t, Ct)));
        Assert.Equal(8, leases.Select(l => l.Vm.Id).Distinct().Count());
        // At least the four that were ready; refills racing with the takes may serve more.
        Assert.InRange(leases.Count(l => l.Source == VmSource.Pool), 4, 8);
        foreach (var l in leases)
        {
            _tracker.Release(l.Vm);
        }
    }

    [Fact]
    public async Task DeadOrHungVm_IsDiscarded_AndReplaced()
    {
        var t = Template("py", WarmupStrategy.Pool, 2);
        _pools.Start([t]);
        await WaitForReadyAsync("py", 2);
        FakeVm first, second;
        lock (_runtime.Vms)
        {
            (first, second) = (_runtime.Vms[0], _runtime.Vms[1]);
        }
        first.Die();
        second.Hung = true;
        int asked = second.Requests;

        // The dead one is dropped without a word; the hung one holds the take until its check times out.
        Task<LeasedVm> take = _pools.AcquireAsync(t, Ct);
        await Eventually.TrueAsync(() => second.Requests > asked, () => "the take did not check the hung VM");
        Assert.False(take.IsCompleted);
        _time.Advance(CheckTimeout);
        var lease = await take;
        Assert.NotEqual(first.Id, lease.Vm.Id);
        Assert.NotEqual(second.Id, lease.Vm.Id);
        Assert.True(second.Disposed, "the hung VM was not ended");
        await WaitForReadyAsync("py", 2);
        _tracker.Release(lease.Vm);
    }

    [Fact]
    public async Task FreshlyCheckedVm_IsHandedOutWithoutARoundTrip()
    {
        await UseAsync(Create(freshness: TimeSpan.FromSeconds(30), recheck: TimeSpan.Zero));
        var t = Template("py", WarmupStrategy.Pool, 1);
        _pools.Start([t]);
        await WaitForReadyAsync("py", 1);
        FakeVm vm = StartedVms()[0];
        int before = vm.Requests;

        var lease = await _pools.AcquireAsync(t, Ct);
        Assert.Equal(VmSource.Pool, lease.Source);
        Assert.Equal(vm.Id, lease.Vm.Id);
        Assert.Equal(before, vm.Requests);
        _tracker.Release(lease.Vm);
    }

    [Fact]
    public async Task VmWaitingLongerThanTheFreshnessWindow_IsCheckedOnTake()
    {
        await UseAsync(Create(freshness: TimeSpan.FromSeconds(10), recheck: TimeSpan.Zero));
        var t = Template("py", WarmupStrategy.Pool, 1);
        _pools.Start([t]);
        await WaitForReadyAsync("py", 1);
        FakeVm vm = StartedVms()[0];
        int before = vm.Requests;
        _time.Advance(TimeSpan.FromSeconds(11));

        var lease = await _pools.AcquireAsync(t, Ct);
        Assert.Equal(vm.Id, lease.Vm.Id);
        Assert.Equal(before + 1, vm.Requests);
        _tracker.Release(lease.Vm);
    }

    [Fact]
    public async Task WaitingVms_AreRecheckedInTheBackground_AndAHungOneIsReplacedBeforeAnyTake()
    {
        var recheck = TimeSpan.FromSeconds(4);
        await UseAsync(Create(freshness: TimeSpan.FromSeconds(30), recheck: recheck));
        var t = Template("py", WarmupStrategy.Pool, 2);
        _pools.Start([t]);
        await WaitForReadyAsync("py", 2);
        // Both were checked at the same fake instant; the queue re-checks them in start order.
        var (healthy, hung) = (StartedVms()[0], StartedVms()[1]);
        var (before, hungBefore) = (healthy.Requests, hung.Requests);
        hung.Hung = true;

        _time.Advance(recheck);
        await Eventually.TrueAsync(() => healthy.Requests == before + 1 && hung.Requests == hungBefore + 1,
            () => $"re-checked: healthy {healthy.Requests - before}, hung {hung.Requests - hungBefore} times");
        Assert.False(hung.Disposed);

        // The hung one's check times out on the pool's clock; it is ended and replaced.
        _time.Advance(CheckTimeout);
        await Eventually.TrueAsync(() => hung.Disposed, () => "the hung VM was not ended");
        await WaitForReadyAsync("py", 2);
        Assert.Equal(3, _runtime.Started);

        // The healthy one is due again one interval after its last check, and passes again.
        _time.Advance(recheck - CheckTimeout);
        await Eventually.TrueAsync(() => healthy.Requests == before + 2, () => $"healthy re-checked {healthy.Requests - before} times");
        Assert.False(healthy.Disposed);

        // The pool never hands out the hung one, even right after its last good check.
        var lease = await _pools.AcquireAsync(t, Ct);
        Assert.NotEqual(hung.Id, lease.Vm.Id);
        _tracker.Release(lease.Vm);
    }

    [Fact]
    public async Task ColdTemplate_IsStartedOnDemand_AndNotPooled()
    {
        var t = Template("c", WarmupStrategy.Cold, 2);
        _pools.Start([t]);
        Assert.Null(_pools.Status("c"));
        var lease = await _pools.AcquireAsync(t, Ct);
        Assert.Equal(VmSource.Restore, lease.Source);
        Assert.Equal(1, _runtime.Started);
        _tracker.Release(lease.Vm);
    }

    [Fact]
    public async Task FailingStarts_AreRetried_AndReportedInTheStatus()
    {
        _runtime.FailStart = n => n <= 3 ? new InvalidOperationException("boom " + n) : null;
        var t = Template("py", WarmupStrategy.Pool, 1);
        _pools.Start([t]);
        await Eventually.TrueAsync(() => _pools.Status("py")!.LastError is not null, () => "the first start did not fail");
        Assert.Equal(1, _runtime.Started);

        // Each retry waits out its backoff on the pool's clock.
        await _time.AdvanceUntilAsync(TimeSpan.FromMilliseconds(250), () => _pools.Status("py")!.Ready == 1, () => $"pool has {_pools.Status("py")}");
        Assert.Null(_pools.Status("py")!.LastError);
        Assert.Equal(4, _runtime.Started);
    }

    [Fact]
    public async Task Dispose_EndsEveryPooledVm()
    {
        var t = Template("py", WarmupStrategy.Pool, 2);
        _pools.Start([t]);
        await WaitForReadyAsync("py", 2);
        await _pools.DisposeAsync();
        lock (_runtime.Vms)
        {
            Assert.All(_runtime.Vms, v => Assert.True(v.Disposed));
        }
    }
}
