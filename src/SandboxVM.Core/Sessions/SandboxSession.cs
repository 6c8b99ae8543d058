using SandboxVM.Core.Pools;
using SandboxVM.Core.Templates;
using SandboxVM.Runtime;

namespace SandboxVM.Core.Sessions;

public enum SessionState
{
    Running,
    /// <summary>Being saved (pause): calls wait for the pause to end.</summary>
    Pausing,
    /// <summary>Saved to the state directory, no VM: costs no RAM.</summary>
    Paused,
    /// <summary>Its VM is being restored from the saved image.</summary>
    Resuming,
    Ended,
}

/// <summary>What an idle sandbox does.</summary>
public enum IdleAction
{
    Kill,
    Pause,
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

    internal SandboxSession(string id, string owner, TemplateDefinition template, LeasedVm? lease, DateTimeOffset now,
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
    /// <summary>The VM the sandbox runs on; null while it is paused.</summary>
    internal LeasedVm? Lease { get; private set; }
    public IVm Vm => Lease?.Vm ?? throw new InvalidOperationException($"sandbox {Id} has no VM while {State.ToString().ToLowerInvariant()}");
    /// <summary>The VM, or null while there is none (paused, resuming).</summary>
    public IVm? CurrentVm => Lease?.Vm;
    /// <summary>Where the sandbox's VM came from: pool, restore, boot or process (null while paused).</summary>
    public string? VmSource => Lease?.Source.ToString().ToLowerInvariant();
    /// <summary>What getting the VM cost the create call (or the last resume).</summary>
    public double StartupMs => Lease?.AcquireTime.TotalMilliseconds ?? 0;
    public DateTimeOffset CreatedAt { get; }
    /// <summary>What the sandbox does once idle for <see cref="IdleTimeoutS"/>.</summary>
    public IdleAction OnIdle { get; init; }
    /// <summary>A call on the paused sandbox resumes it first.</summary>
    public bool AutoResume { get; init; } = true;
    /// <summary>When it was last paused (null: never).</summary>
    public DateTimeOffset? PausedAt { get; private set; }
    /// <summary>Size on disk of the saved image while paused (else of the last one).</summary>
    public long? PausedBytes { get; private set; }
    /// <summary>While paused: when it is removed unless resumed (paused_ttl after the pause).</summary>
    public DateTimeOffset? PausedUntil { get; private set; }
    public double? LastPauseMs { get; private set; }
    public double? LastResumeMs { get; private set; }
    /// <summary>The saved image's directory while paused.</summary>
    internal string? PausedDirectory { get; private set; }
    /// <summary>The spec the saved VM was started with: it is restored with exactly these files.</summary>
    internal Runtime.VmSpec? SavedSpec { get; set; }
    /// <summary>Lifetime left when it was paused; the lifetime does not run while paused.</summary>
    internal TimeSpan RemainingLifetime { get; private set; }
    /// <summary>Lifetime in seconds (from create, or the last PATCH); the default of a keepalive.</summary>
    public double TimeoutS { get; internal set; }
    public double IdleTimeoutS { get; }
    public IReadOnlyDictionary<string, string> Metadata { get; }
    public SessionState State { get; private set; } = SessionState.Running;

    /// <summary>Created with <c>keep_running</c>: never frozen between calls, so background work goes on.</summary>
    public bool KeepRunning { get; }

    /// <summary>Environment variables given at create (<see cref="CreateSandboxRequest.Env"/>); kept with a pause.</summary>
    public IReadOnlyDictionary<string, string> Env { get; init; } = NoEnv;

    internal static readonly IReadOnlyDictionary<string, string> NoEnv = new Dictionary<string, string>(StringComparer.Ordinal);

    /// <summary>Whether the VM is frozen now (no call in flight for a while).</summary>
    public bool Frozen => CurrentVm?.IsFrozen ?? false;

    /// <summary>Taken around every freeze and thaw of the VM, so a call that starts during a freeze thaws after it.</summary>
    internal SemaphoreSlim FreezeGate { get; } = new(1, 1);

    /// <summary>Background commands last seen running: a sandbox with one is not frozen (its work would stop).</summary>
    private readonly HashSet<string> _liveCommands = new(StringComparer.Ordinal);

    /// <summary>Notes what the agent said of a command: running ones keep the sandbox from being frozen.</summary>
    internal void CommandSeen(string commandId, bool running)
    {
        lock (_gate)
        {
            if (running)
            {
                _liveCommands.Add(commandId);
            }
            else
            {
                _liveCommands.Remove(commandId);
            }
        }
    }

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
            return !KeepRunning && State == SessionState.Running && _activeCalls == 0 && _liveCommands.Count == 0 && now >= _lastActivityAt + after;
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
            if (State != SessionState.Running)
            {
                // Paused ones have their own retention; pausing and resuming ones are judged after.
                return null;
            }
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

    /// <summary>Starts a pause: only a running sandbox with no file call in progress (runs are kept out by the run lock).</summary>
    internal bool TryBeginPause()
    {
        lock (_gate)
        {
            if (State != SessionState.Running || _activeCalls > 0)
            {
                return false;
            }
            State = SessionState.Pausing;
            return true;
        }
    }

    /// <summary>A file call counts as activity only on a running sandbox; false otherwise (the caller resumes or waits).</summary>
    internal bool TryEnter(DateTimeOffset now)
    {
        lock (_gate)
        {
            if (State != SessionState.Running)
            {
                return false;
            }
            _activeCalls++;
            _lastActivityAt = now;
            return true;
        }
    }

    /// <summary>The VM is saved and gone: the sandbox is paused, its lifetime stopped.</summary>
    internal void Paused(string directory, long bytes, TimeSpan took, DateTimeOffset now, TimeSpan ttl)
    {
        lock (_gate)
        {
            if (State == SessionState.Ended)
            {
                return;
            }
            RemainingLifetime = _expiresAt > now ? _expiresAt - now : TimeSpan.Zero;
            Lease = null;
            PausedDirectory = directory;
            PausedBytes = bytes;
            PausedAt = now;
            PausedUntil = now + ttl;
            LastPauseMs = took.TotalMilliseconds;
            State = SessionState.Paused;
        }
    }

    /// <summary>A paused sandbox read back from the state directory at server start.</summary>
    internal void LoadedPaused(string directory, long bytes, DateTimeOffset pausedAt, TimeSpan remaining, double? lastPauseMs, double? lastResumeMs, TimeSpan ttl)
    {
        lock (_gate)
        {
            RemainingLifetime = remaining;
            PausedDirectory = directory;
            PausedBytes = bytes;
            PausedAt = pausedAt;
            PausedUntil = pausedAt + ttl;
            LastPauseMs = lastPauseMs;
            LastResumeMs = lastResumeMs;
            _lastActivityAt = pausedAt;
            State = SessionState.Paused;
        }
    }

    /// <summary>A pause that failed: the VM still runs.</summary>
    internal void PauseFailed()
    {
        lock (_gate)
        {
            if (State == SessionState.Pausing)
            {
                State = SessionState.Running;
            }
        }
    }

    internal bool TryBeginResume()
    {
        lock (_gate)
        {
            if (State != SessionState.Paused)
            {
                return false;
            }
            State = SessionState.Resuming;
            return true;
        }
    }

    internal void ResumeFailed()
    {
        lock (_gate)
        {
            if (State == SessionState.Resuming)
            {
                State = SessionState.Paused;
            }
        }
    }

    /// <summary>Runs on <paramref name="lease"/> from now on, with the lifetime it had left when paused.</summary>
    internal void Resumed(LeasedVm lease, TimeSpan took, DateTimeOffset now)
    {
        lock (_gate)
        {
            Lease = lease;
            PausedDirectory = null;
            PausedUntil = null;
            LastResumeMs = took.TotalMilliseconds;
            _expiresAt = now + RemainingLifetime;
            _lastActivityAt = now;
            if (State == SessionState.Resuming)
            {
                State = SessionState.Running;
            }
        }
    }


    /// <summary>Whether a running sandbox has been idle for its idle timeout at <paramref name="now"/> (and its lifetime not over).</summary>
    internal bool IdleDue(DateTimeOffset now)
    {
        lock (_gate)
        {
            return State == SessionState.Running && now < _expiresAt && _activeCalls == 0 && now >= _lastActivityAt.AddSeconds(IdleTimeoutS);
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
