using System.Diagnostics;
using System.Text;
using Microsoft.Win32.SafeHandles;
using SandboxVM.Agent.Native;
using SandboxVM.Protocol;

namespace SandboxVM.Agent.Processes;

/// <summary>The last <c>capacity</c> bytes written to one output stream, and how many were written in all.</summary>
internal sealed class OutputRing(int capacity)
{
    private readonly Lock _lock = new();
    // Allocated on the first write: most commands print little or nothing on one of their streams.
    private byte[]? _buffer;
    private long _total;

    public long Total
    {
        get { lock (_lock) { return _total; } }
    }

    public bool Truncated
    {
        get { lock (_lock) { return _total > capacity; } }
    }

    public void Write(ReadOnlySpan<byte> data)
    {
        int length = data.Length;
        lock (_lock)
        {
            if (capacity > 0 && length > 0)
            {
                _buffer ??= new byte[capacity];
                // Only the last capacity bytes of data can survive.
                long start = _total;
                if (data.Length > capacity)
                {
                    start += data.Length - capacity;
                    data = data[^capacity..];
                }
                int at = (int)(start % capacity);
                int first = Math.Min(data.Length, capacity - at);
                data[..first].CopyTo(_buffer.AsSpan(at));
                data[first..].CopyTo(_buffer);
            }
            _total += length;
        }
    }

    /// <summary>What is kept, oldest byte first.</summary>
    public byte[] Snapshot()
    {
        lock (_lock)
        {
            if (_buffer is null)
            {
                return [];
            }
            int kept = (int)Math.Min(_total, capacity);
            long start = _total - kept;
            byte[] copy = new byte[kept];
            int at = (int)(start % capacity);
            int first = Math.Min(kept, capacity - at);
            _buffer.AsSpan(at, first).CopyTo(copy);
            _buffer.AsSpan(0, kept - first).CopyTo(copy.AsSpan(first));
            return copy;
        }
    }
}

/// <summary>
/// One command: its process group, its output (kept in <see cref="OutputRing"/>s, and for a foreground
/// command also streamed live), its stdin (open until closed by the caller or the end), and how it ended.
/// The main process exiting ends the command: what is left of its group is killed, as for a step.
/// </summary>
internal sealed class Command : IStepOutput
{
    /// <summary>How long a stdin write may wait for a command that does not read.</summary>
    private static readonly TimeSpan _stdinDeadline = TimeSpan.FromSeconds(10);

    private readonly Lock _lock = new();
    private readonly TaskCompletionSource _finished = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private readonly TaskCompletionSource<TerminationReason> _kill = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private readonly SemaphoreSlim _stdinGate = new(1, 1);
    private readonly long _startedAtMs = DateTimeOffset.UtcNow.ToUnixTimeMilliseconds();
    private readonly Stopwatch _clock = Stopwatch.StartNew();
    private ChildProcess? _child;
    private SafeFileHandle? _stdin;
    private IStepOutput? _live;
    private StepResult? _result;
    /// <summary>Completed (and replaced) by every write: command_get's wait for new output.</summary>
    private TaskCompletionSource _wrote = new(TaskCreationOptions.RunContinuationsAsynchronously);

    public Command(string id, IReadOnlyList<string> argv, int outputCap)
    {
        Id = id;
        Argv = [.. argv];
        Stdout = new OutputRing(outputCap);
        Stderr = new OutputRing(outputCap);
    }

    public string Id { get; }
    public List<string> Argv { get; }
    public OutputRing Stdout { get; }
    public OutputRing Stderr { get; }

    /// <summary>Completes once the command ended and its output was collected.</summary>
    public Task Finished => _finished.Task;

    public bool Running => !_finished.Task.IsCompleted;

    /// <summary>Completes once stdout plus stderr hold more than <paramref name="bytes"/> bytes in all (at once if they do).</summary>
    public async Task OutputBeyondAsync(long bytes, CancellationToken cancellationToken)
    {
        while (true)
        {
            Task wrote;
            lock (_lock)
            {
                wrote = _wrote.Task;
            }
            // Read after taking the task: a write in between completes that task, so nothing is missed.
            if (Stdout.Total + Stderr.Total > bytes)
            {
                return;
            }
            await wrote.WaitAsync(cancellationToken);
        }
    }

    /// <summary>
    /// Supervises the started <paramref name="child"/> until it ended: output to the rings (and to
    /// <paramref name="live"/>, blocking, when given), <paramref name="stdin"/> fed then closed when given,
    /// the kill after <paramref name="timeoutMs"/> (0: none) or at <paramref name="outputLimit"/> bytes.
    /// </summary>
    public void Begin(ChildProcess child, int timeoutMs, long outputLimit, byte[]? stdin, IStepOutput? live, bool keepStdin)
    {
        lock (_lock)
        {
            _child = child;
            _live = live;
            _stdin = child.Stdin;
        }
        Task stdinFeed = Task.CompletedTask;
        if (stdin is { Length: > 0 })
        {
            var handle = TakeStdin();
            stdinFeed = StepRunner.StartThread(() => StepRunner.FeedStdin(handle!, stdin, CancellationToken.None));
        }
        else if (!keepStdin)
        {
            TakeStdin()?.Dispose();
        }
        _ = Task.Run(() => SuperviseAsync(child, timeoutMs, outputLimit, stdinFeed), CancellationToken.None);
    }

