using Microsoft.Extensions.Logging.Abstractions;
using Microsoft.Extensions.Time.Testing;
using SandboxVM.Core.Pools;
using SandboxVM.Core.Runs;
using SandboxVM.Core.Templates;
using SandboxVM.Runtime;
using SandboxVM.Testing;

namespace SandboxVM.Core.Tests.Pools;

/// <summary>
/// Pools that follow demand and freeze their waiting members, on a fake clock: a start takes
/// <see cref="FakeRuntime.StartDelay"/> of it, so what runs at once and what the target becomes is
/// decided by the test advancing the clock, never by a sleep.
/// </summary>
[Trait("tier", "unit")]
public class PoolDemandTests : PoolFixture
{
    private static readonly TimeSpan Restore = TimeSpan.FromSeconds(2);
    private static readonly TimeSpan Window = TimeSpan.FromSeconds(10);

    private static TemplateDefinition Template(int min, int max, int? concurrency = null) =>
        Template("py", new WarmupPolicy { Strategy = WarmupStrategy.Pool, PoolMin = min, PoolMax = max, RefillConcurrency = concurrency });

    public override ValueTask InitializeAsync()
    {
        Runtime.Clock = Time;
        return base.InitializeAsync();
    }

    protected override PoolManager CreatePools() => new(Runtime, Specs, Tracker, NullLogger<PoolManager>.Instance, Time)
    {
        HealthCheckFreshness = TimeSpan.FromSeconds(30),
        IdleRecheckInterval = TimeSpan.Zero,
        DemandWindow = Window,
        BurstMemory = BurstMemory,
        RefillConcurrency = 2,
    };

    private static readonly TimeSpan BurstMemory = TimeSpan.FromSeconds(60);

    private PoolStatus Status => Pools.Status("py")!;

    [Theory]
    [InlineData(0.0, 2.0, 1)]    // no demand: the minimum
    [InlineData(0.5, 2.0, 3)]    // one arrival per restore: 1 + 2*1
    [InlineData(2.0, 2.0, 8)]    // four per restore: 4 + 2*2
    [InlineData(10.0, 2.0, 10)]  // far beyond: the maximum
    [InlineData(2.0, 0.0, 1)]    // no restore measured yet: the minimum
    public void Target_CoversTheArrivalsOfOneRestore_PlusTwoStandardDeviations(double rate, double restoreS, int expected) =>
        Assert.Equal(expected, PoolTarget.Compute(1, 10, rate, TimeSpan.FromSeconds(restoreS)));

    [Fact]
    public void FixedPool_KeepsItsSize_WhateverTheDemand() =>
        Assert.Equal(2, PoolTarget.Compute(2, 2, 50, TimeSpan.FromSeconds(3), shortfall: 10));

    [Fact]
    public void Shortfall_OfABurstAtOnce_IsItsSize() =>
        Assert.Equal(10, PoolTarget.Shortfall(Enumerable.Repeat(5.0, 10), startsPerSecond: 1), 6);

    [Fact]
    public void Shortfall_OfABackToBackSeries_IsWhatTheRefillsCouldNotRestoreMeanwhile()
    {
        // 20 arrivals 0.3 s apart (5.7 s), refills at 2 per 1.5 s: 20 - 5.7 * 4/3 = 12.4.
        var series = Enumerable.Range(0, 20).Select(i => 100 + 0.3 * i);
        Assert.Equal(12.4, PoolTarget.Shortfall(series, startsPerSecond: 2 / 1.5), 6);
    }

    [Fact]
    public void Shortfall_OfArrivalsSlowerThanTheRefills_IsOne() =>
        // One every 2 s against a start per second: each is covered before the next, only itself counts.
        Assert.Equal(1, PoolTarget.Shortfall(Enumerable.Range(0, 30).Select(i => 2.0 * i), startsPerSecond: 1), 6);

    [Fact]
    public void Shortfall_TakesTheWorstStretch_NotTheWholeWindow()
    {
        // Quiet, then 6 at once, then quiet again: the 6, not an average diluted by the quiet minutes.
        double[] times = [0, 60, 120, 180, 180, 180, 180, 180, 180, 240, 300];
        Assert.Equal(6, PoolTarget.Shortfall(times, startsPerSecond: 0.5), 6);
    }

