using System.CommandLine;
using System.Diagnostics;
using System.Runtime.InteropServices;
using SandboxVM.Client;

namespace SandboxVM.Cli;

/// <summary><c>sandboxvm sandbox shell ID</c>: an interactive terminal in a sandbox (docs/API.md "Terminals").</summary>
internal static partial class SandboxCommand
{
    private static Command ShellCommand()
    {
        var id = IdArgument();
        var cmd = new Option<string?>("--cmd") { Description = "A shell line to run on the terminal instead of the template's shell" };
        var command = new Command("shell", "Open an interactive shell in a sandbox (a real terminal); exits with the shell's exit code") { id, cmd };
        return WithClient(command, async (parse, client, ct) =>
        {
            await using var sandbox = await client.ConnectSandboxAsync(parse.GetValue(id)!, ct);
            bool tty = !Console.IsInputRedirected && !Console.IsOutputRedirected;
            await using var term = await sandbox.OpenTerminalAsync(tty ? Console.WindowWidth : 80, tty ? Console.WindowHeight : 24, parse.GetValue(cmd), ct);
            // Raw mode: every key (Ctrl-C, arrows, tab) goes to the sandbox's terminal, which echoes and edits itself.
            string? saved = tty ? Stty("-g") : null;
            if (saved is not null)
            {
                Stty("raw -echo");
            }
            try
            {
                using var resize = tty && !OperatingSystem.IsWindows()
                    ? PosixSignalRegistration.Create(PosixSignal.SIGWINCH, signal => { _ = term.ResizeAsync(Console.WindowWidth, Console.WindowHeight, ct); })
                    : null;
                _ = Task.Run(() => ForwardInputAsync(term, endWithEof: !tty, ct), ct);
                var stdout = Console.OpenStandardOutput();
                byte[] buffer = new byte[16 * 1024];
                int n;
                while ((n = await term.ReadAsync(buffer, ct)) > 0)
                {
                    await stdout.WriteAsync(buffer.AsMemory(0, n), ct);
                    await stdout.FlushAsync(ct);
                }
            }
            finally
            {
                if (saved is not null)
                {
                    Stty(saved);
                }
            }
            if (term.ExitCode is int code)
            {
                return code;
            }
            await Console.Error.WriteLineAsync($"sandboxvm: the terminal ended: {term.CloseReason ?? "the connection closed"}");
            return 1;
        });
    }

    /// <summary>Copies stdin to the terminal; piped input ends with Ctrl-D (end of file to a shell at an empty line).</summary>
    private static async Task ForwardInputAsync(SandboxTerminal term, bool endWithEof, CancellationToken ct)
    {
        try
        {
            var stdin = Console.OpenStandardInput();
            byte[] buffer = new byte[4096];
            int n;
            while ((n = await stdin.ReadAsync(buffer, ct)) > 0)
            {
                await term.WriteAsync(buffer.AsMemory(0, n), ct);
            }
            if (endWithEof)
            {
                await term.WriteAsync(new byte[] { 4 }, ct);
            }
        }
        catch (Exception e) when (e is System.Net.WebSockets.WebSocketException or OperationCanceledException or IOException)
        {
            // The terminal ended first.
        }
    }

    /// <summary>Runs stty on the controlling terminal (inherited stdin); its output, trimmed.</summary>
    private static string? Stty(string arguments)
    {
        try
        {
            using var stty = Process.Start(new ProcessStartInfo("stty", arguments) { RedirectStandardOutput = true, UseShellExecute = false });
            if (stty is null)
            {
                return null;
            }
            string output = stty.StandardOutput.ReadToEnd().Trim();
            stty.WaitForExit();
            return stty.ExitCode == 0 ? output : null;
        }
        catch (System.ComponentModel.Win32Exception)
        {
            // No stty: the terminal stays cooked (keys are echoed twice), but the shell works.
            return null;
        }
    }
}