    /// <summary>The command could not start: it ends at once with <paramref name="exitCode"/> and a message on stderr.</summary>
    public void FailStart(int exitCode, string message, IStepOutput? live)
    {
        lock (_lock)
        {
            _live = live;
        }
        byte[] text = Encoding.UTF8.GetBytes($"sandboxvm-agent: {message}\n");
        ((IStepOutput)this).Write(FrameType.Stderr, text);
        Finish(new StepResult { Reason = TerminationReason.Exited, ExitCode = exitCode, StderrBytes = text.Length });
    }

    /// <summary>Ends the command now (SIGKILL to its group), recording <paramref name="reason"/> as the cause.</summary>
    public void Kill(TerminationReason reason) => _kill.TrySetResult(reason);

    /// <summary>
    /// Sends <paramref name="signal"/> to the group; with <paramref name="killAfter"/> &gt; 0, SIGKILL if it is
    /// still running then, and returns once it ended.
    /// </summary>
    public async Task SignalAsync(ProcessSupervisor supervisor, int signal, TimeSpan killAfter, CancellationToken cancellationToken)
    {
        ChildProcess? child;
        lock (_lock)
        {
            child = _child;
        }
        if (child is null || !Running)
        {
            return;
        }
        supervisor.Signal(child, signal);
        if (killAfter <= TimeSpan.Zero)
        {
            return;
        }
        try
        {
            await Finished.WaitAsync(killAfter, cancellationToken);
        }
        catch (TimeoutException)
        {
            // Ignored the signal (or a child holds on): the whole group goes. Not a kill reason: it died of a signal.
            child.Kill();
            await Finished.WaitAsync(cancellationToken);
        }
    }

    /// <summary>Writes to stdin (all of it, or fails), then closes it when <paramref name="eof"/>.</summary>
    public async Task WriteStdinAsync(byte[] data, bool eof, CancellationToken cancellationToken)
    {
        await _stdinGate.WaitAsync(cancellationToken);
        try
        {
            SafeFileHandle pipe;
            lock (_lock)
            {
                pipe = _stdin ?? throw new AgentException(ErrorCodes.StdinClosed, $"stdin of command {Id} is closed");
            }
            if (data.Length > 0)
            {
                await Task.Run(() => WriteAll(pipe, data, cancellationToken), CancellationToken.None);
            }
            if (eof)
            {
                TakeStdin()?.Dispose();
            }
        }
        finally
        {
            _stdinGate.Release();
        }
    }

    public CommandInfo ToInfo(bool includeOutput)
    {
        StepResult? result;
        int pid;
        bool stdinOpen;
        lock (_lock)
        {
            result = _result;
            pid = _child?.Pid ?? 0;
            stdinOpen = _stdin is not null;
        }
        var info = new CommandInfo
        {
            Id = Id,
            Argv = Argv,
            Pid = pid,
            Running = result is null,
            Reason = result?.Reason,
            ExitCode = result is { Reason: TerminationReason.Exited } ? result.ExitCode : null,
            Signal = result?.Signal,
            StartedAtMs = _startedAtMs,
            DurationMs = result?.DurationMs ?? _clock.ElapsedMilliseconds,
            StdoutBytes = Stdout.Total,
            StderrBytes = Stderr.Total,
            StdoutTruncated = Stdout.Truncated,
            StderrTruncated = Stderr.Truncated,
            StdinOpen = stdinOpen,
        };
        if (includeOutput)
        {
            info.Stdout = Stdout.Snapshot();
            info.Stderr = Stderr.Snapshot();
        }
        return info;
    }

    void IStepOutput.Write(FrameType stream, ReadOnlyMemory<byte> data)
    {
        (stream == FrameType.Stderr ? Stderr : Stdout).Write(data.Span);
        IStepOutput? live;
        TaskCompletionSource wrote;
        lock (_lock)
        {
            live = _live;
            wrote = _wrote;
            _wrote = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        }
        wrote.TrySetResult();
        live?.Write(stream, data);
    }

