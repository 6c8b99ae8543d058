using SandboxVM.Core.Pools;
using SandboxVM.Core.Templates;
using SandboxVM.Runtime;

namespace SandboxVM.Core.Sessions;

public enum SessionState
{
    Running,
    Ended,
}

/// <summary>
/// One sandbox kept for one caller: a VM taken from the pool, its lifetime and idle limits, and what
/// its runs need to remember (the last successful build). Times come from the manager's clock.
/// </summary>
public sealed class SandboxSession
{
    private readonly object _gate = new();
    private DateTimeOffset _expiresAt;
    private DateTimeOffset _lastActivityAt;
    private int _activeCalls;

    internal SandboxSession(string id, string owner, TemplateDefinition template, LeasedVm lease, DateTimeOffset now,
        double timeoutS, double idleTimeoutS, IReadOnlyDictionary<string, string> metadata, bool keepRunning = false)
    {
        KeepRunning = keepRunning;
        Id = id;
        Owner = owner;
        Template = template;
        Lease = lease;
        CreatedAt = now;
        _lastActivityAt = now;
        _expiresAt = now.AddSeconds(timeoutS);
        TimeoutS = timeoutS;
        IdleTimeoutS = idleTimeoutS;
        Metadata = metadata;
    }

    public string Id { get; }
    /// <summary>The caller (API key name) the sandbox belongs to; only it sees and uses the sandbox.</summary>
    public string Owner { get; }
    public TemplateDefinition Template { get; }
    internal LeasedVm Lease { get; }
    public IVm Vm => Lease.Vm;
    /// <summary>Where the sandbox's VM came from: pool, restore, boot or process.</summary>
    public string VmSource => Lease.Source.ToString().ToLowerInvariant();
    /// <summary>What getting the VM cost the create call.</summary>
    public double StartupMs => Lease.AcquireTime.TotalMilliseconds;
    public DateTimeOffset CreatedAt { get; }
    public double TimeoutS { get; }
    public double IdleTimeoutS { get; }
    public IReadOnlyDictionary<string, string> Metadata { get; }
    public SessionState State { get; private set; } = SessionState.Running;

    /// <summary>Created with <c>keep_running</c>: never frozen between calls, so background work goes on.</summary>
    public bool KeepRunning { get; }

    /// <summary>Whether the VM is frozen now (no call in flight for a while).</summary>
    public bool Frozen => Vm.IsFrozen;

    /// <summary>Taken around every freeze and thaw of the VM, so a call that starts during a freeze thaws after it.</summary>
    internal SemaphoreSlim FreezeGate { get; } = new(1, 1);

    /// <summary>Calls in flight.</summary>
    internal int ActiveCalls
    {
        get { lock (_gate) { return _activeCalls; } }
    }

    /// <summary>True when the sandbox may be frozen at <paramref name="now"/>: no call for <paramref name="after"/>.</summary>
    internal bool DueToFreeze(DateTimeOffset now, TimeSpan after)
    {
        lock (_gate)
        {
            return !KeepRunning && State == SessionState.Running && _activeCalls == 0 && now >= _lastActivityAt + after;
        }
    }

    /// <summary>Why the sandbox ended (deleted, expired, idle, the VM died).</summary>
    public string? EndReason { get; private set; }

    public DateTimeOffset ExpiresAt
    {
        get { lock (_gate) { return _expiresAt; } }
    }

    public DateTimeOffset LastActivityAt
    {
        get { lock (_gate) { return _lastActivityAt; } }
    }

    /// <summary>Runs of this sandbox happen one at a time, in the order they arrived.</summary>
    internal FifoLock RunLock { get; } = new();

    /// <summary>Completed runs so far (a first run's fresh interpreter is not a state reset).</summary>
    internal int Runs { get; set; }

    /// <summary>Hash of the source and recipe of the last successful build, null when none is valid.</summary>
    internal string? BuiltHash { get; set; }

    /// <summary>Starts a call (run, file operation): it counts as activity until it ends.</summary>
    internal void Enter(DateTimeOffset now)
    {
        lock (_gate)
        {
            _activeCalls++;
            _lastActivityAt = now;
        }
    }

    internal void Leave(DateTimeOffset now)
    {
        lock (_gate)
        {
            _activeCalls--;
            _lastActivityAt = now;
        }
    }

    internal void ExtendTo(DateTimeOffset expiresAt, DateTimeOffset now)
    {
        lock (_gate)
        {
            _expiresAt = expiresAt;
            _lastActivityAt = now;
        }
    }

    /// <summary>Why this sandbox should end at <paramref name="now"/>, or null while it may live.</summary>
    internal string? DueToEnd(DateTimeOffset now)
    {
        lock (_gate)
        {
            if (now >= _expiresAt)
            {
                return "its lifetime ended";
            }
            if (_activeCalls == 0 && now >= _lastActivityAt.AddSeconds(IdleTimeoutS))
            {
                return "it was idle too long";
            }
            return null;
        }
    }

    /// <summary>Marks the sandbox ended; false when it already was.</summary>
    internal bool MarkEnded(string reason)
    {
        lock (_gate)
        {
            if (State == SessionState.Ended)
            {
                return false;
            }
            State = SessionState.Ended;
            EndReason = reason;
            return true;
        }
    }
}

/// <summary>An async lock that lets waiters in strictly in arrival order (SemaphoreSlim does not promise that).</summary>
internal sealed class FifoLock
{
    private readonly Queue<TaskCompletionSource> _waiters = new();
    private bool _held;

    public async Task<IDisposable> AcquireAsync(CancellationToken cancellationToken)
    {
        TaskCompletionSource waiter;
        lock (_waiters)
        {
            if (!_held)
            {
                _held = true;
                return new Releaser(this);
            }
            waiter = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
            _waiters.Enqueue(waiter);
        }
        // A waiter is either handed the lock (TrySetResult) or cancelled, never both: Release skips
        // cancelled waiters.
        using (cancellationToken.Register(() => waiter.TrySetCanceled(cancellationToken)))
        {
            await waiter.Task;
        }
        return new Releaser(this);
    }

    private void Release()
    {
        lock (_waiters)
        {
            while (_waiters.TryDequeue(out var next))
            {
                if (next.TrySetResult())
                {
                    return;
                }
            }
            _held = false;
        }
    }

    private sealed class Releaser(FifoLock owner) : IDisposable
    {
        private int _done;

        public void Dispose()
        {
            if (Interlocked.Exchange(ref _done, 1) == 0)
            {
                owner.Release();
            }
        }
    }
}
