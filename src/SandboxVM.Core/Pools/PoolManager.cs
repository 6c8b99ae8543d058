using System.Collections.Concurrent;
using System.Diagnostics;
using System.Security.Cryptography;
using SandboxVM.Protocol;
using Microsoft.Extensions.Logging;
using SandboxVM.Core.Runs;
using SandboxVM.Core.Templates;
using SandboxVM.Runtime;

namespace SandboxVM.Core.Pools;

/// <summary>A VM handed to one caller, and how it was obtained.</summary>
public sealed record LeasedVm(IVm Vm, VmSource Source, TimeSpan AcquireTime);

/// <summary>What /v1/templates and /metrics show about a template's pool.</summary>
public sealed record PoolStatus(int Ready, int Target, int Starting, string? LastError)
{
    /// <summary>The bounds the target moves between (equal: a fixed pool).</summary>
    public int Min { get; init; }
    public int Max { get; init; }
    /// <summary>Requests served from the pool, and those that found it empty (a sandbox started for them).</summary>
    public long Hits { get; init; }
    public long Misses { get; init; }
    /// <summary>Ready sandboxes that are frozen.</summary>
    public int Frozen { get; init; }
}

/// <summary>Turns a template into what the runtime needs to start it (building images on first use).</summary>
public interface IVmSpecProvider
{
    Task<VmSpec> GetSpecAsync(TemplateDefinition template, CancellationToken cancellationToken);
}

/// <summary>
/// Keeps every <c>pool</c> template at its target number of started, healthy sandboxes and refills in
/// the background as they are taken, so a request finds one ready. A sandbox is handed to exactly one
/// caller; one found dead or unresponsive is discarded and replaced. Templates that are not pooled, or
/// a pool that is empty at the moment, get a sandbox started on demand.
/// </summary>
public sealed partial class PoolManager : IAsyncDisposable
{
    private readonly IVmRuntime _runtime;
    private readonly IVmSpecProvider _specs;
    private readonly VmTracker _tracker;
    private readonly ILogger<PoolManager> _logger;
    private readonly TimeProvider _time;
    private readonly ConcurrentDictionary<string, TemplatePool> _pools = new();
    private readonly ConcurrentDictionary<string, Lazy<Task<SnapshotInfo?>>> _snapshots = new();
    private readonly CancellationTokenSource _stopping = new();
    private int _disposed;

    /// <summary>
    /// <paramref name="time"/> is the clock of every wait and window here (health-check timeouts,
    /// freshness, idle re-checks, refill backoff); null: the system clock. Durations reported to callers
    /// (acquire times) are measured on the real clock whatever it is.
    /// </summary>
    public PoolManager(IVmRuntime runtime, IVmSpecProvider specs, VmTracker tracker, ILogger<PoolManager> logger, TimeProvider? time = null)
    {
        _runtime = runtime;
        _specs = specs;
        _tracker = tracker;
        _logger = logger;
        _time = time ?? TimeProvider.System;
    }

    /// <summary>The runtime behind the pools (sessions ask it to save and restore sandboxes).</summary>
    public IVmRuntime Runtime => _runtime;

    /// <summary>The spec a sandbox of <paramref name="template"/> starts with now.</summary>
    public Task<VmSpec> GetSpecAsync(TemplateDefinition template, CancellationToken cancellationToken) => _specs.GetSpecAsync(template, cancellationToken);

    /// <summary>What the runtime behind the pools isolates with (the singletons decide from it whether runs get a uid of their own).</summary>
    public RuntimeCapabilities Capabilities => _runtime.Capabilities;

    /// <summary>Health check a pooled sandbox must pass before it is handed out.</summary>
    public TimeSpan HealthCheckTimeout { get; init; } = TimeSpan.FromSeconds(2);

    /// <summary>Longest wait between attempts when starting sandboxes keeps failing.</summary>
    public TimeSpan MaxBackoff { get; init; } = TimeSpan.FromSeconds(30);

    /// <summary>
    /// A pooled sandbox that passed a health check (its start, priming, or an idle re-check) at most
    /// this long ago is handed out after a look at its process and agent connection only, without the
    /// round trip (10-25 ms of a request under TCG); older ones are checked (and their clock and
    /// entropy refreshed) on take. Waiting sandboxes are re-checked in the background every
    /// <see cref="IdleRecheckInterval"/>, so on a healthy host every take finds a fresh one. A guest
    /// that hangs inside the window is noticed by its run's deadline. Zero: every take checks.
    /// </summary>
    public TimeSpan HealthCheckFreshness { get; init; } = TimeSpan.FromSeconds(10);

