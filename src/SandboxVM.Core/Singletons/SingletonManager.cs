using System.Collections.Concurrent;
using System.Diagnostics;
using Microsoft.Extensions.Logging;
using SandboxVM.Core.Pools;
using SandboxVM.Core.Runs;
using SandboxVM.Core.Templates;
using SandboxVM.Protocol;
using SandboxVM.Runtime;

namespace SandboxVM.Core.Singletons;

/// <summary>
/// The place one piece of work has in a singleton: <see cref="Index"/> (0 .. concurrency-1, unique among
/// the work running at once) and the uid its run gets (<see cref="RunUser"/>, from
/// <see cref="ProtocolInfo.RunUserFirst"/>), or null where the runtime cannot give runs uids of
/// their own (then the singleton runs one piece of work at a time).
/// </summary>
public sealed record SingletonSlot(int Index, int? RunUser);

/// <summary>State of one singleton template's VM, as /v1/templates shows it.</summary>
public sealed record SingletonStatus(string State, int Restarts, int Running, int Queued, string? LastError, DateTimeOffset? StartedAt);

/// <summary>
/// Keeps one long-lived VM per <c>singleton</c> template (websearch-tools): started with the server or on
/// first use, health-checked, and started again when it dies or stops answering. Requests of different
/// callers share it, each in a working directory of its own that is removed afterwards, at most
/// <see cref="SandboxVmOptions.SingletonConcurrency"/> at once with a bounded queue behind them. Each
/// running piece of work has a slot, and in a VM its run a uid of its own (2000 + slot), so concurrent
/// runs cannot reach each other's files or processes; the agent kills everything of that uid when the
/// run ends, before the slot is given to the next one. A runtime whose sandbox runs everything as one
/// uid (bubblewrap: the agent is not root there) cannot separate concurrent runs, so there the
/// singleton runs one at a time (and everything a run started is still killed at its end).
/// </summary>
public sealed partial class SingletonManager : IAsyncDisposable
{
    private readonly PoolManager _pools;
    private readonly VmTracker _tracker;
    private readonly SandboxVmOptions _options;
    private readonly ILogger<SingletonManager> _logger;
    private readonly TimeProvider _time;
    private readonly ConcurrentDictionary<string, Singleton> _singletons = new(StringComparer.Ordinal);
    private readonly CancellationTokenSource _stopping = new();
    private int _disposed;

    /// <summary><paramref name="time"/> is the clock of the watchdog's rounds and ping timeouts, and of <see cref="SingletonStatus.StartedAt"/>; null: the system clock.</summary>
    public SingletonManager(PoolManager pools, VmTracker tracker, SandboxVmOptions options, ILogger<SingletonManager> logger, TimeProvider? time = null)
    {
        _pools = pools;
        _tracker = tracker;
        _options = options;
        _logger = logger;
        _time = time ?? TimeProvider.System;
        RunUsers = pools.Capabilities.Isolation == IsolationLevel.Vm;
        int range = ProtocolInfo.RunUserLast - ProtocolInfo.RunUserFirst + 1;
        Concurrency = RunUsers ? Math.Clamp(options.SingletonConcurrency, 1, range) : 1;
    }

    /// <summary>Whether runs get a uid of their own (the agent is root in a VM; under bubblewrap every process is one uid).</summary>
    public bool RunUsers { get; }

    /// <summary>Pieces of work a singleton runs at once.</summary>
    public int Concurrency { get; }

    /// <summary>Awaited with every VM a singleton starts, before it serves (connects its egress); a failure ends that VM.</summary>
    public Func<TemplateDefinition, IVm, CancellationToken, Task>? OnStarted { get; set; }

    /// <summary>How often a running singleton is pinged (every interval from <see cref="Start"/>, on the manager's clock).</summary>
    public TimeSpan HealthInterval { get; init; } = TimeSpan.FromSeconds(5);

    /// <summary>A ping not answered within this long: the VM is ended and started again.</summary>
    public TimeSpan HealthTimeout { get; init; } = TimeSpan.FromSeconds(5);

    /// <summary>Registers the singleton templates; with <paramref name="startNow"/> their VMs start in the background.</summary>
    public void Start(IEnumerable<TemplateDefinition> templates, bool startNow)
    {
        foreach (var t in templates.Where(t => t.Warmup.Strategy == WarmupStrategy.Singleton))
        {
            var s = _singletons.GetOrAdd(t.Name, _ => new Singleton(this, t));
            if (startNow)
            {
                _ = s.GetVmAsync(_stopping.Token).ContinueWith(_ => { }, TaskScheduler.Default);
            }
            s.StartWatchdog(_stopping.Token);
        }
    }

