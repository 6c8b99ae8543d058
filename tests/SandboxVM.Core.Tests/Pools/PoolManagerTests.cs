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
public class PoolManagerTests : PoolFixture
{
    private static readonly TimeSpan CheckTimeout = TimeSpan.FromSeconds(2);

    private static TemplateDefinition Template(string name, WarmupStrategy strategy, int size) =>
        Template(name, new WarmupPolicy { Strategy = strategy, PoolSize = size });

    protected override PoolManager CreatePools() => Create(freshness: TimeSpan.Zero, recheck: TimeSpan.Zero);

    /// <summary>
    /// A pool manager whose takes trust a check younger than <paramref name="freshness"/> and that re-checks waiting VMs
    /// every <paramref name="recheck"/> (zero: never), on <paramref name="clock"/> (default: the test's fake clock), with
    /// <paramref name="refillConcurrency"/> refills at once and <paramref name="refillHold"/> after a take.
    /// </summary>
    private PoolManager Create(TimeSpan freshness, TimeSpan recheck, TimeProvider? clock = null, int refillConcurrency = 1, TimeSpan refillHold = default) =>
        new(Runtime, Specs, Tracker, NullLogger<PoolManager>.Instance, clock ?? Time)
    {
        MaxBackoff = TimeSpan.FromSeconds(1),
        HealthCheckTimeout = CheckTimeout,
        HealthCheckFreshness = freshness,
        IdleRecheckInterval = recheck,
        // The paths of a pool whose members keep running (frozen members: PoolDemandTests).
        FreezeWaiting = false,
        // By default members start one after another, so the order they wait (and are re-checked) in is their start
        // order: with two refills at once a hung member could be queued first and hold up the other's check.
        RefillConcurrency = refillConcurrency,
        RefillHoldAfterTake = refillHold,
    };

    private FakeVm[] StartedVms()
    {
        lock (Runtime.Vms)
        {
            return [.. Runtime.Vms];
        }
    }

    private Task WaitForReadyAsync(string template, int ready) =>
        Eventually.TrueAsync(() => Pools.Status(template)!.Ready == ready, () => $"pool of {template} has {Pools.Status(template)} and not {ready} ready");

    [Fact]
    public async Task A_snapshot_removed_underneath_is_prepared_again_and_the_pool_keeps_filling()
    {
        Runtime.MakesSnapshots = true;
        var t = Template("py", WarmupStrategy.Pool, 2);
        Pools.Start([t]);
        await WaitForReadyAsync("py", 2);
        Assert.Equal(1, Runtime.SnapshotsPrepared);

        // Cached while it is there: no second prepare for later refills.
        var lease = await Pools.AcquireAsync(t, Ct);
        Tracker.Release(lease.Vm);
        await WaitForReadyAsync("py", 2);
        Assert.Equal(1, Runtime.SnapshotsPrepared);

        Runtime.SnapshotPresent = false;
        var next = await Pools.AcquireAsync(t, Ct);
        Assert.Equal(VmSource.Pool, next.Source);
        Tracker.Release(next.Vm);
        await WaitForReadyAsync("py", 2);
        Assert.Equal(2, Runtime.SnapshotsPrepared);
        Assert.Null(Pools.Status("py")!.LastError);

        var info = await Pools.EnsureSnapshotAsync(t, Ct);
        Assert.Equal("/fake/snapshots/2", info!.Directory);
    }

    [Fact]
    public async Task Pool_FillsToItsTarget_AndRefillsAfterATake()
    {
        var t = Template("py", WarmupStrategy.Pool, 3);
        Pools.Start([t]);
        await WaitForReadyAsync("py", 3);

        // Freshness zero: the take checks the VM. On the real clock that check had 300 ms, which a
        // loaded host could miss: the healthy VM was discarded and one more started (5, not 4).
        var lease = await Pools.AcquireAsync(t, Ct);
        Assert.Equal(VmSource.Pool, lease.Source);
        await WaitForReadyAsync("py", 3);
        Assert.Equal(4, Runtime.Started);
        Tracker.Release(lease.Vm);
    }

