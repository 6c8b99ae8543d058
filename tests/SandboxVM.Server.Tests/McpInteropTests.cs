using System.Text.Json;
using SandboxVM.Testing;

namespace SandboxVM.Server.Tests;

/// <summary>
/// A client nobody here wrote: the official TypeScript MCP SDK (npm @modelcontextprotocol/sdk, pinned by
/// mcp-interop/package-lock.json) driven by mcp-interop/interop.mjs against /mcp. Skips where node or npm
/// is missing or the package registry cannot be reached.
/// </summary>
[Trait("tier", "integration")]
public sealed class McpInteropTests(McpServerFixture server) : IClassFixture<McpServerFixture>
{
    private static CancellationToken Ct => TestContext.Current.CancellationToken;

    private readonly McpServerFixture _server = server.OrSkip();

    [Fact]
    public async Task TypeScriptSdk_ListsToolsAndReceivesAMatplotlibFigureAsAnImage()
    {
        string dir = Path.Combine(AppContext.BaseDirectory, "mcp-interop");
        await NodeScripts.InstallAsync(dir);
        string? missing = await _server.MatplotlibMissingAsync(Ct);
        Assert.SkipWhen(missing is not null, missing ?? "");

        var run = await NodeScripts.RunAsync("node", ["interop.mjs", _server.McpUri.ToString(), TestKeys.Alice, McpServerFixture.Python], dir,
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
}