    public SingletonStatus? Status(string template) => _singletons.TryGetValue(template, out var s) ? s.Status : null;

    public bool IsSingleton(string template) => _singletons.ContainsKey(template);

    /// <summary>
    /// Runs <paramref name="work"/> against the template's singleton VM once a slot is free; throws a 429
    /// problem when the queue is full. The VM is started first when it is not running.
    /// </summary>
    public Task<T> UseAsync<T>(TemplateDefinition template, Func<IVm, CancellationToken, Task<T>> work, CancellationToken cancellationToken) =>
        UseAsync(template, (vm, _, ct) => work(vm, ct), cancellationToken);

    /// <summary>Like <see cref="UseAsync{T}(TemplateDefinition, Func{IVm, CancellationToken, Task{T}}, CancellationToken)"/>, with the slot the work has.</summary>
    public async Task<T> UseAsync<T>(TemplateDefinition template, Func<IVm, SingletonSlot, CancellationToken, Task<T>> work, CancellationToken cancellationToken)
    {
        if (!_singletons.TryGetValue(template.Name, out var s))
        {
            throw new InvalidOperationException($"template {template.Name} is not a singleton");
        }
        return await s.UseAsync(work, cancellationToken);
    }

    public async ValueTask DisposeAsync()
    {
        if (Interlocked.Exchange(ref _disposed, 1) != 0)
        {
            return;
        }
        await _stopping.CancelAsync();
        foreach (var s in _singletons.Values)
        {
            await s.StopAsync();
        }
    }

    /// <summary>One singleton template: its current VM, its slots and its watchdog.</summary>
    private sealed class Singleton(SingletonManager owner, TemplateDefinition template)
    {
        private readonly SemaphoreSlim _slots = new(owner.Concurrency, owner.Concurrency);
        // As many as the semaphore admits, so a free one is always there after a wait.
        private readonly ConcurrentQueue<int> _freeSlots = new(Enumerable.Range(0, owner.Concurrency));
        private readonly SemaphoreSlim _starting = new(1, 1);
        private IVm? _vm;
        private Task _watchdog = Task.CompletedTask;
        private int _restarts;
        private int _running;
        private int _queued;
        private string? _lastError;
        private DateTimeOffset? _startedAt;
        private bool _everStarted;

        public SingletonStatus Status
        {
            get
            {
                IVm? vm = _vm;
                string state = vm is { Exited.IsCompleted: false } ? "ready" : _starting.CurrentCount == 0 ? "starting" : _lastError is null ? "stopped" : "failed";
                return new SingletonStatus(state, _restarts, _running, _queued, _lastError, _startedAt);
            }
        }

        public async Task<T> UseAsync<T>(Func<IVm, SingletonSlot, CancellationToken, Task<T>> work, CancellationToken cancellationToken)
        {
            if (Interlocked.Increment(ref _queued) > owner._options.SingletonQueue && _slots.CurrentCount == 0)
            {
                Interlocked.Decrement(ref _queued);
                throw new RunRequestException(ProblemCodes.Overloaded, null,
                    $"the {template.Name} sandbox has {owner._options.SingletonQueue} requests waiting; try again later", RefusalKind.Busy);
            }
            try
            {
                await _slots.WaitAsync(cancellationToken);
            }
            finally
            {
                Interlocked.Decrement(ref _queued);
            }
            Interlocked.Increment(ref _running);
            if (!_freeSlots.TryDequeue(out int index))
            {
                throw new InvalidOperationException("a singleton slot was admitted without a free index");
            }
            try
            {
                IVm vm = await GetVmAsync(cancellationToken);
                var slot = new SingletonSlot(index, owner.RunUsers ? ProtocolInfo.RunUserFirst + index : null);
                return await work(vm, slot, cancellationToken);
            }
            finally
            {
                _freeSlots.Enqueue(index);
                Interlocked.Decrement(ref _running);
                _slots.Release();
            }
        }