    [Fact]
    public async Task After_a_take_the_refill_waits_out_the_hold_while_clones_remain_and_starts_at_once_when_the_pool_is_empty()
    {
        var hold = TimeSpan.FromMilliseconds(250);
        var clock = new TimerWatch(Time);
        await UseAsync(Create(TimeSpan.Zero, TimeSpan.Zero, clock, refillHold: hold));
        var t = Template("py", WarmupStrategy.Pool, 2);
        Pools.Start([t]);
        await WaitForReadyAsync("py", 2);

        // One clone left: the refill loop waits out the hold (a timer of that length) and starts nothing meanwhile,
        // so the taker's first call does not share the CPU with a restore.
        var first = await Pools.AcquireAsync(t, Ct);
        Assert.Equal(VmSource.Pool, first.Source);
        await Eventually.TrueAsync(() => clock.Dues.Contains(hold), () => $"no {hold.TotalMilliseconds} ms wait; timers: {string.Join(", ", clock.Dues)}");
        Assert.Equal(2, Runtime.Started);
        Time.Advance(hold);
        await WaitForReadyAsync("py", 2);
        Assert.Equal(3, Runtime.Started);

        // A take that empties the pool refills at once: the clock does not move.
        var second = await Pools.AcquireAsync(t, Ct);
        var third = await Pools.AcquireAsync(t, Ct);
        Assert.Equal(VmSource.Pool, third.Source);
        await WaitForReadyAsync("py", 2);
        Assert.Equal(5, Runtime.Started);
        foreach (var lease in new[] { first, second, third })
        {
            Tracker.Release(lease.Vm);
        }
    }

    [Fact]
    public async Task While_a_refill_is_under_way_a_take_is_not_held_so_a_series_of_takes_keeps_every_refill_slot_busy()
    {
        var hold = TimeSpan.FromMilliseconds(250);
        Runtime.Clock = Time;
        await UseAsync(Create(TimeSpan.Zero, TimeSpan.Zero, refillConcurrency: 2, refillHold: hold));
        var t = Template("py", WarmupStrategy.Pool, 3);
        Pools.Start([t]);
        await WaitForReadyAsync("py", 3);

        // Restores take a second from here on: the first refill is still under way at the second take.
        Runtime.StartDelay = TimeSpan.FromSeconds(1);
        var first = await Pools.AcquireAsync(t, Ct);
        Time.Advance(hold);
        await Eventually.TrueAsync(() => Runtime.Pending == 1, () => $"{Runtime.Pending} restores under way, not 1");
        var second = await Pools.AcquireAsync(t, Ct);
        // One clone is left, and the clock stands still: only a take that is not held starts the second restore.
        await Eventually.TrueAsync(() => Runtime.Pending == 2, () => $"{Runtime.Pending} restores under way, not 2: the take was held");
        Time.Advance(TimeSpan.FromSeconds(1));
        await WaitForReadyAsync("py", 3);
        Tracker.Release(first.Vm);
        Tracker.Release(second.Vm);
    }

    /// <summary>The test's fake clock, recording the due time of every timer made on it.</summary>
    private sealed class TimerWatch(FakeTimeProvider inner) : TimeProvider
    {
        public System.Collections.Concurrent.ConcurrentQueue<TimeSpan> Dues { get; } = new();

        public override long GetTimestamp() => inner.GetTimestamp();

        public override long TimestampFrequency => inner.TimestampFrequency;

        public override DateTimeOffset GetUtcNow() => inner.GetUtcNow();

        public override ITimer CreateTimer(TimerCallback callback, object? state, TimeSpan dueTime, TimeSpan period)
        {
            Dues.Enqueue(dueTime);
            return inner.CreateTimer(callback, state, dueTime, period);
        }
    }

    [Fact]
    public async Task ConcurrentTakes_NeverHandOneVmToTwoCallers()
    {
        var t = Template("py", WarmupStrategy.Pool, 4);
        Pools.Start([t]);
        await WaitForReadyAsync("py", 4);

        var leases = await Task.WhenAll(Enumerable.Range(0, 8).Select(_ => Pools.AcquireAsync(t, Ct)));
        Assert.Equal(8, leases.Select(l => l.Vm.Id).Distinct().Count());
        // At least the four that were ready; refills racing with the takes may serve more.
        Assert.InRange(leases.Count(l => l.Source == VmSource.Pool), 4, 8);
        foreach (var l in leases)
        {
            Tracker.Release(l.Vm);
        }
    }

