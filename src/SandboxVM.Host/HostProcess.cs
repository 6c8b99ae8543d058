using System.Diagnostics;
using System.Text;

namespace SandboxVM.Host;

/// <summary>A host program (mmdebstrap, a build step, mkfs.ext4, runsc, qemu --version, ...) failed or could not start.</summary>
public sealed class ExternalCommandException : Exception
{
    public ExternalCommandException()
        : this("", -1, "")
    {
    }

    public ExternalCommandException(string message)
        : base(message)
    {
        Command = "";
        ExitCode = -1;
        OutputTail = "";
    }

    public ExternalCommandException(string message, Exception innerException)
        : base(message, innerException)
    {
        Command = "";
        ExitCode = -1;
        OutputTail = "";
    }

    public ExternalCommandException(string command, int exitCode, string outputTail)
        : base($"`{command}` failed with exit code {exitCode}" + (outputTail.Length > 0 ? ":\n" + outputTail : " and printed nothing"))
    {
        Command = command;
        ExitCode = exitCode;
        OutputTail = outputTail;
    }

    /// <summary>The command line, shell-quoted for display (it was never run through a shell).</summary>
    public string Command { get; }

    public int ExitCode { get; }

    /// <summary>The last lines of stderr (of stdout when stderr was empty).</summary>
    public string OutputTail { get; }
}

/// <summary>What to run: a program and an argv list (never a shell string), and how.</summary>
/// <param name="FileName">Program to run (looked up in PATH when not absolute).</param>
/// <param name="Arguments">Arguments, passed verbatim.</param>
public sealed record HostCommand(string FileName, IReadOnlyList<string> Arguments)
{
    /// <summary>When not null, the child gets exactly this environment.</summary>
    public IReadOnlyDictionary<string, string>? Environment { get; init; }

    /// <summary>Current directory of the child, or null for ours.</summary>
    public string? WorkingDirectory { get; init; }

    /// <summary>Receives every stderr line, and every stdout line unless <see cref="StdoutTo"/> is set; serialized.</summary>
    public Action<string>? OnLine { get; init; }

    /// <summary>When not null, stdout is copied here as raw bytes instead of being read as text.</summary>
    public Stream? StdoutTo { get; init; }

    /// <summary>Written to the child's stdin, which is then closed (empty: closed at once, so no tool waits on a terminal).</summary>
    public ReadOnlyMemory<byte> Stdin { get; init; }

    /// <summary>
    /// When not null, runs once the process has started, before its stdout is read: it may read the first
    /// lines and write to stdin, and must close stdin. When it fails the process tree is killed and the
    /// failure reported with the command's stderr tail.
    /// </summary>
    public Func<Process, CancellationToken, Task>? Handshake { get; init; }

    /// <summary>The whole process tree is killed at this deadline and <see cref="TimeoutException"/> thrown.</summary>
    public TimeSpan? Timeout { get; init; }

    /// <summary>At most this many characters of stdout are kept (the last ones).</summary>
    public int MaxStdoutChars { get; init; } = int.MaxValue;

    /// <summary>How many of the last lines of stderr (or stdout) a failure reports.</summary>
    public int TailLines { get; init; } = 30;

    /// <summary>
    /// How many of the first lines of stderr (or stdout) are reported too, before the tail: a Go program's
    /// panic names its cause first and then prints a stack longer than any tail (runsc).
    /// </summary>
    public int HeadLines { get; init; }
}

/// <summary>How a command ended.</summary>
/// <param name="Command">The command line, shell-quoted for display.</param>
/// <param name="ExitCode">Its exit code.</param>
/// <param name="Stdout">What it wrote to stdout (after a handshake), line by line, each line ending in \n; empty with <see cref="HostCommand.StdoutTo"/>.</param>
/// <param name="OutputTail">The last lines of stderr, of stdout when stderr was empty.</param>
public sealed record HostCommandResult(string Command, int ExitCode, string Stdout, string OutputTail)
{
    /// <summary>Stdout and the tail, trimmed: what a short command said.</summary>
    public string Output => (Stdout + OutputTail).Trim();

    /// <summary>This result when the exit code is 0.</summary>
    /// <exception cref="ExternalCommandException">A non-zero exit code.</exception>
    public HostCommandResult EnsureSuccess() =>
        ExitCode == 0 ? this : throw new ExternalCommandException(Command, ExitCode, OutputTail);
}