        /// <summary>The running VM, started (again) when there is none or it died.</summary>
        public async Task<IVm> GetVmAsync(CancellationToken cancellationToken)
        {
            if (_vm is { Exited.IsCompleted: false } live)
            {
                return live;
            }
            await _starting.WaitAsync(cancellationToken);
            try
            {
                if (_vm is { Exited.IsCompleted: false } started)
                {
                    return started;
                }
                if (_vm is { } dead)
                {
                    await owner._tracker.KillAsync(dead);
                    _vm = null;
                }
                var clock = Stopwatch.StartNew();
                try
                {
                    LeasedVm lease = await owner._pools.AcquireAsync(template, cancellationToken);
                    if (owner.OnStarted is { } onStarted)
                    {
                        try
                        {
                            await onStarted(template, lease.Vm, cancellationToken);
                        }
                        catch
                        {
                            await owner._tracker.KillAsync(lease.Vm);
                            throw;
                        }
                    }
                    if (_everStarted)
                    {
                        Interlocked.Increment(ref _restarts);
                    }
                    _everStarted = true;
                    _vm = lease.Vm;
                    _startedAt = owner._time.GetUtcNow();
                    _lastError = null;
                    LogStarted(owner._logger, template.Name, lease.Vm.Id, clock.Elapsed.TotalMilliseconds);
                    return lease.Vm;
                }
                catch (Exception e) when (e is not OperationCanceledException)
                {
                    _lastError = CallerErrors.Describe(e);
                    LogStartFailed(owner._logger, template.Name, e);
                    throw new RunRequestException(ProblemCodes.SandboxStartFailed, null, $"the {template.Name} sandbox could not be started: {_lastError}", RefusalKind.Unavailable);
                }
            }
            finally
            {
                _starting.Release();
            }
        }

        /// <summary>Pings the VM now and then; one that died or does not answer is ended and started again.</summary>
        public void StartWatchdog(CancellationToken stopping)
        {
            // Made here, not on the loop's task: the rounds are due every interval from Start, whenever that task runs.
            var rounds = new PeriodicTimer(owner.HealthInterval, owner._time);
            _watchdog = Task.Run(() => WatchAsync(rounds, stopping), CancellationToken.None);
        }

        private async Task WatchAsync(PeriodicTimer rounds, CancellationToken stopping)
        {
            using PeriodicTimer timer = rounds;
            while (!stopping.IsCancellationRequested)
            {
                try
                {
                    // A round that outlasts the interval (a restart) is followed by the next at once.
                    await timer.WaitForNextTickAsync(stopping);
                }
                catch (OperationCanceledException)
                {
                    return;
                }
                IVm? vm = _vm;
                if (vm is null)
                {
                    continue;
                }
                bool healthy = !vm.Exited.IsCompleted;
                if (healthy)
                {
                    try
                    {
                        using var expiry = new CancellationTokenSource(owner.HealthTimeout, owner._time);
                        using var timeout = CancellationTokenSource.CreateLinkedTokenSource(stopping, expiry.Token);
                        await vm.Agent.PingAsync(timeout.Token);
                    }
                    catch (Exception) when (!stopping.IsCancellationRequested)
                    {
                        healthy = false;
                    }
                    catch (OperationCanceledException)
                    {
                        return;
                    }
                }
                if (!healthy)
                {
                    LogUnhealthy(owner._logger, template.Name, vm.Id);
                    await owner._tracker.KillAsync(vm);
                    try
                    {
                        await GetVmAsync(stopping);
                    }
                    catch (Exception e) when (e is not OperationCanceledException)
                    {
                        // Logged by GetVmAsync; the next request or round tries again.
                    }
                    catch (OperationCanceledException)
                    {
                        return;
                    }
                }
            }
        }

        public async Task StopAsync()
        {
            await _watchdog.ContinueWith(_ => { }, TaskScheduler.Default);
            if (_vm is { } vm)
            {
                await owner._tracker.KillAsync(vm);
            }
        }
    }

    [LoggerMessage(Level = LogLevel.Information, Message = "singleton {Template} running in vm {Vm} (started in {Ms:0} ms)")]
    private static partial void LogStarted(ILogger logger, string template, string vm, double ms);

    [LoggerMessage(Level = LogLevel.Warning, Message = "singleton {Template} could not be started")]
    private static partial void LogStartFailed(ILogger logger, string template, Exception e);

    [LoggerMessage(Level = LogLevel.Warning, Message = "singleton {Template}: vm {Vm} died or stopped answering; starting another")]
    private static partial void LogUnhealthy(ILogger logger, string template, string vm);
}
