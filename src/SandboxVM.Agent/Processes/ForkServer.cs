using System.Buffers.Binary;
using System.Text;
using System.Text.Json;
using Microsoft.Win32.SafeHandles;
using SandboxVM.Agent.Files;
using SandboxVM.Agent.Native;

namespace SandboxVM.Agent.Processes;

/// <summary>The fork server could not take a job. <see cref="ServerBroken"/>: it should not be used again.</summary>
internal sealed class ForkServerException(string message, bool serverBroken) : Exception(message)
{
    public bool ServerBroken { get; } = serverBroken;
}

/// <summary>
/// How to start a fork server: the interpreter part of a run argv, resolved, plus what it preloads.
/// <see cref="Kernel"/>: start it as a kernel (<c>--kernel</c>), which runs jobs itself instead of forking.
/// </summary>
internal sealed record ForkServerLaunch(
    string Key,
    string InterpreterPath,
    IReadOnlyList<string> Interpreter,
    IReadOnlyList<string> Preload,
    IReadOnlyList<string> Environment,
    string Cwd,
    bool Kernel = false);

/// <summary>
/// One running fork server (forkserver.py, embedded in the agent): a background child of the agent, in
/// its own session, listening on a unix socket in a private 0700 directory. It lives until it is
/// retired (its stdin is closed: it finishes its jobs and exits), killed, or dies. Started as a kernel
/// it runs each job in its own interpreter (see <see cref="KernelHost"/>).
/// </summary>
internal sealed class ForkServer
{
    private const string ResourceName = "forkserver.py";

    /// <summary>Lines of the server's stderr kept to explain a failed start.</summary>
    private const int StderrTailLines = 20;

    /// <summary>How long a server may take to read a job and fork it before it counts as wedged.</summary>
    private static readonly TimeSpan _forkDeadline = TimeSpan.FromSeconds(10);

    private const int SendTimeoutMs = 5_000;

    private readonly ChildProcess _process;
    private readonly SandboxUser _user;
    private readonly string _directory;
    private readonly string _socketPath;

    private ForkServer(string key, string name, ChildProcess process, SandboxUser user, string directory, string socketPath)
    {
        Key = key;
        Name = name;
        _process = process;
        _user = user;
        _directory = directory;
        _socketPath = socketPath;
    }

    public string Key { get; }
    /// <summary>"fork server PID" or "kernel PID", for the log.</summary>
    public string Name { get; }
    public int Pid => _process.Pid;
    public bool IsAlive => !_process.Exited.IsCompleted;
    public Task<WaitStatus> Exited => _process.Exited;