    [Fact]
    public void WaitsForOnDemandStarts_AreTakenOutOfTheTime_OverlappingOnesOnce()
    {
        // Waits 1-2 and 1.5-3 (one stretch, 1-3), and 5-6: an arrival inside a wait counts from its start.
        double[] shifted = [.. PoolTarget.WithoutWaits([0, 1, 2.5, 3, 4, 7], [(1.5, 3), (1, 2), (5, 6)])];
        Assert.Equal([0, 1, 1, 1, 2, 4], shifted);
    }

    [Theory]
    [InlineData(0.1, 2.0, 10.0, 10)] // a burst of 10: its size, though the rate alone asks for 2
    [InlineData(0.1, 2.0, 12.4, 12)] // a series' 12.4: 13, at most the max
    [InlineData(2.0, 2.0, 1.0, 8)]   // a steady rate's own target when it is larger
    public void Target_CoversTheLargestRecentBurst(double rate, double restoreS, double shortfall, int expected) =>
        Assert.Equal(expected, PoolTarget.Compute(1, 12, rate, TimeSpan.FromSeconds(restoreS), shortfall));

    [Fact]
    public async Task ABurstBeyondThePool_RaisesTheTargetToItsSize_SoTheSameBurstAgainIsServedFromThePool_AndItIsForgottenAfterTheBurstMemory()
    {
        Runtime.StartDelay = Restore;
        var t = Template(2, 12, concurrency: 2);
        Pools.Start([t]);
        await Time.AdvanceUntilAsync(Restore, () => Status.Ready == 2 && Status.Frozen == 2, () => $"pool {Status}");
        Assert.Equal(2, Status.Target);

        // First burst of 10 on a fresh pool: 2 served ready, 8 restored for their callers, all at once.
        var first = await BurstAsync(t, 10, ready: 2);
        Assert.Equal((2, 8), (first.Count(l => l.Source == VmSource.Pool), first.Count(l => l.Source == VmSource.Restore)));
        // The rate over the window alone (10 in 10 s, restores of 2 s: m = 2) asks for 5; the burst asked for 10.
        Assert.Equal(10, Status.Target);
        await Time.AdvanceUntilAsync(Restore, () => Status.Ready == 10 && Status.Starting == 0, () => $"pool {Status}");
        // The refills ran at most the concurrency at once (no caller waited for them).
        Assert.True(Runtime.MaxPending <= 8 + 2, $"{Runtime.MaxPending} starts at once");

        // Past the rate's window (it alone would let the pool fall back to 2), the same burst again: every
        // caller gets a ready sandbox.
        Time.Advance(Window + TimeSpan.FromSeconds(1));
        Assert.Equal(10, Status.Target);
        var second = await BurstAsync(t, 10, ready: 10);
        Assert.All(second, l => Assert.Equal(VmSource.Pool, l.Source));
        Assert.Equal((12L, 8L), (Status.Hits, Status.Misses));

        // No arrival for the burst memory: back to the minimum, the surplus ended.
        await Time.AdvanceUntilAsync(TimeSpan.FromSeconds(5), () => Status.Target == 2 && Status.Ready == 2 && Status.Starting == 0,
            () => $"pool {Status}");
    }

    [Fact]
    public async Task ABackToBackSeriesTheRefillsCannotKeepUpWith_RaisesTheTarget_SoTheNextSeriesIsServedFromThePool()
    {
        Runtime.StartDelay = Restore;
        var t = Template(2, 12, concurrency: 2);
        Pools.Start([t]);
        await Time.AdvanceUntilAsync(Restore, () => Status.Ready == 2 && Status.Frozen == 2, () => $"pool {Status}");

        // 16 callers one after another, 0.25 s apart when served at once: faster than 2 refills per 2 s.
        var first = await SeriesAsync(t, 16);
        Assert.Contains(first, l => l.Source == VmSource.Restore);
        await Time.AdvanceUntilAsync(Restore, () => Status.Ready >= Status.Target && Status.Starting == 0, () => $"pool {Status}");
        Assert.InRange(Status.Target, 8, 12);

        Time.Advance(Window + TimeSpan.FromSeconds(1));
        int misses = (int)Status.Misses;
        var second = await SeriesAsync(t, Status.Target);
        Assert.All(second, l => Assert.Equal(VmSource.Pool, l.Source));
        Assert.Equal(misses, Status.Misses);
    }