    /// <summary>
    /// How often a waiting pooled sandbox is health-checked (clock and entropy refreshed too) by the
    /// pool itself, one at a time, off the request path. Zero: never (takes check instead).
    /// </summary>
    public TimeSpan IdleRecheckInterval { get; init; } = TimeSpan.FromSeconds(4);

    /// <summary>
    /// Run the warm-up in every restored sandbox before it is offered. Under TCG each QEMU translates
    /// guest code afresh and a clone's memory is faulted in on first touch, so the first run in a clone
    /// paid both (print(1) in python-data-analysis: run_ms 1097 -> 764 median, host_ms 107 -> 46 on a
    /// loaded 2-core host; bench/results/pooled-run-and-clock-*.md). It costs each clone one more warm-up
    /// run of CPU: when requests come faster than the host can restore and prime, turn it off. gVisor
    /// maps a restored clone's memory into its stub processes page by page, so there too (print(1): run
    /// step 74-142 ms unprimed, 0-38 ms primed, under load 20-70).
    /// Null: when the runtime says its restores are cold (<see cref="RuntimeCapabilities.ColdRestores"/>: tcg, gvisor).
    /// </summary>
    public bool? PrimeRestoredVms { get; init; }

    /// <summary>
    /// Freeze a pooled sandbox while it waits (after the health check that admits it), so a full pool
    /// costs no CPU; the background re-check and a take thaw it first (and a take sets its clock again).
    /// </summary>
    public bool FreezeWaiting { get; init; } = true;

    /// <summary>
    /// Memory the host keeps for itself: no sandbox starts (on demand or for a pool) while less than this is
    /// available (a python-data-analysis gVisor sandbox takes about 91 MiB; bench/results/idle-*.md). Zero: no floor.
    /// </summary>
    public long MinHostMemoryBytes { get; init; }

    /// <summary>Where the available host memory is read (tests give their own).</summary>
    public Func<long?> HostMemoryAvailable { get; init; } = HostMemory.AvailableBytes;

    /// <summary>The window over which a pool's arrival rate is measured.</summary>
    public TimeSpan DemandWindow { get; init; } = TimeSpan.FromSeconds(60);

    /// <summary>
    /// How long a pool remembers a burst (<see cref="PoolTarget.Shortfall"/>): its target stays at least the
    /// burst's size (within the template's max) for this long after it, so a burst that comes again finds its
    /// sandboxes ready. Waiting members are frozen (memory, no CPU), so the cost of remembering is memory.
    /// </summary>
    public TimeSpan BurstMemory { get; init; } = TimeSpan.FromMinutes(5);

    /// <summary>Starts a pool runs at once when it refills (a template's <c>refill_concurrency</c> overrides it).</summary>
    public int RefillConcurrency { get; init; } = Math.Max(1, Environment.ProcessorCount);

    /// <summary>
    /// How long after a take the refill waits while ready sandboxes remain, so a restore does not start while
    /// the taker's first call runs and take its CPU (a gVisor restore keeps more than one core busy for most of
    /// a second). The hold runs from the first take since refills last started and only while none is under
    /// way, so a series of takes delays the pool's recovery by this much once; a take that leaves the pool empty
    /// refills at once. Zero: refills start on the take.
    /// </summary>
    public TimeSpan RefillHoldAfterTake { get; init; }

    /// <summary>
    /// Run in a template VM before its snapshot is saved, and in a pooled VM that was not restored from one or
    /// is primed (the bool: a restored clone being primed; see <see cref="Runs.Warmup"/>).
    /// </summary>
    public Func<TemplateDefinition, Runtime.Agent.AgentClient, bool, CancellationToken, Task>? Warmup { get; init; }