    /// <summary>Starts a server and waits until it has imported its modules and listens. Throws <see cref="ForkServerException"/>.</summary>
    public static async Task<ForkServer> StartAsync(ForkServerLaunch launch, ProcessSupervisor supervisor, TimeSpan deadline)
    {
        var user = supervisor.User;
        string directory;
        string script;
        string socketPath;
        try
        {
            // A fresh 0700 directory made as the user the server runs as (it binds its socket there):
            // nobody but that user and the agent can reach the socket, and the server also checks that the
            // peer is the agent. The agent writes into it as that user too: it is the user's to change.
            directory = await UserFiles.CreatePrivateDirectoryAsync(user,
                Path.TrimEndingDirectorySeparator(Path.GetFullPath(Path.GetTempPath())), "sandboxvm-fork-");
            script = Path.Combine(directory, ResourceName);
            socketPath = Path.Combine(directory, "sock");
            using var resource = typeof(ForkServer).Assembly.GetManifestResourceStream(ResourceName)
                ?? throw new ForkServerException($"resource {ResourceName} is missing from the agent", serverBroken: true);
            var handle = await UserFiles.OpenWriteAsync(user, script, UserFiles.DefaultFileMode);
            await using var file = new FileStream(handle!, FileAccess.Write, bufferSize: 0);
            await resource.CopyToAsync(file, CancellationToken.None);
        }
        catch (Exception e) when (AgentException.IsIo(e) || e is AgentException)
        {
            throw new ForkServerException($"cannot write the fork server: {e.Message}", serverBroken: true);
        }
        if (Encoding.UTF8.GetByteCount(socketPath) >= Libc.MaxUnixPathBytes)
        {
            await DeleteDirectoryAsync(user, directory);
            throw new ForkServerException($"socket path {socketPath} is too long for a unix socket", serverBroken: true);
        }

        string[] argv = [.. launch.Interpreter, script, socketPath, Environment.ProcessId.ToString(),
            .. launch.Kernel ? ["--kernel"] : Array.Empty<string>(), .. launch.Preload];
        ChildProcess process;
        try
        {
            using var cwd = await UserFiles.OpenDirectoryAsync(user, launch.Cwd);
            process = supervisor.Start(launch.InterpreterPath, argv, launch.Environment, cwd, background: true);
        }
        catch (Exception e) when (e is SpawnException or AgentException)
        {
            await DeleteDirectoryAsync(user, directory);
            throw new ForkServerException(e.Message, serverBroken: true);
        }
        _ = process.Exited.ContinueWith(_ => DeleteDirectoryAsync(user, directory), CancellationToken.None,
            TaskContinuationOptions.ExecuteSynchronously, TaskScheduler.Default);

        var ready = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var stderrTail = new Queue<string>();
        string name = $"{(launch.Kernel ? "kernel" : "fork server")} {process.Pid}";
        string prefix = name + ": ";
        Task stdoutLog = LogLines(process.Stdout, line =>
        {
            if (line == "ready" && ready.TrySetResult())
            {
                return;
            }
            AgentLog.Write(prefix + line);
        });
        Task stderrLog = LogLines(process.Stderr, line =>
        {
            lock (stderrTail)
            {
                stderrTail.Enqueue(line);
                if (stderrTail.Count > StderrTailLines)
                {
                    stderrTail.Dequeue();
                }
            }
            AgentLog.Write(prefix + line);
        });

        Task done = await Task.WhenAny(ready.Task, process.Exited, Task.Delay(deadline, CancellationToken.None));
        if (done == ready.Task)
        {
            return new ForkServer(launch.Key, name, process, user, directory, socketPath);
        }
        Libc.KillGroup(process.Pid);
        string why = done == process.Exited ? "it exited" : $"it was not ready within {deadline.TotalSeconds:0} s";
        // The last words of a crashed server explain it (a bad interpreter, a broken import...).
        await Task.WhenAny(Task.WhenAll(stdoutLog, stderrLog), Task.Delay(500, CancellationToken.None));
        string tail;
        lock (stderrTail)
        {
            tail = string.Join(" | ", stderrTail);
        }
        string kind = launch.Kernel ? "kernel" : "fork server";
        throw new ForkServerException($"the {kind} did not start: {why}" + (tail.Length > 0 ? $": {tail}" : ""), serverBroken: true);
    }

    /// <summary>
    /// Hands a job to the server: fresh stdio pipes, the child's ends sent with the job. Returns once the
    /// child exists and leads its own process group. Throws <see cref="ForkServerException"/> when no
    /// child runs (then nothing of the job is left behind).
    /// </summary>
    public async Task<ForkedStep> StartJobAsync(ForkJob job, ProcessSupervisor supervisor)
    {
        var sent = await SendJobAsync(job);
        supervisor.TrackGroup(sent.Pid);
        return new ForkedStep(sent.Pid, sent.Stdin, sent.Stdout, sent.Stderr, sent.Connection, supervisor);
    }

    /// <summary>
    /// Kernel: hands it the job, which it runs itself on fresh stdio pipes. Returns once the kernel has
    /// taken it. Throws <see cref="ForkServerException"/> when it did not.
    /// </summary>
    public async Task<KernelStep> StartKernelRunAsync(ForkJob job, ProcessSupervisor supervisor)
    {
        var sent = await SendJobAsync(job);
        if (sent.Pid != Pid)
        {
            sent.Connection.Dispose();
            sent.Stdin.Dispose();
            sent.Stdout.Dispose();
            sent.Stderr.Dispose();
            throw new ForkServerException($"{Name} answered pid {sent.Pid}, not its own", serverBroken: true);
        }
        supervisor.TrackGroup(Pid);
        return new KernelStep(this, sent.Stdin, sent.Stdout, sent.Stderr, sent.Connection, supervisor);
    }

