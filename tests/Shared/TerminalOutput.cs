using System.Text;
using System.Text.RegularExpressions;
using SandboxVM.Client;

namespace SandboxVM.Testing;

/// <summary>What a sandbox terminal printed, read as a user watching it would.</summary>
internal static class TerminalOutput
{
    /// <summary>
    /// Reads into <paramref name="output"/> until <paramref name="pattern"/> shows in it (a minute at most:
    /// TCG guests are slow); fails if the terminal ends first. Returns all of it.
    /// </summary>
    public static async Task<string> ReadUntilAsync(SandboxTerminal term, StringBuilder output, Regex pattern, CancellationToken cancellationToken)
    {
        byte[] buffer = new byte[4096];
        using var deadline = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
        deadline.CancelAfter(TimeSpan.FromSeconds(60));
        while (!pattern.IsMatch(output.ToString()))
        {
            int n = await term.ReadAsync(buffer, deadline.Token);
            Assert.True(n > 0, $"the terminal ended before '{pattern}': {output}");
            output.Append(Encoding.UTF8.GetString(buffer, 0, n));
        }
        return output.ToString();
    }
}