    [Fact]
    public async Task DeadOrHungVm_IsDiscarded_AndReplaced()
    {
        var t = Template("py", WarmupStrategy.Pool, 2);
        Pools.Start([t]);
        await WaitForReadyAsync("py", 2);
        FakeVm first, second;
        lock (Runtime.Vms)
        {
            (first, second) = (Runtime.Vms[0], Runtime.Vms[1]);
        }
        first.Die();
        second.Hung = true;
        int asked = second.Requests;

        // The dead one is dropped without a word; the hung one holds the take until its check times out.
        Task<LeasedVm> take = Pools.AcquireAsync(t, Ct);
        await Eventually.TrueAsync(() => second.Requests > asked, () => "the take did not check the hung VM");
        Assert.False(take.IsCompleted);
        Time.Advance(CheckTimeout);
        var lease = await take;
        Assert.NotEqual(first.Id, lease.Vm.Id);
        Assert.NotEqual(second.Id, lease.Vm.Id);
        Assert.True(second.Disposed, "the hung VM was not ended");
        await WaitForReadyAsync("py", 2);
        Tracker.Release(lease.Vm);
    }

    [Fact]
    public async Task FreshlyCheckedVm_IsHandedOutWithoutARoundTrip()
    {
        await UseAsync(Create(freshness: TimeSpan.FromSeconds(30), recheck: TimeSpan.Zero));
        var t = Template("py", WarmupStrategy.Pool, 1);
        Pools.Start([t]);
        await WaitForReadyAsync("py", 1);
        FakeVm vm = StartedVms()[0];
        int before = vm.Requests;

        var lease = await Pools.AcquireAsync(t, Ct);
        Assert.Equal(VmSource.Pool, lease.Source);
        Assert.Equal(vm.Id, lease.Vm.Id);
        Assert.Equal(before, vm.Requests);
        Tracker.Release(lease.Vm);
    }

    [Fact]
    public async Task VmWaitingLongerThanTheFreshnessWindow_IsCheckedOnTake()
    {
        await UseAsync(Create(freshness: TimeSpan.FromSeconds(10), recheck: TimeSpan.Zero));
        var t = Template("py", WarmupStrategy.Pool, 1);
        Pools.Start([t]);
        await WaitForReadyAsync("py", 1);
        FakeVm vm = StartedVms()[0];
        int before = vm.Requests;
        Time.Advance(TimeSpan.FromSeconds(11));

        var lease = await Pools.AcquireAsync(t, Ct);
        Assert.Equal(vm.Id, lease.Vm.Id);
        Assert.Equal(before + 1, vm.Requests);
        Tracker.Release(lease.Vm);
    }

    [Fact]
    public async Task WaitingVms_AreRecheckedInTheBackground_AndAHungOneIsReplacedBeforeAnyTake()
    {
        var recheck = TimeSpan.FromSeconds(4);
        await UseAsync(Create(freshness: TimeSpan.FromSeconds(30), recheck: recheck));
        var t = Template("py", WarmupStrategy.Pool, 2);
        Pools.Start([t]);
        await WaitForReadyAsync("py", 2);
        // Both were checked at the same fake instant; the queue re-checks them in start order.
        var (healthy, hung) = (StartedVms()[0], StartedVms()[1]);
        var (before, hungBefore) = (healthy.Requests, hung.Requests);
        hung.Hung = true;

        Time.Advance(recheck);
        await Eventually.TrueAsync(() => healthy.Requests == before + 1 && hung.Requests == hungBefore + 1,
            () => $"re-checked: healthy {healthy.Requests - before}, hung {hung.Requests - hungBefore} times");
        Assert.False(hung.Disposed);

        // The hung one's check times out on the pool's clock; it is ended and replaced.
        Time.Advance(CheckTimeout);
        await Eventually.TrueAsync(() => hung.Disposed, () => "the hung VM was not ended");
        await WaitForReadyAsync("py", 2);
        Assert.Equal(3, Runtime.Started);

        // The healthy one is due again one interval after its last check, and passes again.
        Time.Advance(recheck - CheckTimeout);
        await Eventually.TrueAsync(() => healthy.Requests == before + 2, () => $"healthy re-checked {healthy.Requests - before} times");
        Assert.False(healthy.Disposed);

        // The pool never hands out the hung one, even right after its last good check.
        var lease = await Pools.AcquireAsync(t, Ct);
        Assert.NotEqual(hung.Id, lease.Vm.Id);
        Tracker.Release(lease.Vm);
    }

    [Fact]
    public async Task ColdTemplate_IsStartedOnDemand_AndNotPooled()
    {
        var t = Template("c", WarmupStrategy.Cold, 2);
        Pools.Start([t]);
        Assert.Null(Pools.Status("c"));
        var lease = await Pools.AcquireAsync(t, Ct);
        Assert.Equal(VmSource.Restore, lease.Source);
        Assert.Equal(1, Runtime.Started);
        Tracker.Release(lease.Vm);
    }

