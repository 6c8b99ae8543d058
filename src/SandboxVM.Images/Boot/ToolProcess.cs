using System.Diagnostics;
using System.Text;

namespace SandboxVM.Images.Boot;

/// <summary>
/// Runs a host tool with an argv list (never a shell), like <see cref="ExternalCommand"/>, plus what the boot
/// builder needs on top: a working directory (apt-get download writes into it) and binary stdout
/// copied to a stream (decompressors).
/// </summary>
internal static class ToolProcess
{
    private const int TailLines = 20;

    /// <param name="fileName">Program (looked up in PATH when not absolute).</param>
    /// <param name="arguments">Arguments, passed verbatim.</param>
    /// <param name="workingDirectory">Current directory of the child, or null for ours.</param>
    /// <param name="stdout">Receives stdout as raw bytes; when null, stdout lines go to <paramref name="onLine"/>.</param>
    /// <param name="onLine">Receives output lines (stderr always, stdout when not redirected); may be null.</param>
    /// <param name="cancellationToken">Kills the process tree and throws.</param>
    /// <exception cref="ExternalCommandException">Non-zero exit, or the program could not start.</exception>
    public static async Task RunAsync(string fileName, IReadOnlyList<string> arguments, string? workingDirectory, Stream? stdout,
        Action<string>? onLine, CancellationToken cancellationToken)
    {
        cancellationToken.ThrowIfCancellationRequested();
        var psi = new ProcessStartInfo(fileName)
        {
            UseShellExecute = false,
            RedirectStandardInput = true,
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            StandardErrorEncoding = Encoding.UTF8,
        };
        if (workingDirectory is not null)
            psi.WorkingDirectory = workingDirectory;
        foreach (var a in arguments)
            psi.ArgumentList.Add(a);

        var display = ExternalCommand.Display(fileName, arguments);
        using var process = ExternalCommand.Start(psi, display);
        var gate = new Lock();
        var tail = new Queue<string>();
        void Line(string line)
        {
            lock (gate)
            {
                tail.Enqueue(line);
                if (tail.Count > TailLines)
                    tail.Dequeue();
                onLine?.Invoke(line);
            }
        }

        // No cancellation on the pumps: the pipes close when the process (tree) exits or is killed.
        var outTask = stdout is not null
            ? process.StandardOutput.BaseStream.CopyToAsync(stdout, CancellationToken.None)
            : PumpAsync(process.StandardOutput, Line);
        var errTask = PumpAsync(process.StandardError, Line);
        await ExternalCommand.WaitOrKillAsync(process, cancellationToken).ConfigureAwait(false);
        await Task.WhenAll(outTask, errTask).ConfigureAwait(false);
        if (process.ExitCode != 0)
        {
            string text;
            lock (gate)
                text = string.Join('\n', tail);
            throw new ExternalCommandException(display, process.ExitCode, text);
        }
    }

    /// <summary>Runs a tool and returns its stdout as text.</summary>
    public static async Task<string> OutputAsync(string fileName, IReadOnlyList<string> arguments, CancellationToken cancellationToken)
    {
        using var buffer = new MemoryStream();
        await RunAsync(fileName, arguments, null, buffer, null, cancellationToken).ConfigureAwait(false);
        return Encoding.UTF8.GetString(buffer.GetBuffer(), 0, (int)buffer.Length);
    }

    private static async Task PumpAsync(StreamReader reader, Action<string> onLine)
    {
        while (await reader.ReadLineAsync(CancellationToken.None).ConfigureAwait(false) is { } line)
            onLine(line);
    }
}
