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
        RefillConcurrency = 2,
    };

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
        Assert.Equal(2, PoolTarget.Compute(2, 2, 50, TimeSpan.FromSeconds(3)));

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