    /// <summary>
    /// Makes sure the runtime has a snapshot of the template (booted, warmed up, saved) so pool refills
    /// restore instead of booting. Once per template and inputs; a failure is retried on the next call,
    /// and so is a snapshot that has gone from the runtime's store since (removed by hand or by another
    /// server, tmpfs cleared): it is prepared again instead of every refill booting cold.
    /// </summary>
    public async Task<SnapshotInfo?> EnsureSnapshotAsync(TemplateDefinition template, CancellationToken cancellationToken)
    {
        if (!_runtime.Capabilities.Snapshots)
        {
            return null;
        }
        VmSpec spec = await _specs.GetSpecAsync(template, cancellationToken);
        string key = template.Name + "/" + spec.GetHashCode();
        for (int attempt = 0; ; attempt++)
        {
            var lazy = _snapshots.GetOrAdd(key, _ => new Lazy<Task<SnapshotInfo?>>(() => PrepareSnapshotAsync(template, spec)));
            SnapshotInfo? info;
            try
            {
                info = await lazy.Value.WaitAsync(cancellationToken);
            }
            catch (Exception e) when (e is not OperationCanceledException)
            {
                _snapshots.TryRemove(new KeyValuePair<string, Lazy<Task<SnapshotInfo?>>>(key, lazy));
                throw;
            }
            if (info is null || attempt > 0 || _runtime.SnapshotExists(info))
            {
                return info;
            }
            // Only this entry: a concurrent caller may already have put a fresh one in its place.
            if (_snapshots.TryRemove(new KeyValuePair<string, Lazy<Task<SnapshotInfo?>>>(key, lazy)))
            {
                LogSnapshotGone(_logger, template.Name, info.Directory);
            }
        }
    }

    /// <summary>
    /// Where the runtime has no snapshots, each pooled sandbox runs the warm-up itself before it is
    /// offered, so that (say) the preloaded interpreter is already up when a request takes it. A restored
    /// clone runs it again when <see cref="PrimeRestoredVms"/> says so: it leaves the files the snapshot's
    /// warm-up left, and the clone's emulator has translated the code a run goes through.
    /// </summary>
    private async Task WarmAsync(TemplateDefinition template, IVm vm, CancellationToken cancellationToken)
    {
        bool prime = vm.Source == VmSource.Restore && (PrimeRestoredVms ?? _runtime.Capabilities.ColdRestores);
        if (Warmup is null || (_runtime.Capabilities.Snapshots && !prime))
        {
            return;
        }
        try
        {
            var clock = Stopwatch.StartNew();
            await Warmup(template, vm.Agent, prime, cancellationToken);
            LogWarmed(_logger, vm.Id, template.Name, (long)clock.Elapsed.TotalMilliseconds);
        }
        catch
        {
            await _tracker.KillAsync(vm);
            throw;
        }
    }

    private async Task<SnapshotInfo?> PrepareSnapshotAsync(TemplateDefinition template, VmSpec spec)
    {
        var info = await _runtime.PrepareSnapshotAsync(spec,
            Warmup is { } warmup ? (agent, ct) => warmup(template, agent, false, ct) : null, _stopping.Token);
        if (info is not null)
        {
            LogSnapshot(_logger, template.Name, info.Built ? "saved" : "found", info.Directory, (long)info.Elapsed.TotalMilliseconds);
        }
        return info;
    }

    /// <summary>Starts filling the pool of every template whose warm-up strategy is <c>pool</c>.</summary>
    public void Start(IEnumerable<TemplateDefinition> templates)
    {
        foreach (var t in templates.Where(t => t.Warmup.Strategy == WarmupStrategy.Pool && t.Warmup.MaxPool > 0))
        {
            _pools.GetOrAdd(t.Name, _ => new TemplatePool(this, t)).Start(_stopping.Token);
        }
    }

    public PoolStatus? Status(string template) => _pools.TryGetValue(template, out var p) ? p.Status : null;

    /// <summary>Every pool's status, by template.</summary>
    public IReadOnlyDictionary<string, PoolStatus> Statuses() => _pools.ToDictionary(p => p.Key, p => p.Value.Status, StringComparer.Ordinal);

    /// <summary>Awaited with every VM handed out by <see cref="AcquireAsync"/> (connects egress, or makes sure there is none); a failure ends that VM.</summary>
    public Func<TemplateDefinition, IVm, CancellationToken, Task>? OnAcquired { get; set; }

    /// <summary>A sandbox for one caller: from the pool when one is ready, else started now.</summary>
    public async Task<LeasedVm> AcquireAsync(TemplateDefinition template, CancellationToken cancellationToken)
    {
        LeasedVm lease = await AcquireCoreAsync(template, cancellationToken);
        if (OnAcquired is { } onAcquired)
        {
            try
            {
                await onAcquired(template, lease.Vm, cancellationToken);
            }
            catch
            {
                await _tracker.KillAsync(lease.Vm);
                throw;
            }
        }
        return lease;
    }

