using System.ComponentModel;
using System.Diagnostics;
using System.Text.Json;

namespace SandboxVM.Server.Tests;

/// <summary>
/// A client nobody here wrote: the official TypeScript MCP SDK (npm @modelcontextprotocol/sdk, pinned by
/// mcp-interop/package-lock.json) driven by mcp-interop/interop.mjs against /mcp. Skips where node or npm
/// is missing or the package registry cannot be reached.
/// </summary>
[Trait("tier", "integration")]
public sealed class McpInteropTests(McpServerFixture server) : IClassFixture<McpServerFixture>
{
    private static readonly string[] s_networkErrors = ["ENOTFOUND", "EAI_AGAIN", "ECONNREFUSED", "ETIMEDOUT", "ECONNRESET", "ENETUNREACH", "network"];

    private static CancellationToken Ct => TestContext.Current.CancellationToken;

    private readonly McpServerFixture _server = server.OrSkip();

    [Fact]
    public async Task TypeScriptSdk_ListsToolsAndReceivesAMatplotlibFigureAsAnImage()
    {
        string dir = Path.Combine(AppContext.BaseDirectory, "mcp-interop");
        var node = await RunAsync("node", ["--version"], dir, null, TimeSpan.FromSeconds(30));
        Assert.SkipWhen(node is null, "node is not installed (Debian: apt-get install nodejs npm)");
        await InstallAsync(dir);
        string? missing = await _server.MatplotlibMissingAsync(Ct);
        Assert.SkipWhen(missing is not null, missing ?? "");

        var run = await RunAsync("node", ["interop.mjs", _server.McpUri.ToString(), TestKeys.Alice, McpServerFixture.Python], dir,
            McpServerTests.PlotCode, TimeSpan.FromMinutes(3));
        Assert.NotNull(run);
        Assert.True(run.Value.ExitCode == 0, $"interop.mjs exited {run.Value.ExitCode}:\n{run.Value.Stderr}\n{run.Value.Stdout}");

        using var answer = JsonDocument.Parse(run.Value.Stdout);
        var root = answer.RootElement;
        Assert.False(string.IsNullOrEmpty(root.GetProperty("sessionId").GetString()), "no Mcp-Session-Id: the endpoint is not stateful");
        var tools = root.GetProperty("tools").EnumerateArray().ToList();
        Assert.Equal(McpServerTests.ToolNames.Order(), tools.Select(t => t.GetProperty("name").GetString()).Order());
        Assert.All(tools, t => Assert.False(string.IsNullOrWhiteSpace(t.GetProperty("description").GetString())));
        var runCode = tools.Single(t => t.GetProperty("name").GetString() == "run_code");
        Assert.Equal(["code", "template"], runCode.GetProperty("required").EnumerateArray().Select(r => r.GetString()).Order());

        Assert.False(root.GetProperty("isError").GetBoolean(), run.Value.Stdout);
        var content = root.GetProperty("content").EnumerateArray().ToList();
        Assert.Contains(content, c => c.GetProperty("type").GetString() == "text" && c.GetProperty("text").GetString()!.Contains("plotted"));
        var image = Assert.Single(content, c => c.GetProperty("type").GetString() == "image");
        Assert.Equal("image/png", image.GetProperty("mimeType").GetString());
        byte[] png = Convert.FromBase64String(image.GetProperty("data").GetString()!);
        Assert.Equal([0x89, (byte)'P', (byte)'N', (byte)'G'], png.Take(4));
    }

    /// <summary>
    /// <c>npm ci</c> into the test's output directory (node_modules beside interop.mjs), once per lock file;
    /// a registry that cannot be reached skips the test, any other failure fails it.
    /// </summary>
    private static async Task InstallAsync(string dir)
    {
        string installed = Path.Combine(dir, "node_modules", ".package-lock.json");
        if (File.Exists(installed) && File.GetLastWriteTimeUtc(installed) >= File.GetLastWriteTimeUtc(Path.Combine(dir, "package-lock.json")))
        {
            return;
        }
        var npm = await RunAsync("npm", ["ci", "--no-audit", "--no-fund", "--ignore-scripts"], dir, null, TimeSpan.FromMinutes(5));
        Assert.SkipWhen(npm is null, "npm is not installed (Debian: apt-get install npm)");
        if (npm.Value.ExitCode != 0)
        {
            string why = npm.Value.Stderr + npm.Value.Stdout;
            Assert.SkipWhen(s_networkErrors.Any(e => why.Contains(e, StringComparison.OrdinalIgnoreCase)),
                $"the npm registry cannot be reached, so the TypeScript SDK cannot be installed: {why.Trim()}");
            Assert.Fail($"npm ci failed ({npm.Value.ExitCode}):\n{why}");
        }
    }

    /// <summary>Runs a program to its end (killed after <paramref name="timeout"/>); null when it is not installed.</summary>
    private static async Task<(int ExitCode, string Stdout, string Stderr)?> RunAsync(string file, string[] args, string dir, string? stdin, TimeSpan timeout)
    {
        var psi = new ProcessStartInfo(file, args)
        {
            WorkingDirectory = dir,
            RedirectStandardInput = true,
            RedirectStandardOutput = true,
            RedirectStandardError = true,
        };
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
