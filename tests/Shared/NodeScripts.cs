using System.ComponentModel;
using System.Diagnostics;
using System.Text.Json;

namespace SandboxVM.Testing;

/// <summary>Node scripts of the interop tests: <c>npm ci</c> once per lock file, then a run with a deadline.</summary>
internal static class NodeScripts
{
    private static readonly string[] s_networkErrors = ["ENOTFOUND", "EAI_AGAIN", "ECONNREFUSED", "ETIMEDOUT", "ECONNRESET", "ENETUNREACH", "network"];

    private static CancellationToken Ct => TestContext.Current.CancellationToken;

    /// <summary>
    /// <c>npm ci</c> into <paramref name="dir"/> (node_modules beside the script), once per lock file; a
    /// missing node or npm, or a registry that cannot be reached, skips the test; any other failure fails it.
    /// <c>--prefer-offline</c>: packages already in npm's cache (~/.npm, filled by any earlier install of the same
    /// lock file) come from it without asking the registry; only what is missing there is fetched.
    /// </summary>
    public static async Task InstallAsync(string dir)
    {
        var node = await RunAsync("node", ["--version"], dir, null, TimeSpan.FromSeconds(30));
        Assert.SkipWhen(node is null, "node is not installed (Debian: apt-get install nodejs npm)");
        string installed = Path.Combine(dir, "node_modules", ".package-lock.json");
        if (File.Exists(installed) && File.GetLastWriteTimeUtc(installed) >= File.GetLastWriteTimeUtc(Path.Combine(dir, "package-lock.json")))
        {
            return;
        }
        var npm = await RunAsync("npm", ["ci", "--prefer-offline", "--no-audit", "--no-fund", "--ignore-scripts"], dir, null, TimeSpan.FromMinutes(5));
        Assert.SkipWhen(npm is null, "npm is not installed (Debian: apt-get install npm)");
        if (npm.Value.ExitCode != 0)
        {
            string why = npm.Value.Stderr + npm.Value.Stdout;
            Assert.SkipWhen(s_networkErrors.Any(e => why.Contains(e, StringComparison.OrdinalIgnoreCase)),
                $"the npm registry cannot be reached, so the SDK cannot be installed: {why.Trim()}");
            Assert.Fail($"npm ci failed ({npm.Value.ExitCode}):\n{why}");
        }
    }

    /// <summary>Runs a node script in <paramref name="dir"/> that prints one JSON object; it must exit 0. That object and its text.</summary>
    public static async Task<(JsonElement Answer, string Text)> RunJsonAsync(string dir, string script, string[] args,
        IReadOnlyDictionary<string, string> env, TimeSpan timeout)
    {
        var run = await RunAsync("node", [script, .. args], dir, null, timeout, env);
        Assert.NotNull(run);
        Assert.True(run.Value.ExitCode == 0, $"{script} exited {run.Value.ExitCode}:\n{run.Value.Stderr}\n{run.Value.Stdout}");
        using var answer = JsonDocument.Parse(run.Value.Stdout);
        return (answer.RootElement.Clone(), run.Value.Stdout);
    }

    /// <summary>Runs a program to its end (killed after <paramref name="timeout"/>); null when it is not installed.</summary>
    public static async Task<(int ExitCode, string Stdout, string Stderr)?> RunAsync(string file, string[] args, string dir, string? stdin,
        TimeSpan timeout, IReadOnlyDictionary<string, string>? env = null)
    {
        var psi = new ProcessStartInfo(file, args)
        {
            WorkingDirectory = dir,
            RedirectStandardInput = true,
            RedirectStandardOutput = true,
            RedirectStandardError = true,
        };
        foreach (var (key, value) in env ?? new Dictionary<string, string>())
        {
            psi.Environment[key] = value;
        }
        Process process;
        try
        {
            process = Process.Start(psi)!;
        }
        catch (Win32Exception)
        {
            return null;
        }
        using (process)
        {
            var stdout = process.StandardOutput.ReadToEndAsync(Ct);
            var stderr = process.StandardError.ReadToEndAsync(Ct);
            await process.StandardInput.WriteAsync(stdin ?? "");
            process.StandardInput.Close();
            using var cts = CancellationTokenSource.CreateLinkedTokenSource(Ct);
            cts.CancelAfter(timeout);
            try
            {
                await process.WaitForExitAsync(cts.Token);
            }
            catch (OperationCanceledException)
            {
                process.Kill(entireProcessTree: true);
                await process.WaitForExitAsync(CancellationToken.None);
                Assert.Fail($"{file} {string.Join(' ', args)} did not finish within {timeout}:\n{await stderr}");
            }
            return (process.ExitCode, await stdout, await stderr);
        }
    }
}
