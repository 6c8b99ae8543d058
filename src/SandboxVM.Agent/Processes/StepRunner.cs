using System.Diagnostics;
using System.Text;
using Microsoft.Win32.SafeHandles;
using SandboxVM.Agent.Files;
using SandboxVM.Agent.Native;
using SandboxVM.Protocol;

namespace SandboxVM.Agent.Processes;

/// <summary>
/// One program to run: argv, where (<paramref name="Cwd"/>, open as <paramref name="CwdHandle"/>), as whom,
/// with what, and its limits.
/// </summary>
internal sealed record StepSpec(
    IReadOnlyList<string> Argv,
    string Cwd,
    SafeFileHandle CwdHandle,
    SandboxUser User,
    IReadOnlyDictionary<string, string> Environment,
    byte[]? Stdin,
    int TimeoutMs,
    long OutputLimitBytes);

/// <summary>Where a step's output goes. Called from the pump threads; blocks until the frame is written.</summary>
internal interface IStepOutput
{
    void Write(FrameType stream, ReadOnlyMemory<byte> data);
}

/// <summary>
/// Runs one step in its own process group and streams its output. Ends when the main process has
/// exited (or was killed on timeout, output limit or cancel), the rest of its group has been killed,
/// and the pipes are drained or the drain deadline passed.
/// </summary>
internal static class StepRunner
{
    /// <summary>How long output may still arrive after the main process exited and its group was killed.</summary>
    internal static readonly TimeSpan DrainDeadline = TimeSpan.FromMilliseconds(300);

    /// <summary>Pump threads wake this often to notice that they should stop.</summary>
    private const int PollSliceMs = 100;

    /// <summary>Chunks a pump may still read once stopped: more than a pipe buffer (64 KiB by default) holds.</summary>
    private const int MaxChunksAfterStop = 16;

    public static async Task<StepResult> RunAsync(StepSpec spec, ProcessSupervisor supervisor, IStepOutput output,
        bool detectOom, CancellationToken cancellationToken)
    {
        string? path = await UserFiles.ResolveExecutableAsync(spec.User, spec.Argv[0], spec.Cwd, spec.Environment.GetValueOrDefault("PATH"));
        if (path is null)
        {
            return Failed(output, 127, $"{spec.Argv[0]}: command not found");
        }
        if (cancellationToken.IsCancellationRequested)
        {
            return new StepResult { Reason = TerminationReason.Cancelled };
        }

        long? oomBefore = detectOom ? ReadOomKillCount() : null;
        var stopwatch = Stopwatch.StartNew();
        ChildProcess child;
        try
        {
            child = supervisor.Start(path, spec.Argv, [.. spec.Environment.Select(kv => $"{kv.Key}={kv.Value}")], spec.CwdHandle, spec.User);
        }
        catch (SpawnException e)
        {
            return Failed(output, e.Errno is Libc.EAccess or Libc.ENoExec ? 126 : 127, e.Message);
        }
        return await SuperviseAsync(child, spec, output, oomBefore, stopwatch, cancellationToken);
    }

    /// <summary>
    /// The part of a step after its main process started: stdin, output pumps, limits, the wait, the group
    /// kill and the drain. <paramref name="oomBefore"/> is the OOM kill count read before the start (null:
    /// no OOM detection); <paramref name="stopwatch"/> runs since the start.
    /// </summary>
    public static async Task<StepResult> SuperviseAsync(IStepProcess child, StepSpec spec, IStepOutput output, long? oomBefore,
        Stopwatch stopwatch, CancellationToken cancellationToken)
    {
        var kill = new TaskCompletionSource<TerminationReason>(TaskCreationOptions.RunContinuationsAsynchronously);
        var budget = new OutputBudget(spec.OutputLimitBytes);
        using var stopPumps = new CancellationTokenSource();
        using var stopStdin = new CancellationTokenSource();
        Task<long> stdoutPump = StartThread(() => Pump(child.Stdout, FrameType.Stdout, budget, output, kill, stopPumps.Token));
        Task<long> stderrPump = StartThread(() => Pump(child.Stderr, FrameType.Stderr, budget, output, kill, stopPumps.Token));
        Task stdinFeed = Task.CompletedTask;
        if (spec.Stdin is { Length: > 0 } stdin)
        {
            stdinFeed = StartThread(() => FeedStdin(child.Stdin, stdin, stopStdin.Token));
        }
        else
        {
            // An empty stdin: the child reads end of file at once.
            child.Stdin.Dispose();
        }

        WaitStatus status;
        using (var timeout = new CancellationTokenSource(spec.TimeoutMs))
        using (timeout.Token.Register(() => kill.TrySetResult(TerminationReason.Timeout)))
        using (cancellationToken.Register(() => kill.TrySetResult(TerminationReason.Cancelled)))
        {
            if (await Task.WhenAny(child.Exited, kill.Task) != child.Exited)
            {
                // A timed-out kernel run is interrupted first, as Jupyter does, so the notebook's
                // state outlives it; a run that does not end within the grace is killed with its kernel.
                if (kill.Task.Result != TerminationReason.Timeout || !child.Interrupt()
                    || await Task.WhenAny(child.Exited, Task.Delay(ExecLimits.KernelInterruptGrace, cancellationToken)) != child.Exited)
                {
                    child.Kill();
                }
            }
            status = await child.Exited;
        }
        long durationMs = stopwatch.ElapsedMilliseconds;

        // The main process is gone: whatever it left running in its group goes too, which closes the pipes.
        child.KillRemainingGroup();
        await stopStdin.CancelAsync();
        Task pumps = Task.WhenAll(stdoutPump, stderrPump);
        if (await Task.WhenAny(pumps, Task.Delay(DrainDeadline, CancellationToken.None)) != pumps)
        {
            // Something outside the group (it called setsid) still holds the pipes.
            await stopPumps.CancelAsync();
        }
        long stdoutBytes = await stdoutPump;
        long stderrBytes = await stderrPump;
        await stdinFeed;
        child.Dispose();

        return Result(status, Classify(status, kill.Task, oomBefore), durationMs, stdoutBytes, stderrBytes);
    }