    /// <summary>The agent's ends of a job's pipes and connection, and the pid the server announced.</summary>
    private sealed record SentJob(int Pid, SafeFileHandle Stdin, SafeFileHandle Stdout, SafeFileHandle Stderr, JobConnection Connection);

    private async Task<SentJob> SendJobAsync(ForkJob job)
    {
        Libc.CreateStdioPipes(out var stdin, out var stdout, out var stderr, out var childStdin, out var childStdout, out var childStderr);
        JobConnection? connection = null;
        try
        {
            SafeFileHandle socket;
            try
            {
                socket = await UserFiles.ConnectUnixAsync(_user, _socketPath);
            }
            catch (IOException e)
            {
                throw new ForkServerException(e.Message, serverBroken: true);
            }
            connection = new JobConnection(socket, Name);
            byte[] body = JsonSerializer.SerializeToUtf8Bytes(job, ForkJobJson.Default.ForkJob);
            byte[] message = new byte[4 + body.Length];
            BinaryPrimitives.WriteUInt32BigEndian(message, (uint)body.Length);
            body.CopyTo(message, 4);
            try
            {
                Libc.SendWithFds(socket, message, [childStdin, childStdout, childStderr], SendTimeoutMs);
            }
            catch (IOException e)
            {
                throw new ForkServerException($"cannot send the job: {e.Message}", serverBroken: true);
            }
            // The server holds its own copies now; the child's ends must not stay open here, or the
            // agent would never read end of file on stdout/stderr.
            childStdin.Dispose();
            childStdout.Dispose();
            childStderr.Dispose();

            int pid = await WaitForPidAsync(connection);
            var sent = new SentJob(pid, stdin, stdout, stderr, connection);
            connection = null;
            return sent;
        }
        catch
        {
            connection?.Dispose();
            stdin.Dispose();
            stdout.Dispose();
            stderr.Dispose();
            childStdin.Dispose();
            childStdout.Dispose();
            childStderr.Dispose();
            throw;
        }
    }

    private async Task<int> WaitForPidAsync(JobConnection connection)
    {
        Task<int> pid = connection.Pid;
        if (await Task.WhenAny(pid, Task.Delay(_forkDeadline, CancellationToken.None)) == pid)
        {
            return await pid; // or the server's "error" / end of file, as a ForkServerException
        }
        // Wedged. Once it is dead, a child it forked in the meantime has been announced (the pid goes
        // out before anything else happens): kill that one too, so the job never runs twice.
        Kill();
        await Task.WhenAny(_process.Exited, Task.Delay(TimeSpan.FromSeconds(2), CancellationToken.None));
        await Task.WhenAny(pid, Task.Delay(TimeSpan.FromMilliseconds(200), CancellationToken.None));
        if (pid.IsCompletedSuccessfully)
        {
            Libc.KillGroup(pid.Result);
        }
        throw new ForkServerException($"{Name} did not take the job within {_forkDeadline.TotalSeconds:0} s", serverBroken: true);
    }

    /// <summary>Closes the server's stdin: it takes no more jobs and exits once its running children are gone.</summary>
    public void Retire() => _process.Stdin.Dispose();

    /// <summary>SIGKILL to the server (its jobs lead groups of their own and are not affected).</summary>
    public void Kill()
    {
        if (IsAlive)
        {
            Libc.KillGroup(Pid);
        }
        _process.Stdin.Dispose();
    }

    /// <summary>SIGINT to the server process alone (the kernel raises KeyboardInterrupt in the job it runs).</summary>
    public bool Interrupt() => IsAlive && Libc.InterruptProcess(Pid);

    /// <summary>Kills the server and removes its directory now: the agent is exiting and will not see it reaped.</summary>
    public void KillAndClean()
    {
        Kill();
        DeleteDirectoryAsync(_user, _directory).GetAwaiter().GetResult();
    }