    private async Task<LeasedVm> AcquireCoreAsync(TemplateDefinition template, CancellationToken cancellationToken)
    {
        var clock = Stopwatch.StartNew();
        if (_pools.TryGetValue(template.Name, out var pool))
        {
            while (pool.TryTake(out IVm? vm, out long checkedAt))
            {
                double checkMs = 0;
                bool healthy;
                if (vm.IsFrozen)
                {
                    // Frozen since its last check, so nothing in it changed but the clock of a guest with its own
                    // kernel, which the thaw's reinit round trip sets (and which is the health check too).
                    long start = Stopwatch.GetTimestamp();
                    healthy = await ThawAsync(vm, cancellationToken) && !vm.Agent.Completion.IsCompleted;
                    checkMs = Stopwatch.GetElapsedTime(start).TotalMilliseconds;
                }
                else if (HealthCheckFreshness > TimeSpan.Zero && _time.GetElapsedTime(checkedAt) <= HealthCheckFreshness)
                {
                    // Checked moments ago (restored, reinitialised, primed): what can have changed since
                    // shows as an exited QEMU or a closed agent connection; the run's own deadline covers the rest.
                    healthy = !vm.Exited.IsCompleted && !vm.Agent.Completion.IsCompleted;
                }
                else
                {
                    long start = Stopwatch.GetTimestamp();
                    healthy = await IsHealthyAsync(vm, cancellationToken);
                    checkMs = Stopwatch.GetElapsedTime(start).TotalMilliseconds;
                }
                LogTaken(_logger, vm.Id, template.Name, checkMs, clock.Elapsed.TotalMilliseconds);
                if (healthy)
                {
                    pool.CountTake(hit: true);
                    return new LeasedVm(vm, VmSource.Pool, clock.Elapsed);
                }
                LogDiscarded(_logger, vm.Id, template.Name);
                await _tracker.KillAsync(vm);
            }
            pool.CountTake(hit: false);
        }
        // Not queued behind the pool's refills or other callers: every caller that finds the pool empty starts
        // its own sandbox at once, so a burst beyond the pool runs its restores side by side.
        long started = _time.GetTimestamp();
        IVm fresh = await StartAsync(template, cancellationToken);
        pool?.CountStart(_time.GetElapsedTime(started));
        return new LeasedVm(fresh, fresh.Source, clock.Elapsed);
    }

    /// <summary>
    /// Refuses (503 <c>host_memory_low</c>) to start a VM while the host has less memory available than
    /// <see cref="MinHostMemoryBytes"/>: past the floor the next VM's pages would come from other sandboxes, or
    /// the OOM killer would choose one. Every start checks it: pool refills (which back off on the refusal),
    /// on-demand starts, resumes, forks.
    /// </summary>
    public void EnsureHostMemory()
    {
        if (MinHostMemoryBytes > 0 && HostMemoryAvailable() is { } available && available < MinHostMemoryBytes)
        {
            throw new RunRequestException(ProblemCodes.HostMemoryLow, null,
                $"the host has {available >> 20} MiB of memory available, under the {MinHostMemoryBytes >> 20} MiB this server keeps free; "
                + "end a sandbox or try again later", RefusalKind.Unavailable, TimeSpan.FromSeconds(5));
        }
    }

    private async Task<IVm> StartAsync(TemplateDefinition template, CancellationToken cancellationToken)
    {
        EnsureHostMemory();
        VmSpec spec = await _specs.GetSpecAsync(template, cancellationToken);
        IVm vm = await _runtime.StartAsync(spec, cancellationToken);
        _tracker.Add(vm);
        return vm;
    }

    /// <summary>
    /// Lets a frozen sandbox run again and, where it has its own kernel (its clock stood still while it was
    /// frozen), sets its clock and entropy with the reinit round trip. False when the sandbox is lost (the
    /// thaw or the round trip failed): the caller ends it. The one way any caller thaws a sandbox.
    /// </summary>
    public async Task<bool> ThawAsync(IVm vm, CancellationToken cancellationToken)
    {
        if (vm.Exited.IsCompleted)
        {
            return false;
        }
        try
        {
            await vm.ThawAsync(cancellationToken);
        }
        catch (Exception e) when (e is not OperationCanceledException || !cancellationToken.IsCancellationRequested)
        {
            LogThawFailed(_logger, vm.Id, e.Message);
            return false;
        }
        return !_runtime.Capabilities.OwnKernel || await IsHealthyAsync(vm, cancellationToken);
    }