    /// <summary>The outcome of a step (or command) whose main process ended with <paramref name="status"/> for <paramref name="reason"/>.</summary>
    internal static StepResult Result(WaitStatus status, TerminationReason reason, long durationMs, long stdoutBytes, long stderrBytes) => new()
    {
        Reason = reason,
        ExitCode = reason == TerminationReason.Exited ? status.ExitCode : -1,
        Signal = status.Signal,
        DurationMs = durationMs,
        StdoutBytes = stdoutBytes,
        StderrBytes = stderrBytes,
    };

    internal static TerminationReason Classify(WaitStatus status, Task<TerminationReason> kill, long? oomBefore)
    {
        if (kill.IsCompletedSuccessfully)
        {
            return kill.Result;
        }
        if (status.IsUnknown)
        {
            return TerminationReason.Exited;
        }
        if (status.Signaled)
        {
            // The kernel's OOM killer sends SIGKILL; its counter tells it apart from a kill by the program itself.
            return oomBefore is { } before && status.Signal == Libc.SigKill && ReadOomKillCount() > before
                ? TerminationReason.Oom
                : TerminationReason.Signal;
        }
        return TerminationReason.Exited;
    }

    private static StepResult Failed(IStepOutput output, int exitCode, string message)
    {
        byte[] text = Encoding.UTF8.GetBytes($"sandboxvm-agent: {message}\n");
        output.Write(FrameType.Stderr, text);
        return new StepResult { Reason = TerminationReason.Exited, ExitCode = exitCode, StderrBytes = text.Length };
    }

    internal static Task<T> StartThread<T>(Func<T> body) =>
        Task.Factory.StartNew(body, CancellationToken.None, TaskCreationOptions.LongRunning, TaskScheduler.Default);

    internal static Task StartThread(Action body) =>
        Task.Factory.StartNew(body, CancellationToken.None, TaskCreationOptions.LongRunning, TaskScheduler.Default);

    /// <summary>Copies one pipe to frames until end of file or <paramref name="stop"/>; returns the bytes sent.</summary>
    internal static long Pump(SafeFileHandle pipe, FrameType stream, OutputBudget budget, IStepOutput output,
        TaskCompletionSource<TerminationReason> kill, CancellationToken stop)
    {
        byte[] buffer = new byte[Frame.ChunkSize];
        long sent = 0;
        // Once told to stop, what is already buffered in the pipe is still sent (a slow host must not
        // lose it), but only a bounded amount: a writer outside the group may never stop.
        int chunksAfterStop = MaxChunksAfterStop;
        try
        {
            while (true)
            {
                bool stopping = stop.IsCancellationRequested;
                if (stopping && chunksAfterStop-- == 0)
                {
                    break;
                }
                if (Libc.Poll(pipe, Libc.PollIn, stopping ? 0 : PollSliceMs) == 0)
                {
                    if (stopping)
                    {
                        break;
                    }
                    continue;
                }
                int n = Libc.Read(pipe, buffer);
                if (n == 0)
                {
                    break;
                }
                if (n < 0)
                {
                    continue;
                }
                int allowed = budget.Take(n);
                if (allowed > 0)
                {
                    output.Write(stream, buffer.AsMemory(0, allowed));
                    sent += allowed;
                }
                if (allowed < n)
                {
                    // Past the cap: keep reading (and dropping) so the writers never block while they are killed.
                    kill.TrySetResult(TerminationReason.OutputLimit);
                }
            }
        }
        catch (IOException e)
        {
            AgentLog.Write($"{stream} pipe: {e.Message}");
        }
        return sent;
    }

    internal static void FeedStdin(SafeFileHandle pipe, byte[] data, CancellationToken stop)
    {
        using (pipe)
        {
            int offset = 0;
            try
            {
                while (offset < data.Length && !stop.IsCancellationRequested)
                {
                    short events = Libc.Poll(pipe, Libc.PollOut, PollSliceMs);
                    if (events == 0)
                    {
                        continue;
                    }
                    if ((events & Libc.PollErr) != 0)
                    {
                        break;
                    }
                    int n = Libc.Write(pipe, data.AsSpan(offset, Math.Min(Frame.ChunkSize, data.Length - offset)));
                    if (n < 0)
                    {
                        break;
                    }
                    offset += n;
                }
            }
            catch (IOException e)
            {
                AgentLog.Write($"stdin pipe: {e.Message}");
            }
        }
    }

    internal static long ReadOomKillCount()
    {
        try
        {
            foreach (string line in File.ReadLines("/proc/vmstat"))
            {
                if (line.StartsWith("oom_kill ", StringComparison.Ordinal) && long.TryParse(line.AsSpan(9), out long count))
                {
                    return count;
                }
            }
        }
        catch (Exception e) when (AgentException.IsIo(e))
        {
            // No /proc: no OOM detection.
        }
        return 0;
    }

    /// <summary>The stdout+stderr byte cap of one step, shared by both pumps.</summary>
    internal sealed class OutputBudget(long limit)
    {
        private readonly Lock _lock = new();
        private long _used;

        /// <summary>How many of <paramref name="count"/> new bytes may still be sent.</summary>
        public int Take(int count)
        {
            lock (_lock)
            {
                long room = Math.Max(0, limit - _used);
                int allowed = (int)Math.Min(room, count);
                _used += allowed;
                return allowed;
            }
        }
    }
}