    /// <summary>
    /// <paramref name="n"/> takes at once; the clock stands still until <paramref name="ready"/> of them have their
    /// pooled sandbox (a step while a take's thaw check is in flight would time it out on the fake clock), then is
    /// stepped until every one has its sandbox. The sandboxes are released.
    /// </summary>
    private async Task<LeasedVm[]> BurstAsync(TemplateDefinition t, int n, int ready)
    {
        var takes = Enumerable.Range(0, n).Select(_ => Pools.AcquireAsync(t, Ct)).ToList();
        await Eventually.TrueAsync(() => takes.Count(x => x.IsCompleted) >= ready, () => $"{takes.Count(x => x.IsCompleted)} of {n} served, pool {Status}");
        await Time.AdvanceUntilAsync(Restore, () => takes.All(x => x.IsCompleted), () => $"{takes.Count(x => x.IsCompleted)} of {n} served");
        var leases = await Task.WhenAll(takes);
        foreach (var lease in leases)
        {
            Tracker.Release(lease.Vm);
        }
        return leases;
    }

    /// <summary>
    /// <paramref name="n"/> takes one after another with 0.25 s of the clock after each (a short run). A take is
    /// left to finish on a still clock unless it missed (its sandbox is being started for it): then the clock is
    /// stepped until it has it.
    /// </summary>
    private async Task<List<LeasedVm>> SeriesAsync(TemplateDefinition t, int n)
    {
        var leases = new List<LeasedVm>();
        for (int i = 0; i < n; i++)
        {
            long misses = Status.Misses;
            var take = Pools.AcquireAsync(t, Ct);
            await Eventually.TrueAsync(() => take.IsCompleted || Status.Misses > misses, () => $"take {i}: pool {Status}");
            await Time.AdvanceUntilAsync(TimeSpan.FromMilliseconds(250), () => take.IsCompleted, () => $"take {i}: pool {Status}");
            var lease = await take;
            Tracker.Release(lease.Vm);
            leases.Add(lease);
            Time.Advance(TimeSpan.FromMilliseconds(250));
        }
        return leases;
    }

    [Fact]
    public async Task Target_RisesWithDemand_RefillsRunInParallelUpToTheConcurrency_AndFallsBackWhenDemandStops()
    {
        Runtime.StartDelay = Restore;
        var t = Template(1, 6, concurrency: 3);
        Pools.Start([t]);
        // The first refill waits for its restore on the fake clock.
        await Eventually.TrueAsync(() => Runtime.Pending == 1, () => $"{Runtime.Pending} starts pending");
        Time.Advance(Restore);
        await Eventually.TrueAsync(() => Status.Ready == 1, () => $"pool {Status}");
        Assert.Equal(1, Status.Target);

        // A burst of 12 requests within the window: rate 1.2/s, restore 2 s, so 2.4 arrivals per restore:
        // 2.4 + 2*sqrt(2.4) = 5.5, target 6 (the max).
        var takes = Enumerable.Range(0, 12).Select(_ => Pools.AcquireAsync(t, Ct)).ToList();
        await Eventually.TrueAsync(() => Status.Target == 6 && Status.Hits + Status.Misses == 12, () => $"pool {Status}");
        // The refills in flight stop at the concurrency, whatever the target: 11 misses + 3 refills.
        await Eventually.TrueAsync(() => Runtime.Pending == 11 + 3, () => $"{Runtime.Pending} starts pending");
        Assert.Equal(1, Status.Hits);
        Assert.Equal(11, Status.Misses);
        Assert.Equal(3, Status.Starting);

        await Time.AdvanceUntilAsync(Restore, () => Status.Ready == 6, () => $"pool {Status}");
        Assert.True(Runtime.MaxPending <= 11 + 3, $"{Runtime.MaxPending} starts at once");
        await Time.AdvanceUntilAsync(Restore, () => takes.All(x => x.IsCompleted), () => $"{takes.Count(x => x.IsCompleted)} of 12 served");
        foreach (var lease in await Task.WhenAll(takes))
        {
            Tracker.Release(lease.Vm);
        }

        // No arrival for a window: back to the minimum, the surplus ended.
        await Time.AdvanceUntilAsync(TimeSpan.FromSeconds(1), () => Status.Target == 1 && Status.Ready == 1, () => $"pool {Status}");
    }

