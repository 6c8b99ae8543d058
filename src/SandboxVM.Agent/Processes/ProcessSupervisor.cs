using Microsoft.Win32.SafeHandles;
using SandboxVM.Agent.Native;

namespace SandboxVM.Agent.Processes;

/// <summary>The main process of a step as <see cref="StepRunner"/> supervises it: spawned, or forked by a fork server.</summary>
internal interface IStepProcess : IDisposable
{
    /// <summary>Pid of the main process, which leads its own session: also its process group id.</summary>
    int Pid { get; }
    /// <summary>The agent's end of the step's stdin (non-blocking).</summary>
    SafeFileHandle Stdin { get; }
    SafeFileHandle Stdout { get; }
    SafeFileHandle Stderr { get; }
    /// <summary>Completes with the main process's wait status once it is gone.</summary>
    Task<WaitStatus> Exited { get; }

    /// <summary>SIGKILL to the whole group while the main process may still run.</summary>
    void Kill();

    /// <summary>
    /// Asks the main process to stop its work and live on (the kernel: KeyboardInterrupt); false when it
    /// cannot be asked, and a timeout kills at once.
    /// </summary>
    bool Interrupt() => false;

    /// <summary>After the main process is gone: SIGKILL to what is left of its group, which is then forgotten.</summary>
    void KillRemainingGroup();
}

/// <summary>A child started by <see cref="ProcessSupervisor.Start"/>: its pid (= its process group id) and pipes.</summary>
internal sealed class ChildProcess(ProcessSupervisor supervisor, int pid, SafeFileHandle stdin, SafeFileHandle stdout, SafeFileHandle stderr,
    Task<WaitStatus> exited) : IStepProcess
{
    public int Pid { get; } = pid;
    public SafeFileHandle Stdin { get; } = stdin;
    public SafeFileHandle Stdout { get; } = stdout;
    public SafeFileHandle Stderr { get; } = stderr;
    /// <summary>Completes when the child has been reaped.</summary>
    public Task<WaitStatus> Exited { get; } = exited;

    public void Kill() => supervisor.Kill(this);

    public void KillRemainingGroup() => supervisor.KillAndForgetGroup(Pid);

    /// <summary>Closes the agent's ends of the pipes.</summary>
    public void Dispose()
    {
        Stdin.Dispose();
        Stdout.Dispose();
        Stderr.Dispose();
    }
}

/// <summary>
/// Starts children and reaps every child of the agent (including orphans re-parented to it) on one
/// thread blocked in waitpid(-1). Statuses of the children it started go to their <see cref="ChildProcess.Exited"/>;
/// others are discarded. Also keeps the set of live process groups so that all of them can be killed
/// when the connection ends. Background children (fork servers) outlive connections: they are neither
/// killed by <see cref="KillAll"/> nor waited for by <see cref="WaitForChildrenAsync"/>.
/// Every child runs as <see cref="User"/> or the run user it is started for (through setpriv when that is
/// not the agent's own user): this is the one place the agent starts processes, so no user work can start
/// as root.
/// </summary>
internal sealed class ProcessSupervisor(SandboxUser user)
{
    // A plain monitor (not System.Threading.Lock): the reaper sleeps on it with Monitor.Wait.
    private readonly object _gate = new();
    private readonly Dictionary<int, TaskCompletionSource<WaitStatus>> _waiting = [];
    private readonly HashSet<int> _groups = [];
    private readonly HashSet<int> _background = [];
    private long _spawnCount;
    private Thread? _reaper;

    /// <summary>Who the children run as unless started for a run user, and for whom the agent acts on files.</summary>
    public SandboxUser User { get; } = user;

    /// <summary>
    /// Starts <paramref name="argv"/> (argv[0] resolved to <paramref name="path"/>) as <paramref name="runAs"/>
    /// (default <see cref="User"/>), in a session of its own, in the directory <paramref name="cwd"/> is
    /// open on, with exactly <paramref name="environment"/>.
    /// </summary>
    public ChildProcess Start(string path, IReadOnlyList<string> argv, IReadOnlyList<string> environment, SafeFileHandle cwd,
        SandboxUser? runAs = null, bool background = false)
    {
        (path, argv) = (runAs ?? User).Wrap(path, argv);
        SafeFileHandle stdin = null!, stdout = null!, stderr = null!;
        return Register(() => Libc.Spawn(path, argv, environment, cwd, out stdin, out stdout, out stderr), () => (stdin, stdout, stderr), background);
    }

    /// <summary>
    /// Starts <paramref name="argv"/> like <see cref="Start"/> as <see cref="User"/>, with the terminal <paramref name="terminal"/>
    /// (a pseudo-terminal's slave) as its stdio and controlling terminal; the child has no pipes.
    /// </summary>
    public ChildProcess StartOnTerminal(string path, IReadOnlyList<string> argv, IReadOnlyList<string> environment, SafeFileHandle cwd, string terminal)
    {
        (path, argv) = User.Wrap(path, argv);
        return Register(() => Libc.SpawnOnTerminal(path, argv, environment, cwd, terminal),
            () => (new SafeFileHandle(), new SafeFileHandle(), new SafeFileHandle()), background: false);
    }

