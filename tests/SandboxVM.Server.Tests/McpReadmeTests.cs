using System.Reflection;
using System.Text.Json;
using Microsoft.Extensions.Logging.Abstractions;
using ModelContextProtocol.Client;
using ModelContextProtocol.Protocol;
using SandboxVM.Testing;

namespace SandboxVM.Server.Tests;

/// <summary>
/// The README's MCP client configurations, used as a client would use them: the stdio one starts its
/// <c>command</c> with its <c>args</c> and <c>env</c>, the HTTP one connects to its <c>url</c> with its
/// <c>headers</c>. Only the server's address, the key and where <c>sandboxvm</c> is installed are this test's own.
/// </summary>
[Trait("tier", "integration")]
public sealed class McpReadmeTests(McpServerFixture server) : IClassFixture<McpServerFixture>
{
    private const string ReadmeUrl = "http://127.0.0.1:8000";
    private const string ReadmeKey = "YOUR-KEY";

    private static CancellationToken Ct => TestContext.Current.CancellationToken;

    private readonly McpServerFixture _server = server.OrSkip();

    private static JsonElement Config(string name)
    {
        using var doc = JsonDocument.Parse(ReadmeExamples.Block(name, "json"));
        return doc.RootElement.GetProperty("mcpServers").GetProperty("sandboxvm").Clone();
    }

    private string Ours(string text) =>
        text.Replace(ReadmeUrl + "/", _server.BaseUri.ToString(), StringComparison.Ordinal)
            .Replace(ReadmeUrl, _server.BaseUri.ToString().TrimEnd('/'), StringComparison.Ordinal)
            .Replace(ReadmeKey, TestKeys.Alice, StringComparison.Ordinal);

    private static async Task AnswersRunCodeAsync(McpClient client)
    {
        var tools = await client.ListToolsAsync(cancellationToken: Ct);
        Assert.Contains(tools, t => t.Name == "run_code");
        var result = await client.CallToolAsync("run_code",
            new Dictionary<string, object?> { ["template"] = McpServerFixture.Python, ["code"] = "print(6 * 7)" }, cancellationToken: Ct);
        string text = string.Concat(result.Content.OfType<TextContentBlock>().Select(t => t.Text));
        Assert.True(result.IsError != true, text);
        Assert.Contains("42", text);
    }

    [Fact]
    public async Task StdioConfiguration_StartsTheCli_AndRunsCode()
    {
        var config = Config("mcp-stdio");
        Assert.Equal("sandboxvm", config.GetProperty("command").GetString());
        string? cli = typeof(McpServerFixture).Assembly.GetCustomAttributes<AssemblyMetadataAttribute>()
            .FirstOrDefault(a => a.Key == "SandboxVM.CliPath")?.Value;
        Assert.True(cli is not null && File.Exists(cli), $"the CLI was not built at '{cli}'");
        string dotnet = Environment.ProcessPath is { } host && Path.GetFileNameWithoutExtension(host) == "dotnet" ? host : "dotnet";
        var env = config.GetProperty("env").EnumerateObject().ToDictionary(p => p.Name, p => (string?)Ours(p.Value.GetString()!));
        env["DOTNET_NOLOGO"] = "1";
        var transport = new StdioClientTransport(new StdioClientTransportOptions
        {
            Name = "sandboxvm",
            // `sandboxvm` is the built CLI here: run through dotnet, the arguments as configured.
            Command = dotnet,
            Arguments = [cli, .. config.GetProperty("args").EnumerateArray().Select(a => Ours(a.GetString()!))],
            EnvironmentVariables = env,
        }, NullLoggerFactory.Instance);
        await using var client = await McpClient.CreateAsync(transport, cancellationToken: Ct);

        await AnswersRunCodeAsync(client);
    }

    [Fact]
    public async Task HttpConfiguration_ConnectsToMcp_AndRunsCode()
    {
        var config = Config("mcp-http");
        Assert.Equal("http", config.GetProperty("type").GetString());
        var transport = new HttpClientTransport(new HttpClientTransportOptions
        {
            Endpoint = new Uri(Ours(config.GetProperty("url").GetString()!)),
            TransportMode = HttpTransportMode.StreamableHttp,
            AdditionalHeaders = config.GetProperty("headers").EnumerateObject().ToDictionary(p => p.Name, p => Ours(p.Value.GetString()!)),
        }, NullLoggerFactory.Instance);
        await using var client = await McpClient.CreateAsync(transport, cancellationToken: Ct);

        await AnswersRunCodeAsync(client);
    }
}