    [Fact]
    public async Task FailingStarts_AreRetried_AndReportedInTheStatus()
    {
        Runtime.FailStart = n => n <= 3 ? new InvalidOperationException("boom " + n) : null;
        var t = Template("py", WarmupStrategy.Pool, 1);
        Pools.Start([t]);
        await Eventually.TrueAsync(() => Pools.Status("py")!.LastError is not null, () => "the first start did not fail");
        Assert.Equal(1, Runtime.Started);

        // Each retry waits out its backoff on the pool's clock.
        await Time.AdvanceUntilAsync(TimeSpan.FromMilliseconds(250), () => Pools.Status("py")!.Ready == 1, () => $"pool has {Pools.Status("py")}");
        Assert.Null(Pools.Status("py")!.LastError);
        Assert.Equal(4, Runtime.Started);
    }

    [Fact]
    public async Task Under_the_host_memory_floor_nothing_starts_until_memory_is_back()
    {
        long available = 300L << 20;
        await UseAsync(new PoolManager(Runtime, Specs, Tracker, NullLogger<PoolManager>.Instance, Time)
        {
            MaxBackoff = TimeSpan.FromSeconds(1),
            FreezeWaiting = false,
            MinHostMemoryBytes = 512L << 20,
            HostMemoryAvailable = () => Interlocked.Read(ref available),
        });
        var pooled = Template("py", WarmupStrategy.Pool, 2);
        var cold = Template("c", WarmupStrategy.Cold, 0);
        Pools.Start([pooled, cold]);
        await Eventually.TrueAsync(() => Pools.Status("py")!.LastError is not null, () => "the refill was not refused");
        Assert.Contains("300 MiB", Pools.Status("py")!.LastError, StringComparison.Ordinal);

        // A caller is refused with a code to retry on, for the pool's template and a cold one alike.
        foreach (var t in new[] { pooled, cold })
        {
            var refused = await Assert.ThrowsAsync<RunRequestException>(() => Pools.AcquireAsync(t, Ct));
            Assert.Equal(ProblemCodes.HostMemoryLow, refused.Code);
            Assert.Equal(RefusalKind.Unavailable, refused.Kind);
            Assert.NotNull(refused.RetryAfter);
        }
        Assert.Equal(0, Runtime.Started);

        Interlocked.Exchange(ref available, 8L << 30);
        await Time.AdvanceUntilAsync(TimeSpan.FromMilliseconds(250), () => Pools.Status("py")!.Ready == 2, () => $"pool has {Pools.Status("py")}");
        var lease = await Pools.AcquireAsync(cold, Ct);
        Tracker.Release(lease.Vm);
    }

    [Fact]
    public async Task Dispose_EndsEveryPooledVm()
    {
        var t = Template("py", WarmupStrategy.Pool, 2);
        Pools.Start([t]);
        await WaitForReadyAsync("py", 2);
        await Pools.DisposeAsync();
        lock (Runtime.Vms)
        {
            Assert.All(Runtime.Vms, v => Assert.True(v.Disposed));
        }
    }

    /// <summary>
    /// Where the runtime says a restored clone's first run pays for what it rebuilds lazily (TCG, gVisor),
    /// every clone runs the warm-up once more ("primed") before it is offered; elsewhere none does.
    /// </summary>
    [Theory]
    [InlineData(true, 2)]
    [InlineData(false, 0)]
    public async Task Restored_clones_are_primed_before_they_are_offered_only_where_restores_are_cold(bool cold, int primes)
    {
        var runtime = new FakeRuntime
        {
            Capabilities = new RuntimeCapabilities(IsolationLevel.UserSpaceKernel, Snapshots: true, Networking: false, OwnKernel: false, ColdRestores: cold),
            MakesSnapshots = true,
        };
        int primed = 0;
        await UseAsync(new PoolManager(runtime, Specs, Tracker, NullLogger<PoolManager>.Instance, Time)
        {
            FreezeWaiting = false,
            Warmup = (_, _, prime, _) =>
            {
                if (prime)
                {
                    Interlocked.Increment(ref primed);
                }
                return Task.CompletedTask;
            },
        });
        Pools.Start([Template("py", WarmupStrategy.Pool, 2)]);
        await WaitForReadyAsync("py", 2);
        Assert.Equal(primes, Volatile.Read(ref primed));
    }
}