    private ChildProcess Register(Func<int> spawn, Func<(SafeFileHandle Stdin, SafeFileHandle Stdout, SafeFileHandle Stderr)> stdio, bool background)
    {
        // Spawn and register under the lock the reaper takes before it looks a pid up, so a child that
        // exits at once is never reaped before it is known.
        lock (_gate)
        {
            int pid = spawn();
            var (stdin, stdout, stderr) = stdio();
            var exited = new TaskCompletionSource<WaitStatus>(TaskCreationOptions.RunContinuationsAsynchronously);
            _waiting[pid] = exited;
            if (background)
            {
                _background.Add(pid);
            }
            else
            {
                _groups.Add(pid);
            }
            _spawnCount++;
            Monitor.PulseAll(_gate);
            if (_reaper is null)
            {
                _reaper = new Thread(ReapLoop) { IsBackground = true, Name = "reaper" };
                _reaper.Start();
            }
            return new ChildProcess(this, pid, stdin, stdout, stderr, exited.Task);
        }
    }

    /// <summary>SIGKILL to the child's group, and to the child itself in case it has not called setsid yet.</summary>
    public void Kill(ChildProcess child)
    {
        Libc.KillGroup(child.Pid);
        lock (_gate)
        {
            // Only while unreaped: afterwards the pid may belong to someone else.
            if (_waiting.ContainsKey(child.Pid))
            {
                Libc.KillProcess(child.Pid);
            }
        }
    }

    /// <summary>
    /// Signal <paramref name="sig"/> to the child's group, only while the child is unreaped (its pid, and so
    /// the group id, cannot belong to anyone else then). False when it was reaped already.
    /// </summary>
    public bool Signal(ChildProcess child, int sig)
    {
        lock (_gate)
        {
            if (!_waiting.ContainsKey(child.Pid))
            {
                return false;
            }
            Libc.SignalGroup(child.Pid, sig);
            return true;
        }
    }

    /// <summary>Counts a group the agent did not spawn itself (a forked step) among those <see cref="KillAll"/> kills.</summary>
    public void TrackGroup(int pgid)
    {
        lock (_gate)
        {
            _groups.Add(pgid);
        }
    }

    /// <summary>Kills what is left of the group and forgets it.</summary>
    public void KillAndForgetGroup(int pgid)
    {
        Libc.KillGroup(pgid);
        lock (_gate)
        {
            _groups.Remove(pgid);
        }
    }

    /// <summary>Forgets a group without killing it (a kernel between runs: it outlives connections like any background child).</summary>
    public void ForgetGroup(int pgid)
    {
        lock (_gate)
        {
            _groups.Remove(pgid);
        }
    }

    /// <summary>SIGKILL to every group started and not yet forgotten (connection ended).</summary>
    public void KillAll()
    {
        int[] groups;
        lock (_gate)
        {
            groups = [.. _groups];
        }
        foreach (int pgid in groups)
        {
            Libc.KillGroup(pgid);
        }
    }

    /// <summary>Waits until the children it started have all been reaped, or the deadline passes.</summary>
    public async Task WaitForChildrenAsync(TimeSpan deadline, CancellationToken cancellationToken)
    {
        Task[] pending;
        lock (_gate)
        {
            pending = [.. _waiting.Where(w => !_background.Contains(w.Key)).Select(w => (Task)w.Value.Task)];
        }
        if (pending.Length > 0)
        {
            await Task.WhenAny(Task.WhenAll(pending), Task.Delay(deadline, cancellationToken));
        }
    }

    private void ReapLoop()
    {
        while (true)
        {
            long seen;
            lock (_gate)
            {
                seen = _spawnCount;
            }
            int pid = Libc.WaitAnyChild(out int status, out int errno);
            if (pid > 0)
            {
                TaskCompletionSource<WaitStatus>? waiter;
                lock (_gate)
                {
                    _waiting.Remove(pid, out waiter);
                    _background.Remove(pid);
                }
                waiter?.TrySetResult(new WaitStatus(status));
                continue;
            }
            if (Libc.IsInterrupted(errno))
            {
                continue;
            }
            // ECHILD: no children at all. Anything still waited for was spawned before the call and
            // reaped elsewhere; then sleep until the next spawn.
            lock (_gate)
            {
                if (_spawnCount != seen)
                {
                    continue;
                }
                foreach (var (lostPid, waiter) in _waiting)
                {
                    AgentLog.Write($"exit status of pid {lostPid} was lost (reaped by someone else)");
                    waiter.TrySetResult(WaitStatus.Unknown);
                }
                _waiting.Clear();
                _background.Clear();
                while (_spawnCount == seen)
                {
                    Monitor.Wait(_gate);
                }
            }
        }
    }
}