    /// <summary>Reads a pipe to its end on a thread of its own, one callback per line.</summary>
    private static Task LogLines(SafeFileHandle pipe, Action<string> onLine) =>
        Task.Factory.StartNew(() =>
        {
            using (pipe)
            {
                var line = new List<byte>();
                byte[] buffer = new byte[4096];
                try
                {
                    while (true)
                    {
                        int n = Libc.Read(pipe, buffer);
                        if (n == 0)
                        {
                            break;
                        }
                        for (int i = 0; i < n; i++)
                        {
                            if (buffer[i] != (byte)'\n')
                            {
                                line.Add(buffer[i]);
                                continue;
                            }
                            onLine(Encoding.UTF8.GetString([.. line]));
                            line.Clear();
                        }
                    }
                }
                catch (IOException e)
                {
                    AgentLog.Write($"fork server pipe: {e.Message}");
                }
                if (line.Count > 0)
                {
                    onLine(Encoding.UTF8.GetString([.. line]));
                }
            }
        }, CancellationToken.None, TaskCreationOptions.LongRunning, TaskScheduler.Default);

    /// <summary>Removes the server's directory as its user (it is the user's to change). Never throws.</summary>
    private static async Task DeleteDirectoryAsync(SandboxUser user, string directory)
    {
        try
        {
            await UserFiles.RemoveAsync(user, directory, recursive: true);
        }
        catch (Exception e) when (e is AgentException or InvalidOperationException || AgentException.IsIo(e))
        {
            AgentLog.Write($"cannot remove {directory}: {e.Message}");
        }
    }
}

/// <summary>
/// A step forked by the fork server. The agent did not spawn it, so it cannot reap it: the exit status
/// comes over the job's connection. If the server never reports it, the agent still decides: after its
/// own kill (timeout, output limit, cancel) it waits a short grace and then reports SIGKILL; if the
/// server dies, the status is unknown once the step's group is gone.
/// </summary>
internal sealed class ForkedStep(int pid, SafeFileHandle stdin, SafeFileHandle stdout, SafeFileHandle stderr,
    JobConnection connection, ProcessSupervisor supervisor) : IStepProcess
{
    /// <summary>How long a status may take to arrive after the agent killed the group.</summary>
    private static readonly TimeSpan _statusGrace = TimeSpan.FromSeconds(2);

    public int Pid { get; } = pid;
    public SafeFileHandle Stdin { get; } = stdin;
    public SafeFileHandle Stdout { get; } = stdout;
    public SafeFileHandle Stderr { get; } = stderr;
    public Task<WaitStatus> Exited => connection.Exited;

    public void Kill()
    {
        Libc.KillGroup(Pid);
        connection.ExpectDeathOf(Pid, _statusGrace);
    }

    public void KillRemainingGroup() => supervisor.KillAndForgetGroup(Pid);

    public void Dispose()
    {
        connection.Dispose();
        Stdin.Dispose();
        Stdout.Dispose();
        Stderr.Dispose();
    }
}

/// <summary>
/// A run in the kernel. The kernel is the agent's own child, so when it dies (killed on timeout,
/// output limit or cancel, or on its own) its real wait status is the run's; otherwise the run's exit
/// status comes over the job's connection and the kernel, with its process group, lives on.
/// </summary>
internal sealed class KernelStep : IStepProcess
{
    private readonly ForkServer _kernel;
    private readonly JobConnection _connection;
    private readonly ProcessSupervisor _supervisor;

    public KernelStep(ForkServer kernel, SafeFileHandle stdin, SafeFileHandle stdout, SafeFileHandle stderr,
        JobConnection connection, ProcessSupervisor supervisor)
    {
        _kernel = kernel;
        _connection = connection;
        _supervisor = supervisor;
        Stdin = stdin;
        Stdout = stdout;
        Stderr = stderr;
        Exited = WaitAsync(connection.Exited, kernel.Exited);
    }

    public int Pid => _kernel.Pid;
    public SafeFileHandle Stdin { get; }
    public SafeFileHandle Stdout { get; }
    public SafeFileHandle Stderr { get; }
    public Task<WaitStatus> Exited { get; }

    /// <summary>repr() of the script's final expression, as the kernel reported it (null: none).</summary>
    public string? ResultRepr => _connection.Result;

    /// <summary>The final expression's representations by MIME type (null: none).</summary>
    public Dictionary<string, string>? ResultData => _connection.ResultData;

    /// <summary>What the run passed to display(), in order.</summary>
    public List<Dictionary<string, string>> Displays => _connection.Displays;

    /// <summary>Kills the kernel's whole group: its state is lost.</summary>
    public void Kill() => _kernel.Kill();

    /// <summary>KeyboardInterrupt in the job; the kernel, its namespace and its group live on when the job ends.</summary>
    public bool Interrupt() => _kernel.Interrupt();