    /// <summary>Freezes a sandbox that waits; a failure leaves it running (it costs CPU, nothing else) and is logged.</summary>
    public async Task FreezeAsync(IVm vm, CancellationToken cancellationToken)
    {
        if (vm.Exited.IsCompleted)
        {
            return;
        }
        try
        {
            await vm.FreezeAsync(cancellationToken);
        }
        catch (Exception e) when (e is not OperationCanceledException || !cancellationToken.IsCancellationRequested)
        {
            LogFreezeFailed(_logger, vm.Id, e.Message);
        }
    }

    private async Task<bool> IsHealthyAsync(IVm vm, CancellationToken cancellationToken)
    {
        if (vm.Exited.IsCompleted)
        {
            return false;
        }
        try
        {
            using var expiry = new CancellationTokenSource(HealthCheckTimeout, _time);
            using var timeout = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken, expiry.Token);
            if (_runtime.Capabilities.OwnKernel)
            {
                // A sandbox that waited a while: set its clock again (it keeps the host's rate, but nothing
                // corrects it over hours), with fresh entropy. This round trip is also the health check.
                await vm.Agent.ReinitAsync(new ReinitRequest
                {
                    UnixTimeMs = _time.GetUtcNow().ToUnixTimeMilliseconds(),
                    Entropy = RandomNumberGenerator.GetBytes(32),
                    SandboxId = vm.Id,
                }, timeout.Token);
            }
            else
            {
                await vm.Agent.PingAsync(timeout.Token);
            }
            return true;
        }
        catch (Exception e) when (e is not OperationCanceledException || !cancellationToken.IsCancellationRequested)
        {
            return false;
        }
    }

    /// <summary>Stops refilling and ends every pooled sandbox. Safe to call more than once.</summary>
    public async ValueTask DisposeAsync()
    {
        if (Interlocked.Exchange(ref _disposed, 1) != 0)
        {
            return;
        }
        await _stopping.CancelAsync();
        await Task.WhenAll(_pools.Values.Select(p => p.StopAsync()));
    }

    /// <summary>One template's ready sandboxes, its demand, and the loop that refills them.</summary>
    private sealed class TemplatePool(PoolManager owner, TemplateDefinition template)
    {
        private static readonly TimeSpan FirstBackoff = TimeSpan.FromMilliseconds(250);

        // Each ready sandbox with the timestamp (owner._time) of its last passed health check.
        private readonly Queue<(IVm Vm, long CheckedAt)> _ready = new();
        private readonly SemaphoreSlim _wake = new(0);
        private readonly PoolDemand _demand = new(owner._time, owner.DemandWindow, owner.BurstMemory);
        private readonly List<Task> _refills = [];
        private Task _loop = Task.CompletedTask;
        private int _starting;
        // Taken out of _ready for an idle re-check: still counts as ready for the refill.
        private int _rechecking;
        private string? _lastError;
        private TimeSpan _backoff = FirstBackoff;
        private long _backoffUntil;
        private long _hits;
        private long _misses;
        // When the first take since refills last started happened (owner._time); 0: none since.
        private long _heldSince;

        private int RefillConcurrency => Math.Max(1, template.Warmup.RefillConcurrency ?? owner.RefillConcurrency);

        public int Target => _demand.Target(template.Warmup.MinPool, template.Warmup.MaxPool, RefillConcurrency);

        public PoolStatus Status
        {
            get
            {
                int target = Target;
                lock (_ready)
                {
                    return new PoolStatus(_ready.Count(v => !v.Vm.Exited.IsCompleted) + _rechecking, target, _starting, _lastError)
                    {
                        Min = template.Warmup.MinPool,
                        Max = template.Warmup.MaxPool,
                        Hits = Interlocked.Read(ref _hits),
                        Misses = Interlocked.Read(ref _misses),
                        Frozen = _ready.Count(v => v.Vm.IsFrozen),
                    };
                }
            }
        }

        public void Start(CancellationToken stopping) => _loop = Task.Run(() => RefillLoopAsync(stopping), CancellationToken.None);

        /// <summary>Counts one caller's request for a sandbox: an arrival for the target, and a hit or a miss.</summary>
        public void CountTake(bool hit)
        {
            Interlocked.Increment(ref hit ? ref _hits : ref _misses);
            _demand.Arrived();
            _wake.Release();
        }

        /// <summary>
        /// How long a start for a caller that found the pool empty took (the caller waited for it): the target covers
        /// the arrivals of one start, and the time is not counted as time the refills had (<see cref="PoolDemand"/>).
        /// </summary>
        public void CountStart(TimeSpan elapsed)
        {
            _demand.StartedOnDemand(elapsed);
            _wake.Release();
        }

        public bool TryTake([System.Diagnostics.CodeAnalysis.NotNullWhen(true)] out IVm? vm, out long checkedAt)
        {
            bool taken;
            lock (_ready)
            {
                taken = _ready.TryDequeue(out var entry);
                (vm, checkedAt) = entry;
                if (taken && _heldSince == 0)
                {
                    _heldSince = owner._time.GetTimestamp();
                }
            }
            _wake.Release();
            return taken;
        }

        /// <summary>
        /// What is left of <see cref="RefillHoldAfterTake"/> since the first take the refills have not answered; zero
        /// when it is over, a refill is already under way, or the pool has no ready sandbox left.
        /// </summary>
        private TimeSpan HeldAfterTake()
        {
            lock (_ready)
            {
                // A refill under way already shares the CPU with the taker: holding the next one back would only slow
                // the pool's recovery from a series of takes.
                if (owner.RefillHoldAfterTake <= TimeSpan.Zero || _heldSince == 0 || Volatile.Read(ref _starting) > 0
                    || !_ready.Any(v => !v.Vm.Exited.IsCompleted))
                {
                    return TimeSpan.Zero;
                }
                TimeSpan left = owner.RefillHoldAfterTake - owner._time.GetElapsedTime(_heldSince);
                return left > TimeSpan.Zero ? left : TimeSpan.Zero;
            }
        }

        private int ReadyOrStarting()
        {
            lock (_ready)
            {
                return _ready.Count(v => !v.Vm.Exited.IsCompleted) + _rechecking + _starting;
            }
        }

        /// <summary>
        /// Starts refills, up to the refill concurrency at once, while ready + starting is below the target;
        /// ends ready sandboxes beyond it when demand fell; re-checks waiting ones. Woken by takes, deaths,
        /// finished refills, a due re-check or the end of a backoff.
        /// </summary>
        private async Task RefillLoopAsync(CancellationToken stopping)
        {
            while (!stopping.IsCancellationRequested)
            {
                DropDead();
                int target = Target;
                await ShrinkToAsync(target);
                TimeSpan wait = UntilNextRecheck();
                TimeSpan backoffLeft = owner._time.GetElapsedTime(owner._time.GetTimestamp(), _backoffUntil);
                if (backoffLeft > TimeSpan.Zero)
                {
                    wait = backoffLeft < wait ? backoffLeft : wait;
                }
                else if (HeldAfterTake() is { } hold && hold > TimeSpan.Zero && ReadyOrStarting() < target)
                {
                    wait = hold < wait ? hold : wait;
                }
                else
                {
                    lock (_ready)
                    {
                        _heldSince = 0;
                    }
                    while (ReadyOrStarting() < target && Volatile.Read(ref _starting) < RefillConcurrency)
                    {
                        Interlocked.Increment(ref _starting);
                        lock (_refills)
                        {
                            _refills.RemoveAll(t => t.IsCompleted);
                            _refills.Add(Task.Run(() => RefillOneAsync(stopping), CancellationToken.None));
                        }
                    }
                }
                try
                {
                    await WaitForWakeAsync(wait, stopping);
                    DropDead();
                    await RecheckDueAsync(stopping);
                }
                catch (OperationCanceledException)
                {
                    break;
                }
            }
            Task[] running;
            lock (_refills)
            {
                running = [.. _refills];
            }
            await Task.WhenAll(running);
        }

        /// <summary>One restore (or boot) and priming, then frozen and queued; a failure backs the refills off.</summary>
        private async Task RefillOneAsync(CancellationToken stopping)
        {
            IVm? vm = null;
            bool queued = false;
            try
            {
                await owner.EnsureSnapshotAsync(template, stopping);
                long start = owner._time.GetTimestamp();
                vm = await owner.StartAsync(template, stopping);
                await owner.WarmAsync(template, vm, stopping);
                _demand.Started(owner._time.GetElapsedTime(start));
                if (owner.FreezeWaiting)
                {
                    // Started (hello + reinit) and, if primed, just ran the warm-up: healthy now, and frozen until taken.
                    await owner.FreezeAsync(vm, stopping);
                }
                lock (_ready)
                {
                    _ready.Enqueue((vm, owner._time.GetTimestamp()));
                    _lastError = null;
                    _backoff = FirstBackoff;
                }
                queued = true;
                _ = vm.Exited.ContinueWith(_ => _wake.Release(), TaskScheduler.Default);
            }
            catch (Exception) when (stopping.IsCancellationRequested)
            {
                // Stopping: a start or warm-up cut short (the warm-up reports it as a failed run).
            }
            catch (Exception e)
            {
                lock (_ready)
                {
                    _lastError = CallerErrors.Describe(e);
                    LogRefillFailed(owner._logger, template.Name, _backoff.TotalSeconds, e);
                    _backoffUntil = owner._time.GetTimestamp() + (long)(_backoff.TotalSeconds * owner._time.TimestampFrequency);
                    _backoff = TimeSpan.FromTicks(Math.Min(_backoff.Ticks * 2, owner.MaxBackoff.Ticks));
                }
            }
            finally
            {
                if (vm is not null && !queued)
                {
                    await owner._tracker.KillAsync(vm);
                }
                Interlocked.Decrement(ref _starting);
                _wake.Release();
            }
        }

        /// <summary>Ends the ready sandboxes that waited longest beyond <paramref name="target"/> (demand fell).</summary>
        private async Task ShrinkToAsync(int target)
        {
            List<IVm> excess = [];
            lock (_ready)
            {
                while (_ready.Count > 0 && _ready.Count + _rechecking > target)
                {
                    excess.Add(_ready.Dequeue().Vm);
                }
            }
            foreach (var vm in excess)
            {
                LogShrunk(owner._logger, vm.Id, template.Name, target);
                await owner._tracker.KillAsync(vm);
            }
        }

        /// <summary>
        /// Until a take or a death releases <see cref="_wake"/>, or <paramref name="due"/> passes on the
        /// owner's clock. A late wake-up (or a clock that jumped) loses nothing: the re-check decides
        /// from the timestamps.
        /// </summary>
        private async Task WaitForWakeAsync(TimeSpan due, CancellationToken stopping)
        {
            if (due <= TimeSpan.Zero)
            {
                return;
            }
            using var timer = new CancellationTokenSource(due, owner._time);
            using var linked = CancellationTokenSource.CreateLinkedTokenSource(stopping, timer.Token);
            try
            {
                await _wake.WaitAsync(linked.Token);
            }
            catch (OperationCanceledException) when (!stopping.IsCancellationRequested)
            {
                // Due.
            }
        }

        private TimeSpan UntilNextRecheck()
        {
            var idle = TimeSpan.FromSeconds(5);
            if (owner.IdleRecheckInterval <= TimeSpan.Zero)
            {
                return idle;
            }
            lock (_ready)
            {
                if (_ready.Count == 0)
                {
                    return idle;
                }
                // The head was checked longest ago: every enqueue stamps the time of its check.
                TimeSpan due = owner.IdleRecheckInterval - owner._time.GetElapsedTime(_ready.Peek().CheckedAt);
                return due <= TimeSpan.Zero ? TimeSpan.Zero : due < idle ? due : idle;
            }
        }

        /// <summary>
        /// Checks, one at a time, every waiting sandbox whose last check is older than the re-check
        /// interval: taken out of the queue for the round trip (so no caller gets it meanwhile), put back
        /// fresh, or ended and replaced when it does not answer. A frozen one is not re-checked: nothing in
        /// it runs, so nothing in it can hang or drift, and a take thaws it and sets its clock anyway (a
        /// re-check would thaw and freeze it again every interval: on gvisor two runsc calls each time).
        /// </summary>
        private async Task RecheckDueAsync(CancellationToken stopping)
        {
            if (owner.IdleRecheckInterval <= TimeSpan.Zero)
            {
                return;
            }
            for (int i = 0; i < template.Warmup.MaxPool; i++)
            {
                IVm? vm = null;
                lock (_ready)
                {
                    if (_ready.Count > 0 && owner._time.GetElapsedTime(_ready.Peek().CheckedAt) >= owner.IdleRecheckInterval)
                    {
                        var head = _ready.Dequeue();
                        if (head.Vm.IsFrozen)
                        {
                            _ready.Enqueue((head.Vm, owner._time.GetTimestamp()));
                            continue;
                        }
                        vm = head.Vm;
                        _rechecking++;
                    }
                }
                if (vm is null)
                {
                    // The queue's head is the longest-waiting check; requeued ones go to the back.
                    return;
                }
                bool healthy;
                try
                {
                    healthy = await owner.IsHealthyAsync(vm, stopping);
                }
                catch (OperationCanceledException)
                {
                    lock (_ready)
                    {
                        _rechecking--;
                    }
                    await owner._tracker.KillAsync(vm);
                    throw;
                }
                // Back in the queue, or no longer counted, in one step: the status never counts it twice
                // or counts one that failed its check while it is being ended.
                lock (_ready)
                {
                    _rechecking--;
                    if (healthy)
                    {
                        _ready.Enqueue((vm, owner._time.GetTimestamp()));
                    }
                }
                if (!healthy)
                {
                    LogDiscarded(owner._logger, vm.Id, template.Name);
                    await owner._tracker.KillAsync(vm);
                }
            }
        }

        private void DropDead()
        {
            List<IVm> dead;
            lock (_ready)
            {
                dead = _ready.Where(v => v.Vm.Exited.IsCompleted).Select(v => v.Vm).ToList();
                if (dead.Count == 0)
                {
                    return;
                }
                var alive = _ready.Where(v => !v.Vm.Exited.IsCompleted).ToList();
                _ready.Clear();
                alive.ForEach(_ready.Enqueue);
            }
            foreach (var vm in dead)
            {
                owner._tracker.Release(vm);
            }
        }

        public async Task StopAsync()
        {
            await _loop;
            List<IVm> left;
            lock (_ready)
            {
                left = [.. _ready.Select(v => v.Vm)];
                _ready.Clear();
            }
            foreach (var vm in left)
            {
                await owner._tracker.KillAsync(vm);
            }
        }
    }

    [LoggerMessage(Level = LogLevel.Information, Message = "pooled sandbox {Id} of {Template} ended: the target fell to {Target}")]
    private static partial void LogShrunk(ILogger logger, string id, string template, int target);

    [LoggerMessage(Level = LogLevel.Information, Message = "snapshot of {Template} {What} in {Directory} ({Ms} ms)")]
    private static partial void LogSnapshot(ILogger logger, string template, string what, string directory, long ms);

    [LoggerMessage(Level = LogLevel.Warning, Message = "snapshot of {Template} in {Directory} is gone; preparing it again")]
    private static partial void LogSnapshotGone(ILogger logger, string template, string directory);

    [LoggerMessage(Level = LogLevel.Debug, Message = "pooled sandbox {Id} of {Template} warmed in {Ms} ms")]
    private static partial void LogWarmed(ILogger logger, string id, string template, long ms);

    [LoggerMessage(Level = LogLevel.Debug, Message = "took pooled sandbox {Id} of {Template}: health check {CheckMs:0.0} ms, acquire {AcquireMs:0.0} ms")]
    private static partial void LogTaken(ILogger logger, string id, string template, double checkMs, double acquireMs);

    [LoggerMessage(Level = LogLevel.Warning, Message = "pooled sandbox {Id} of {Template} failed its health check; discarded")]
    private static partial void LogDiscarded(ILogger logger, string id, string template);

    [LoggerMessage(Level = LogLevel.Warning, Message = "sandbox {Id} could not be thawed: {Reason}; ending it")]
    private static partial void LogThawFailed(ILogger logger, string id, string reason);

    [LoggerMessage(Level = LogLevel.Warning, Message = "sandbox {Id} could not be frozen: {Reason}; it stays running")]
    private static partial void LogFreezeFailed(ILogger logger, string id, string reason);

    [LoggerMessage(Level = LogLevel.Warning, Message = "refilling the pool of {Template} failed; retrying in {Seconds} s")]
    private static partial void LogRefillFailed(ILogger logger, string template, double seconds, Exception e);
}