/// <summary>
/// The one way the host assemblies run a program: started on the <see cref="SpawnThread"/>, both streams
/// drained concurrently (a full pipe never blocks the child), a bounded tail of its output kept for
/// errors, and the whole process tree killed on cancellation or timeout.
/// </summary>
public static class HostProcess
{
    /// <summary>Runs the command to its end; a non-zero exit code is a result, not an error.</summary>
    /// <exception cref="ExternalCommandException">The program could not be started, or the handshake failed.</exception>
    /// <exception cref="TimeoutException">It ran past <see cref="HostCommand.Timeout"/> (its tree was killed).</exception>
    /// <exception cref="OperationCanceledException">Cancelled (its tree was killed).</exception>
    public static async Task<HostCommandResult> RunAsync(HostCommand command, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(command);
        cancellationToken.ThrowIfCancellationRequested();
        var psi = new ProcessStartInfo(command.FileName)
        {
            UseShellExecute = false,
            RedirectStandardInput = true,
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            StandardOutputEncoding = command.StdoutTo is null ? Encoding.UTF8 : null,
            StandardErrorEncoding = Encoding.UTF8,
        };
        foreach (string a in command.Arguments)
        {
            psi.ArgumentList.Add(a);
        }
        if (command.WorkingDirectory is not null)
        {
            psi.WorkingDirectory = command.WorkingDirectory;
        }
        if (command.Environment is not null)
        {
            psi.Environment.Clear();
            foreach (var (k, v) in command.Environment)
            {
                psi.Environment[k] = v;
            }
        }

        string display = Display(command.FileName, command.Arguments);
        using var process = Start(psi, display);
        using var deadline = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
        if (command.Timeout is { } timeout)
        {
            deadline.CancelAfter(timeout);
        }

        var gate = new Lock();
        var stdout = new StringBuilder();
        var stderrTail = new KeptLines(command.HeadLines, command.TailLines);
        var stdoutTail = new KeptLines(command.HeadLines, command.TailLines);
        void Keep(KeptLines tail, string line) => tail.Add(line);
        string Tail()
        {
            lock (gate)
            {
                return (stderrTail.Count > 0 ? stderrTail : stdoutTail).ToString();
            }
        }

        // No cancellation on the pumps: the pipes close when the process (tree) exits or is killed.
        var errTask = PumpAsync(process.StandardError, line =>
        {
            lock (gate)
            {
                Keep(stderrTail, line);
                command.OnLine?.Invoke(line);
            }
        });
        if (command.Handshake is { } handshake)
        {
            try
            {
                await handshake(process, deadline.Token).ConfigureAwait(false);
            }
            catch (Exception e)
            {
                await KillAndWaitAsync(process).ConfigureAwait(false);
                await errTask.ConfigureAwait(false);
                ThrowIfEnded(command, display, cancellationToken);
                if (e is OperationCanceledException)
                {
                    throw;
                }
                throw new ExternalCommandException(display, process.ExitCode, stderrTail.Count > 0 ? stderrTail + "\n" + e.Message : e.Message);
            }
        }
        else
        {
            _ = WriteStdinAsync(process, command.Stdin);
        }
        var outTask = command.StdoutTo is { } sink
            ? process.StandardOutput.BaseStream.CopyToAsync(sink, CancellationToken.None)
            : PumpAsync(process.StandardOutput, line =>
            {
                lock (gate)
                {
                    stdout.Append(line).Append('\n');
                    if (stdout.Length > command.MaxStdoutChars)
                    {
                        stdout.Remove(0, stdout.Length - command.MaxStdoutChars);
                    }
                    Keep(stdoutTail, line);
                    command.OnLine?.Invoke(line);
                }
            });

        try
        {
            await process.WaitForExitAsync(deadline.Token).ConfigureAwait(false);
        }
        catch (OperationCanceledException)
        {
            await KillAndWaitAsync(process).ConfigureAwait(false);
            await Task.WhenAll(outTask, errTask).ConfigureAwait(false);
            ThrowIfEnded(command, display, cancellationToken);
            throw;
        }
        await Task.WhenAll(outTask, errTask).ConfigureAwait(false);
        string text;
        lock (gate)
        {
            text = stdout.ToString();
        }
        return new HostCommandResult(display, process.ExitCode, text, Tail());
    }

    /// <summary>Runs the command and returns its stdout.</summary>
    /// <exception cref="ExternalCommandException">A non-zero exit code, or the program could not be started.</exception>
    public static async Task<string> OutputAsync(HostCommand command, CancellationToken cancellationToken) =>
        (await RunAsync(command, cancellationToken).ConfigureAwait(false)).EnsureSuccess().Stdout;

    /// <summary>Runs a program with an argv list and returns its stdout (the common case of <see cref="OutputAsync(HostCommand, CancellationToken)"/>).</summary>
    /// <exception cref="ExternalCommandException">A non-zero exit code, or the program could not be started.</exception>
    public static Task<string> OutputAsync(string fileName, IReadOnlyList<string> arguments, Action<string>? onLine,
        IReadOnlyDictionary<string, string>? environment, CancellationToken cancellationToken, Func<Process, CancellationToken, Task>? handshake = null) =>
        OutputAsync(new HostCommand(fileName, arguments) { OnLine = onLine, Environment = environment, Handshake = handshake }, cancellationToken);