    /// <summary>A live kernel keeps its group (what it runs in the background belongs to the session); a dead one's leftovers are killed.</summary>
    public void KillRemainingGroup()
    {
        if (_kernel.IsAlive)
        {
            _supervisor.ForgetGroup(Pid);
        }
        else
        {
            _supervisor.KillAndForgetGroup(Pid);
        }
    }

    public void Dispose()
    {
        _connection.Dispose();
        Stdin.Dispose();
        Stdout.Dispose();
        Stderr.Dispose();
    }

    private static async Task<WaitStatus> WaitAsync(Task<WaitStatus> reported, Task<WaitStatus> kernelExited)
    {
        if (await Task.WhenAny(reported, kernelExited) == reported && !reported.Result.IsUnknown)
        {
            return reported.Result;
        }
        // The kernel went away: the agent reaps it, so its own status is known.
        return await kernelExited;
    }
}

/// <summary>
/// The agent's side of one job connection: a thread reads the server's "pid N", "result JSON",
/// "status RAW" and "error TEXT" lines.
/// </summary>
internal sealed class JobConnection : IDisposable
{
    private const int PollSliceMs = 50;

    /// <summary>Longest line read; the kernel caps a result's repr far below it.</summary>
    private const int MaxLineBytes = 1 << 20;

    private readonly SafeFileHandle _socket;
    private readonly string _serverName;
    private readonly TaskCompletionSource<int> _pid = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private readonly TaskCompletionSource<WaitStatus> _exited = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private readonly CancellationTokenSource _stop = new();
    private readonly Task _reader;
    private int _disposed;

    public JobConnection(SafeFileHandle socket, string serverName)
    {
        _socket = socket;
        _serverName = serverName;
        _reader = Task.Factory.StartNew(ReadLoop, CancellationToken.None, TaskCreationOptions.LongRunning, TaskScheduler.Default);
    }

    /// <summary>The child's pid; faults with <see cref="ForkServerException"/> when the server ran none.</summary>
    public Task<int> Pid => _pid.Task;

    public Task<WaitStatus> Exited => _exited.Task;

    /// <summary>The text of the kernel's "result" line, once read (it comes before the status).</summary>
    public string? Result { get; private set; }

    /// <summary>The kernel's "data" line: the final expression by MIME type.</summary>
    public Dictionary<string, string>? ResultData { get; private set; }

    /// <summary>The kernel's "display" lines, in order, within <see cref="MaxRichBytes"/>.</summary>
    public List<Dictionary<string, string>> Displays { get; } = [];

    /// <summary>
    /// Rich representations (data and display lines together) kept per run: the ExecResult carrying them must
    /// fit one frame (1 MiB) beside the artifact list. The kernel caps them
    /// below this; the code it runs can write to this socket too, so the agent counts again.
    /// </summary>
    public const int MaxRichBytes = 640 << 10;

    /// <summary>display() calls kept per run.</summary>
    public const int MaxDisplays = 64;

    private int _richBytes;

    /// <summary>After a SIGKILL to the group: if no status arrives within <paramref name="grace"/>, report the kill.</summary>
    public void ExpectDeathOf(int pid, TimeSpan grace)
    {
        _ = Task.Delay(grace, _stop.Token).ContinueWith(t =>
        {
            if (!t.IsCanceled && _exited.TrySetResult(new WaitStatus(Libc.SigKill)))
            {
                AgentLog.Write($"{_serverName} did not report the status of pid {pid} after it was killed");
            }
        }, CancellationToken.None, TaskContinuationOptions.ExecuteSynchronously, TaskScheduler.Default);
    }

    public void Dispose()
    {
        if (Interlocked.Exchange(ref _disposed, 1) != 0)
        {
            return;
        }
        _stop.Cancel();
        // The reader wakes within a poll slice; the socket is closed once it has stopped using it.
        _ = _reader.ContinueWith(_ =>
        {
            _socket.Dispose();
            _stop.Dispose();
        }, CancellationToken.None, TaskContinuationOptions.ExecuteSynchronously, TaskScheduler.Default);
    }