    private async Task SuperviseAsync(ChildProcess child, int timeoutMs, long outputLimit, Task stdinFeed)
    {
        var budget = new StepRunner.OutputBudget(outputLimit > 0 ? outputLimit : long.MaxValue);
        using var stopPumps = new CancellationTokenSource();
        Task<long> stdoutPump = StepRunner.StartThread(() => StepRunner.Pump(child.Stdout, FrameType.Stdout, budget, this, _kill, stopPumps.Token));
        Task<long> stderrPump = StepRunner.StartThread(() => StepRunner.Pump(child.Stderr, FrameType.Stderr, budget, this, _kill, stopPumps.Token));
        WaitStatus status;
        using (var timeout = new CancellationTokenSource(timeoutMs > 0 ? timeoutMs : Timeout.Infinite))
        using (timeout.Token.Register(() => _kill.TrySetResult(TerminationReason.Timeout)))
        {
            if (await Task.WhenAny(child.Exited, _kill.Task) != child.Exited)
            {
                child.Kill();
            }
            status = await child.Exited;
        }
        long durationMs = _clock.ElapsedMilliseconds;
        child.KillRemainingGroup();
        Task pumps = Task.WhenAll(stdoutPump, stderrPump);
        if (await Task.WhenAny(pumps, Task.Delay(StepRunner.DrainDeadline, CancellationToken.None)) != pumps)
        {
            await stopPumps.CancelAsync();
        }
        long stdoutBytes = await stdoutPump;
        long stderrBytes = await stderrPump;
        await stdinFeed;
        // A write in progress sees EPIPE now that the group is gone; wait for it before closing its handle.
        await _stdinGate.WaitAsync(CancellationToken.None);
        try
        {
            TakeStdin()?.Dispose();
        }
        finally
        {
            _stdinGate.Release();
        }
        child.Dispose();
        Finish(StepRunner.Result(status, StepRunner.Classify(status, _kill.Task, oomBefore: null), durationMs, stdoutBytes, stderrBytes));
    }

    private void Finish(StepResult result)
    {
        lock (_lock)
        {
            _result = result;
            _live = null;
        }
        _finished.TrySetResult();
    }

    private SafeFileHandle? TakeStdin()
    {
        lock (_lock)
        {
            var handle = _stdin;
            _stdin = null;
            return handle;
        }
    }

    private void WriteAll(SafeFileHandle pipe, byte[] data, CancellationToken cancellationToken)
    {
        var deadline = Stopwatch.StartNew();
        int offset = 0;
        while (offset < data.Length)
        {
            cancellationToken.ThrowIfCancellationRequested();
            if (deadline.Elapsed > _stdinDeadline)
            {
                throw new AgentException(ErrorCodes.StdinClosed,
                    $"command {Id} did not read its stdin for {_stdinDeadline.TotalSeconds:0} s ({offset} of {data.Length} bytes written)");
            }
            short events = Libc.Poll(pipe, Libc.PollOut, 100);
            int n = events == 0 ? 0 : (events & Libc.PollErr) != 0 ? -1 : Libc.Write(pipe, data.AsSpan(offset, Math.Min(Frame.ChunkSize, data.Length - offset)));
            if (n < 0)
            {
                throw new AgentException(ErrorCodes.StdinClosed, $"command {Id} closed its stdin ({offset} of {data.Length} bytes written)");
            }
            offset += n;
        }
    }
}

/// <summary>
/// The commands of this agent (its sandbox): at most <see cref="MaxRunning"/> running; ended ones are
/// kept for their status and output until <see cref="MaxKept"/> is reached, oldest dropped first.
/// </summary>
internal sealed class CommandTable
{
    /// <summary>Commands running at once (each holds two pump threads and up to twice its output cap).</summary>
    public const int MaxRunning = 16;

    /// <summary>Commands kept, running or ended: bounds the memory their rings take (at most 32 × 512 KiB).</summary>
    public const int MaxKept = 32;

    private readonly Lock _lock = new();
    private readonly List<Command> _commands = [];
    private long _next;

    /// <summary>Reserves a place for a new command (refused past <see cref="MaxRunning"/>).</summary>
    public Command Add(IReadOnlyList<string> argv, int outputCap)
    {
        lock (_lock)
        {
            if (_commands.Count(c => c.Running) >= MaxRunning)
            {
                throw new AgentException(ErrorCodes.TooManyCommands,
                    $"{MaxRunning} commands are running in this sandbox; wait for one to end or kill one");
            }
            while (_commands.Count >= MaxKept && _commands.FindIndex(c => !c.Running) is int oldest and >= 0)
            {
                _commands.RemoveAt(oldest);
            }
            var command = new Command($"c{++_next}", argv, outputCap);
            _commands.Add(command);
            return command;
        }
    }

    /// <summary>Forgets a command that never started (its request was refused).</summary>
    public void Remove(Command command)
    {
        lock (_lock)
        {
            _commands.Remove(command);
        }
    }

    public Command Get(string id)
    {
        lock (_lock)
        {
            return _commands.Find(c => c.Id == id)
                ?? throw new AgentException(ErrorCodes.CommandNotFound, $"no command '{id}' in this sandbox");
        }
    }

    public List<Command> List()
    {
        lock (_lock)
        {
            return [.. _commands];
        }
    }
}