    [Fact]
    public async Task Burst_BeyondThePool_StartsEveryMissingRestoreAtOnce()
    {
        Runtime.StartDelay = Restore;
        var t = Template(2, 2, concurrency: 1);
        Pools.Start([t]);
        // Settled: both admitted and frozen (a member still being frozen is not offered to a take).
        await Time.AdvanceUntilAsync(Restore, () => Status.Ready == 2 && Status.Frozen == 2, () => $"pool {Status}");

        var burst = Enumerable.Range(0, 10).Select(_ => Pools.AcquireAsync(t, Ct)).ToList();
        // Before the clock moves at all: 8 restores for the 8 callers the pool could not serve, side by side
        // (not one after another), plus the pool's own refill (concurrency 1).
        // The two pool members are handed over without the clock moving (a step while their take's check is
        // in flight would time that check out on the fake clock).
        await Eventually.TrueAsync(() => Runtime.Pending == 8 + 1 && burst.Count(b => b.IsCompleted) == 2,
            () => $"{Runtime.Pending} starts pending, {burst.Count(b => b.IsCompleted)} served");
        // Stepped until every caller has its sandbox (a take's own round trips may arm timers of their own
        // after the first step: on a loaded host one step left the test waiting for ever).
        await Time.AdvanceUntilAsync(Restore, () => burst.All(b => b.IsCompleted), () => $"{burst.Count(b => b.IsCompleted)} of 10 served");
        var leases = await Task.WhenAll(burst);

        Assert.Equal(2, leases.Count(l => l.Source == VmSource.Pool));
        Assert.Equal(8, leases.Count(l => l.Source == VmSource.Restore));
        Assert.Equal((2, 8), (Status.Hits, Status.Misses));
        foreach (var lease in leases)
        {
            Tracker.Release(lease.Vm);
        }
    }

    [Fact]
    public async Task WaitingMembers_AreFrozen_AndATakeThawsBeforeItSetsTheClock()
    {
        var t = Template(1, 1);
        Pools.Start([t]);
        await Eventually.TrueAsync(() => Status.Ready == 1 && Status.Frozen == 1, () => $"pool {Status}");
        string id = Runtime.Vms[0].Id;

        var lease = await Pools.AcquireAsync(t, Ct);

        Assert.Equal(id, lease.Vm.Id);
        Assert.False(lease.Vm.IsFrozen);
        var events = Runtime.Events.Where(e => e.StartsWith(id + " ", StringComparison.Ordinal)).ToList();
        // Admitted (frozen), then on take: thawed, and only then the reinit that sets its clock.
        Assert.Equal([$"{id} freeze", $"{id} thaw", $"{id} reinit"], events);
        Tracker.Release(lease.Vm);
    }

    [Fact]
    public async Task AMemberThatCannotBeThawed_IsEnded_AndTheTakeGetsAnother()
    {
        var t = Template(1, 1);
        Pools.Start([t]);
        await Eventually.TrueAsync(() => Status.Ready == 1 && Status.Frozen == 1, () => $"pool {Status}");
        FakeVm lost = Runtime.Vms[0];
        lost.FailThaw = true;

        var lease = await Pools.AcquireAsync(t, Ct);

        Assert.NotEqual(lost.Id, lease.Vm.Id);
        Assert.True(lost.Disposed, "the VM that could not be thawed was not ended");
        Tracker.Release(lease.Vm);
    }
}