    private void ReadLoop()
    {
        // Bytes of the line read so far; a line is decoded once it is whole (UTF-8 may span reads).
        var line = new MemoryStream();
        bool overlong = false;
        byte[] buffer = new byte[16 * 1024];
        var stop = _stop.Token;
        try
        {
            while (!stop.IsCancellationRequested)
            {
                if (Libc.Poll(_socket, Libc.PollIn, PollSliceMs) == 0)
                {
                    continue;
                }
                int n = Libc.Read(_socket, buffer);
                if (n < 0)
                {
                    continue;
                }
                if (n == 0)
                {
                    break;
                }
                int start = 0;
                int newline;
                while ((newline = Array.IndexOf(buffer, (byte)'\n', start, n - start)) >= 0)
                {
                    line.Write(buffer, start, newline - start);
                    start = newline + 1;
                    if (overlong || line.Length > MaxLineBytes)
                    {
                        AgentLog.Write($"{_serverName} sent a line of more than {MaxLineBytes} bytes; ignored");
                    }
                    else if (OnLine(Encoding.UTF8.GetString(line.GetBuffer(), 0, (int)line.Length)))
                    {
                        return;
                    }
                    line.SetLength(0);
                    overlong = false;
                }
                if (!overlong)
                {
                    line.Write(buffer, start, n - start);
                    if (line.Length > MaxLineBytes)
                    {
                        overlong = true; // the rest of this line is dropped
                        line.SetLength(0);
                    }
                }
            }
        }
        catch (IOException e)
        {
            AgentLog.Write($"{_serverName} connection: {e.Message}");
        }
        if (stop.IsCancellationRequested)
        {
            _pid.TrySetException(new ForkServerException("job abandoned", serverBroken: false));
            return;
        }
        // End of file without a status: the server died.
        if (_pid.TrySetException(new ForkServerException($"{_serverName} closed the connection without taking the job", serverBroken: true)))
        {
            return;
        }
        int pid = _pid.Task.Result;
        AgentLog.Write($"{_serverName} went away while pid {pid} ran; its exit status is lost");
        // Its children now belong to the agent (a subreaper), which reaps them without a status for us:
        // the step is over when its group is empty.
        while (!stop.IsCancellationRequested && !_exited.Task.IsCompleted && Libc.GroupExists(pid))
        {
            Thread.Sleep(PollSliceMs);
        }
        _exited.TrySetResult(WaitStatus.Unknown);
    }

    /// <summary>Handles one line; true when the connection has nothing more to say.</summary>
    private bool OnLine(string line)
    {
        int space = line.IndexOf(' ', StringComparison.Ordinal);
        string verb = space < 0 ? line : line[..space];
        string argument = space < 0 ? "" : line[(space + 1)..];
        switch (verb)
        {
            case "pid" when int.TryParse(argument, out int pid) && pid > 1:
                _pid.TrySetResult(pid);
                return false;
            case "result":
                try
                {
                    Result = JsonSerializer.Deserialize(argument, ForkJobJson.Default.String);
                }
                catch (JsonException e)
                {
                    AgentLog.Write($"{_serverName} sent a bad result line: {e.Message}");
                }
                return false;
            case "data" or "display":
                if (_richBytes + argument.Length > MaxRichBytes || (verb == "display" && Displays.Count >= MaxDisplays))
                {
                    AgentLog.Write($"{_serverName} sent more rich results than a run keeps ({MaxRichBytes} bytes, {MaxDisplays} displays); dropped");
                    return false;
                }
                try
                {
                    var bundle = JsonSerializer.Deserialize(argument, ForkJobJson.Default.DictionaryStringString);
                    if (bundle is { Count: > 0 })
                    {
                        _richBytes += argument.Length;
                        if (verb == "data")
                        {
                            ResultData = bundle;
                        }
                        else
                        {
                            Displays.Add(bundle);
                        }
                    }
                }
                catch (JsonException e)
                {
                    AgentLog.Write($"{_serverName} sent a bad {verb} line: {e.Message}");
                }
                return false;
            case "status" when int.TryParse(argument, out int raw):
                _exited.TrySetResult(new WaitStatus(raw));
                return true;
            case "error":
                _pid.TrySetException(new ForkServerException($"{_serverName}: {argument}", serverBroken: false));
                return true;
            default:
                AgentLog.Write($"{_serverName} said something unexpected: {line}");
                return false;
        }
    }
}