    /// <summary>
    /// Starts a long-lived process (QEMU, runsc, bubblewrap) on the <see cref="SpawnThread"/>; its
    /// streams are what <paramref name="psi"/> redirects, and the caller owns it.
    /// </summary>
    /// <exception cref="ExternalCommandException">The program could not be started.</exception>
    public static Process Start(ProcessStartInfo psi, string? display = null)
    {
        ArgumentNullException.ThrowIfNull(psi);
        var process = new Process { StartInfo = psi };
        try
        {
            SpawnThread.Start(process);
        }
        catch (Exception e) when (e is System.ComponentModel.Win32Exception or InvalidOperationException)
        {
            process.Dispose();
            throw new ExternalCommandException($"`{display ?? Display(psi.FileName, psi.ArgumentList)}` could not be started: {e.Message}", e);
        }
        return process;
    }

    /// <summary>SIGKILL to the process and everything it started; a process already gone is not an error.</summary>
    public static void KillTree(Process process)
    {
        ArgumentNullException.ThrowIfNull(process);
        try
        {
            process.Kill(entireProcessTree: true);
        }
        catch (InvalidOperationException)
        {
            // Already gone.
        }
    }

    /// <summary>
    /// Kills a long-lived process and everything it started unless it has exited, and waits for it.
    /// Returns false when it is still there after <paramref name="timeout"/> (or cannot be signalled).
    /// </summary>
    public static async Task<bool> KillTreeAndWaitAsync(Process process, TimeSpan timeout, TimeProvider? time = null)
    {
        ArgumentNullException.ThrowIfNull(process);
        try
        {
            if (!process.HasExited)
            {
                process.Kill(entireProcessTree: true);
            }
            await process.WaitForExitAsync().WaitAsync(timeout, time ?? TimeProvider.System).ConfigureAwait(false);
            return true;
        }
        catch (Exception e) when (e is InvalidOperationException or TimeoutException or System.ComponentModel.Win32Exception)
        {
            return false;
        }
    }

    /// <summary>Shell-quoted command line for messages and logs; long arguments are shortened.</summary>
    public static string Display(string fileName, IEnumerable<string> arguments)
    {
        ArgumentNullException.ThrowIfNull(arguments);
        var sb = new StringBuilder(Quote(fileName));
        foreach (string a in arguments)
        {
            sb.Append(' ').Append(Quote(a.Length > 300 ? a[..300] + "..." : a));
        }
        return sb.ToString();
    }

    private static void ThrowIfEnded(HostCommand command, string display, CancellationToken cancellationToken)
    {
        cancellationToken.ThrowIfCancellationRequested();
        if (command.Timeout is { } timeout)
        {
            throw new TimeoutException($"`{display}` did not finish within {timeout.TotalSeconds:0.#} s");
        }
    }

    private static async Task KillAndWaitAsync(Process process)
    {
        KillTree(process);
        await process.WaitForExitAsync(CancellationToken.None).ConfigureAwait(false);
    }

    private static async Task WriteStdinAsync(Process process, ReadOnlyMemory<byte> input)
    {
        try
        {
            if (!input.IsEmpty)
            {
                await process.StandardInput.BaseStream.WriteAsync(input, CancellationToken.None).ConfigureAwait(false);
            }
            process.StandardInput.Close();
        }
        catch (Exception e) when (e is IOException or ObjectDisposedException)
        {
            // The child exited without reading it all (EPIPE): its exit code says what happened.
        }
    }

    private static string Quote(string s) =>
        s.Length > 0 && s.All(c => char.IsAsciiLetterOrDigit(c) || "_-./=:,+@%".Contains(c, StringComparison.Ordinal))
            ? s
            : "'" + s.Replace("'", "'\\''", StringComparison.Ordinal) + "'";

    private static async Task PumpAsync(StreamReader reader, Action<string> onLine)
    {
        while (await reader.ReadLineAsync(CancellationToken.None).ConfigureAwait(false) is { } line)
        {
            onLine(line);
        }
    }
}

/// <summary>The first <c>head</c> and the last <c>tail</c> lines of a stream, and (with a head) how many were left out between.</summary>
internal sealed class KeptLines(int head, int tail)
{
    private readonly List<string> _head = [];
    private readonly Queue<string> _tail = new();

    /// <summary>Lines seen.</summary>
    public int Count { get; private set; }

    public void Add(string line)
    {
        Count++;
        if (_head.Count < head)
        {
            _head.Add(line);
            return;
        }
        _tail.Enqueue(line);
        if (_tail.Count > tail)
        {
            _tail.Dequeue();
        }
    }

    public override string ToString()
    {
        int skipped = Count - _head.Count - _tail.Count;
        // Without a head it is a plain tail, as it always was.
        return string.Join('\n', skipped > 0 && head > 0 ? [.. _head, $"[... {skipped} lines ...]", .. _tail] : _head.Concat(_tail));
    }
}
