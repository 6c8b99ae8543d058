using System.Diagnostics;
using System.Text;

namespace SandboxVM.Images;

/// <summary>An external tool (mmdebstrap, a build step, mkfs.ext4, ...) failed.</summary>
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

/// <summary>Runs a program with an argv list (never a shell string), streams its output lines and
/// kills the whole process tree on cancellation.</summary>
internal static class ExternalCommand
{
    private const int TailLines = 30;

    /// <param name="fileName">Program to run (looked up in PATH when not absolute).</param>
    /// <param name="arguments">Arguments, passed verbatim.</param>
    /// <param name="onLine">Receives every stdout and stderr line, serialized; may be null.</param>
    /// <param name="environment">When not null, the child gets exactly this environment.</param>
    /// <param name="cancellationToken">Kills the process tree and throws.</param>
    /// <param name="handshake">When not null, runs once the process has started, before its stdout is
    /// read line by line: it may read the first lines and write to stdin, and must close stdin. When it
    /// fails the process tree is killed and the failure reported with the command's stderr.</param>
    /// <returns>What the command wrote to stdout after the handshake, line by line, each line ending in \n.</returns>
    /// <exception cref="ExternalCommandException">The command exited with a non-zero code or could not start.</exception>
    public static async Task<string> RunAsync(
        string fileName,
        IReadOnlyList<string> arguments,
        Action<string>? onLine,
        IReadOnlyDictionary<string, string>? environment,
        CancellationToken cancellationToken,
        Func<Process, CancellationToken, Task>? handshake = null)
    {
        cancellationToken.ThrowIfCancellationRequested();
        var psi = new ProcessStartInfo(fileName)
        {
            UseShellExecute = false,
            RedirectStandardInput = true,
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            StandardOutputEncoding = Encoding.UTF8,
            StandardErrorEncoding = Encoding.UTF8,
        };
        foreach (var a in arguments)
            psi.ArgumentList.Add(a);
        if (environment is not null)
        {
            psi.Environment.Clear();
            foreach (var (k, v) in environment)
                psi.Environment[k] = v;
        }

        var display = Display(fileName, arguments);
        using var process = Start(psi, display, closeStdin: handshake is null);

        var gate = new Lock();
        var stdout = new StringBuilder();
        var stderrTail = new Queue<string>();
        var stdoutTail = new Queue<string>();
        var errTask = PumpAsync(process.StandardError, line =>
        {
            lock (gate)
            {
                Keep(stderrTail, line);
                onLine?.Invoke(line);
            }
        });
        if (handshake is not null)
        {
            try
            {
                await handshake(process, cancellationToken).ConfigureAwait(false);
            }
            catch (Exception e)
            {
                KillTree(process);
                await process.WaitForExitAsync(CancellationToken.None).ConfigureAwait(false);
                await errTask.ConfigureAwait(false);
                if (e is OperationCanceledException)
                    throw;
                throw new ExternalCommandException(display, process.ExitCode, string.Join('\n', stderrTail.Append(e.Message)));
            }
        }
        var outTask = PumpAsync(process.StandardOutput, line =>
        {
            lock (gate)
            {
                stdout.Append(line).Append('\n');
                Keep(stdoutTail, line);
                onLine?.Invoke(line);
            }
        });

        await WaitOrKillAsync(process, cancellationToken).ConfigureAwait(false);
        await Task.WhenAll(outTask, errTask).ConfigureAwait(false);
        if (process.ExitCode != 0)
        {
            var tail = stderrTail.Count > 0 ? stderrTail : stdoutTail;
            throw new ExternalCommandException(display, process.ExitCode, string.Join('\n', tail));
        }

        return stdout.ToString();
    }

    /// <summary>
    /// Starts a process whose stdin, stdout and stderr are redirected; stdin is closed at once unless
    /// <paramref name="closeStdin"/> is false (nothing else is fed to it; end of file keeps tools from
    /// waiting on a terminal).
    /// </summary>
    /// <exception cref="ExternalCommandException">The program could not be started.</exception>
    internal static Process Start(ProcessStartInfo psi, string display, bool closeStdin = true)
    {
        var process = new Process { StartInfo = psi };
        try
        {
            // Build steps' bubblewrap dies with its parent: the server, not a pool thread.
            SpawnThread.Start(process);
        }
        catch (Exception e) when (e is System.ComponentModel.Win32Exception or InvalidOperationException)
        {
            process.Dispose();
            throw new ExternalCommandException($"`{display}` could not be started: {e.Message}", e);
        }

        if (closeStdin)
            process.StandardInput.Close();
        return process;
    }

    /// <summary>Waits for the process to exit; on cancellation kills its whole tree, waits for it, and throws.</summary>
    internal static async Task WaitOrKillAsync(Process process, CancellationToken cancellationToken)
    {
        try
        {
            await process.WaitForExitAsync(cancellationToken).ConfigureAwait(false);
        }
        catch (OperationCanceledException)
        {
            KillTree(process);
            await process.WaitForExitAsync(CancellationToken.None).ConfigureAwait(false);
            throw;
        }
    }

    private static void KillTree(Process process)
    {
        try
        {
            process.Kill(entireProcessTree: true);
        }
        catch (InvalidOperationException)
        {
            // Already gone.
        }
    }

    /// <summary>Shell-quoted command line for messages and logs; long arguments are shortened.</summary>
    public static string Display(string fileName, IEnumerable<string> arguments)
    {
        var sb = new StringBuilder(Quote(fileName));
        foreach (var a in arguments)
            sb.Append(' ').Append(Quote(a.Length > 300 ? a[..300] + "..." : a));
        return sb.ToString();
    }

    private static string Quote(string s) =>
        s.Length > 0 && s.All(c => char.IsAsciiLetterOrDigit(c) || "_-./=:,+@%".Contains(c))
            ? s
            : "'" + s.Replace("'", "'\\''", StringComparison.Ordinal) + "'";

    private static void Keep(Queue<string> tail, string line)
    {
        tail.Enqueue(line);
        if (tail.Count > TailLines)
            tail.Dequeue();
    }

    private static async Task PumpAsync(StreamReader reader, Action<string> onLine)
    {
        // No cancellation here: the pipe closes when the process (tree) exits or is killed.
        while (await reader.ReadLineAsync(CancellationToken.None).ConfigureAwait(false) is { } line)
            onLine(line);
    }
}
