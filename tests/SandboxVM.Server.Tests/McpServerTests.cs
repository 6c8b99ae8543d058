using System.Reflection;
using System.Text.Json;
using Microsoft.Extensions.Logging.Abstractions;
using ModelContextProtocol;
using ModelContextProtocol.Client;
using ModelContextProtocol.Protocol;
using SandboxVM.Testing;

namespace SandboxVM.Server.Tests;

/// <summary>
/// The real server on loopback with API keys (alice, bob) and the local agent's sandboxes, for the MCP
/// tests: its <c>/mcp</c> endpoint and the built CLI's <c>sandboxvm mcp</c> against its URL.
/// </summary>
public sealed class McpServerFixture : KeyedLocalServer<McpServerFixture>
{
    /// <summary>Python with room for matplotlib (the local-py template's 64 MiB is too little) and a 30 s default limit.</summary>
    public const string Python = "mcp-py";

    public Uri McpUri => new(BaseUri, "mcp");

    private protected override void Configure(TestKeys keys, Dictionary<string, string> templates)
    {
        base.Configure(keys, templates);
        templates[Python] = LocalAgentServer.PythonYaml(Python, memoryMib: 512, runTimeoutS: 30, maxTimeoutS: 60, outputBytes: 65536);
    }

    /// <summary>An MCP client over Streamable HTTP with <paramref name="apiKey"/>.</summary>
    public Task<McpClient> ConnectHttpAsync(string? apiKey, CancellationToken ct)
    {
        var transport = new HttpClientTransport(new HttpClientTransportOptions
        {
            Endpoint = McpUri,
            TransportMode = HttpTransportMode.StreamableHttp,
            AdditionalHeaders = apiKey is null ? null : new Dictionary<string, string> { ["Authorization"] = "Bearer " + apiKey },
        }, NullLoggerFactory.Instance);
        return McpClient.CreateAsync(transport, cancellationToken: ct);
    }

    /// <summary>An MCP client over stdio: the built CLI's <c>sandboxvm mcp --url</c> with the key in SANDBOXVM_API_KEY.</summary>
    public Task<McpClient> ConnectStdioAsync(string apiKey, List<string> stderr, CancellationToken ct)
    {
        string? cli = typeof(McpServerFixture).Assembly.GetCustomAttributes<AssemblyMetadataAttribute>()
            .FirstOrDefault(a => a.Key == "SandboxVM.CliPath")?.Value;
        Assert.True(cli is not null && File.Exists(cli), $"the CLI was not built at '{cli}'");
        string dotnet = Environment.ProcessPath is { } host && Path.GetFileNameWithoutExtension(host) == "dotnet" ? host : "dotnet";
        var transport = new StdioClientTransport(new StdioClientTransportOptions
        {
            Name = "sandboxvm",
            Command = dotnet,
            Arguments = [cli, "mcp", "--url", BaseUri.ToString()],
            EnvironmentVariables = new Dictionary<string, string?> { ["SANDBOXVM_API_KEY"] = apiKey, ["DOTNET_NOLOGO"] = "1" },
            StandardErrorLines = line =>
            {
                lock (stderr)
                {
                    stderr.Add(line);
                }
            },
        }, NullLoggerFactory.Instance);
        return McpClient.CreateAsync(transport, cancellationToken: ct);
    }

    public Task<string?> MatplotlibMissingAsync(CancellationToken ct) => ModulesMissingAsync(Python, "matplotlib", ct);
}

[Trait("tier", "integration")]
public sealed class McpServerTests(McpServerFixture server) : IClassFixture<McpServerFixture>
{
    public static readonly string[] ToolNames =
        ["run_code", "create_sandbox", "run_in_sandbox", "run_command", "write_file", "read_file", "list_files", "kill_sandbox", "list_templates", "web_search", "fetch_url"];

    internal const string PlotCode = """
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        plt.plot([1, 2, 3], [1, 4, 9])
        plt.savefig("/tmp/outputs/plot.png")
        print("plotted")
        """;

    private static CancellationToken Ct => TestContext.Current.CancellationToken;

    private readonly McpServerFixture _server = server.OrSkip();

    private static string TextOf(CallToolResult result) => string.Concat(result.Content.OfType<TextContentBlock>().Select(t => t.Text));

    private static Dictionary<string, object?> Args(params (string Name, object? Value)[] args) => args.ToDictionary(a => a.Name, a => a.Value);

    private static async Task<string> CreateSandboxAsync(McpClient client)
    {
        var created = await client.CallToolAsync("create_sandbox", Args(("template", McpServerFixture.Python)), cancellationToken: Ct);
        Assert.True(created.IsError != true, TextOf(created));
        string id = TextOf(created).Split('\n').Single(l => l.StartsWith("sandbox_id: ", StringComparison.Ordinal))["sandbox_id: ".Length..];
        return id;
    }

    [Fact]
    public async Task Http_ListsEveryToolWithADescriptionAndSchema()
    {
        await using var client = await _server.ConnectHttpAsync(TestKeys.Alice, Ct);
        var tools = await client.ListToolsAsync(cancellationToken: Ct);

        Assert.Equal(ToolNames.Order(), tools.Select(t => t.Name).Order());
        Assert.All(tools, t => Assert.True(t.Description.Length > 40, $"{t.Name}: '{t.Description}'"));
        var runCode = tools.Single(t => t.Name == "run_code").JsonSchema;
        Assert.Equal(["code", "template"], runCode.GetProperty("required").EnumerateArray().Select(e => e.GetString()).Order());
        var timeoutType = runCode.GetProperty("properties").GetProperty("timeout_s").GetProperty("type");
        Assert.Contains("number", timeoutType.ValueKind == JsonValueKind.Array ? timeoutType.EnumerateArray().Select(t => t.GetString()) : [timeoutType.GetString()]);
        Assert.Equal("sandboxvm", client.ServerInfo?.Name);
        Assert.NotNull(client.SessionId);
    }

    [Fact]
    public async Task Http_RunCode_ReturnsStatusExitCodeAndOutput()
    {
        await using var client = await _server.ConnectHttpAsync(TestKeys.Alice, Ct);
        var result = await client.CallToolAsync("run_code",
            Args(("template", McpServerFixture.Python), ("code", "import sys\nprint(input() * 2)\nsys.stderr.write('warned\\n')\nsys.exit(3)"), ("stdin", "ab\n")),
            cancellationToken: Ct);

        string text = TextOf(result);
        Assert.True(result.IsError != true, text);
        Assert.Contains("status: error", text);
        Assert.Contains("exit_code: 3", text);
        Assert.Contains("abab", text);
        Assert.Contains("warned", text);
    }

    [Fact]
    public async Task Http_RunCode_ReturnsAMatplotlibFigureAsAnImage()
    {
        string? missing = await _server.MatplotlibMissingAsync(Ct);
        Assert.SkipWhen(missing is not null, missing ?? "");
        await using var client = await _server.ConnectHttpAsync(TestKeys.Alice, Ct);
        var result = await client.CallToolAsync("run_code", Args(("template", McpServerFixture.Python), ("code", PlotCode)), cancellationToken: Ct);

        Assert.True(result.IsError != true, TextOf(result));
        Assert.Contains("plotted", TextOf(result));
        var image = Assert.Single(result.Content.OfType<ImageContentBlock>());
        Assert.Equal("image/png", image.MimeType);
        Assert.Equal([0x89, (byte)'P', (byte)'N', (byte)'G'], image.DecodedData.ToArray().Take(4));
    }

    [Fact]
    public async Task Http_ASandboxKeepsStateAndFilesBetweenToolCalls()
    {
        await using var client = await _server.ConnectHttpAsync(TestKeys.Alice, Ct);
        string id = await CreateSandboxAsync(client);
        try
        {
            var first = await client.CallToolAsync("run_in_sandbox", Args(("sandbox_id", id), ("code", "x = 41\nopen('note.txt', 'w').write('kept')")), cancellationToken: Ct);
            Assert.True(first.IsError != true, TextOf(first));
            var second = await client.CallToolAsync("run_in_sandbox", Args(("sandbox_id", id), ("code", "print(x + 1)")), cancellationToken: Ct);
            Assert.Contains("42", TextOf(second));

            var command = await client.CallToolAsync("run_command", Args(("sandbox_id", id), ("command", "cat note.txt; echo; exit 4")), cancellationToken: Ct);
            Assert.True(command.IsError == true, TextOf(command));
            Assert.Contains("exit_code: 4", TextOf(command));
            Assert.Contains("--- stdout ---\nkept\n", TextOf(command));
            var background = await client.CallToolAsync("run_command", Args(("sandbox_id", id), ("command", "sleep 1000"), ("background", true)), cancellationToken: Ct);
            Assert.Contains("status: running", TextOf(background));

            var written = await client.CallToolAsync("write_file", Args(("sandbox_id", id), ("path", "dir/in.txt"), ("content", "héllo")), cancellationToken: Ct);
            Assert.True(written.IsError != true, TextOf(written));
            var read = await client.CallToolAsync("read_file", Args(("sandbox_id", id), ("path", "note.txt")), cancellationToken: Ct);
            Assert.Equal("kept", TextOf(read));
            var readBack = await client.CallToolAsync("read_file", Args(("sandbox_id", id), ("path", "dir/in.txt")), cancellationToken: Ct);
            Assert.Equal("héllo", TextOf(readBack));
            var listed = await client.CallToolAsync("list_files", Args(("sandbox_id", id)), cancellationToken: Ct);
            Assert.Contains("note.txt", TextOf(listed));
            Assert.Contains("directory", TextOf(listed));
        }
        finally
        {
            var killed = await client.CallToolAsync("kill_sandbox", Args(("sandbox_id", id)), cancellationToken: Ct);
            Assert.True(killed.IsError != true, TextOf(killed));
        }
        var gone = await client.CallToolAsync("run_in_sandbox", Args(("sandbox_id", id), ("code", "print(1)")), cancellationToken: Ct);
        Assert.True(gone.IsError == true);
        Assert.Contains("sandbox_not_found", TextOf(gone));
    }

    [Fact]
    public async Task Http_AnotherKeysSandboxIsNotFound()
    {
        await using var alice = await _server.ConnectHttpAsync(TestKeys.Alice, Ct);
        await using var bob = await _server.ConnectHttpAsync(TestKeys.Bob, Ct);
        string id = await CreateSandboxAsync(alice);
        try
        {
            var result = await bob.CallToolAsync("run_in_sandbox", Args(("sandbox_id", id), ("code", "print('bob was here')")), cancellationToken: Ct);
            Assert.True(result.IsError == true);
            Assert.Contains("sandbox_not_found", TextOf(result));
            var read = await bob.CallToolAsync("read_file", Args(("sandbox_id", id), ("path", "main.py")), cancellationToken: Ct);
            Assert.True(read.IsError == true);
            Assert.Contains("sandbox_not_found", TextOf(read));
        }
        finally
        {
            await alice.CallToolAsync("kill_sandbox", Args(("sandbox_id", id)), cancellationToken: Ct);
        }
    }

    [Theory]
    [InlineData(null)]
    [InlineData("svmk_wrong_0123456789abcdefghijklmnopqrstuvwxyz")]
    public async Task Http_AMissingOrWrongKeyIsRefused(string? key)
    {
        var e = await Assert.ThrowsAnyAsync<Exception>(async () => await _server.ConnectHttpAsync(key, Ct));
        Assert.Contains("401", e.ToString());
    }

    [Fact]
    public async Task Http_ASessionIdPresentedWithAnotherKeyIsRefused()
    {
        await using var alice = await _server.ConnectHttpAsync(TestKeys.Alice, Ct);
        using var http = new HttpClient();
        using var request = new HttpRequestMessage(HttpMethod.Post, _server.McpUri)
        {
            Content = new StringContent("""{"jsonrpc":"2.0","id":1,"method":"tools/list"}""", System.Text.Encoding.UTF8, "application/json"),
        };
        request.Headers.Authorization = new("Bearer", TestKeys.Bob);
        request.Headers.Add("Mcp-Session-Id", alice.SessionId);
        request.Headers.Accept.ParseAdd("application/json");
        request.Headers.Accept.ParseAdd("text/event-stream");
        using var response = await http.SendAsync(request, Ct);

        Assert.Equal(System.Net.HttpStatusCode.Forbidden, response.StatusCode);
    }

    [Fact]
    public async Task Http_AMessageNotSentAsJsonIsRefused()
    {
        using var http = new HttpClient();
        using var request = new HttpRequestMessage(HttpMethod.Post, _server.McpUri)
        {
            // What a page of another site can send without a CORS preflight.
            Content = new StringContent("""{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"x","version":"1"}}}""",
                System.Text.Encoding.UTF8, "text/plain"),
        };
        request.Headers.Authorization = new("Bearer", TestKeys.Alice);
        request.Headers.Accept.ParseAdd("application/json");
        request.Headers.Accept.ParseAdd("text/event-stream");
        using var response = await http.SendAsync(request, Ct);

        Assert.Equal(System.Net.HttpStatusCode.UnsupportedMediaType, response.StatusCode);
        Assert.Contains("unsupported_media_type", await response.Content.ReadAsStringAsync(Ct));
    }

    [Theory]
    [InlineData("no-such-template", "print(1)", null, "unknown_template")]
    [InlineData(McpServerFixture.Python, "print(1)", 1000.0, "timeout_s")]
    [InlineData(McpServerFixture.Python, "", null, "empty_code")]
    public async Task Http_ABadArgumentIsAToolErrorSayingWhatIsWrong(string template, string code, double? timeoutS, string expected)
    {
        await using var client = await _server.ConnectHttpAsync(TestKeys.Alice, Ct);
        var result = await client.CallToolAsync("run_code", Args(("template", template), ("code", code), ("timeout_s", timeoutS)), cancellationToken: Ct);

        Assert.True(result.IsError == true, TextOf(result));
        Assert.Contains(expected, TextOf(result));
    }

    [Fact]
    public async Task Http_AMissingArgumentIsAToolError()
    {
        await using var client = await _server.ConnectHttpAsync(TestKeys.Alice, Ct);
        var result = await client.CallToolAsync("run_code", Args(("template", McpServerFixture.Python)), cancellationToken: Ct);

        Assert.True(result.IsError == true, TextOf(result));
        Assert.Contains("code", TextOf(result));
    }

    [Fact]
    public async Task Http_OutputArrivesAsProgressDuringTheRun()
    {
        await using var client = await _server.ConnectHttpAsync(TestKeys.Alice, Ct);
        var messages = new List<string>();
        var progress = new SyncProgress(v =>
        {
            lock (messages)
            {
                messages.Add(v.Message ?? "");
            }
        });
        var result = await client.CallToolAsync("run_code",
            Args(("template", McpServerFixture.Python), ("code", "import time\nfor i in range(3):\n    print(f'line {i}')\n    time.sleep(0.3)")),
            progress, cancellationToken: Ct);

        Assert.True(result.IsError != true, TextOf(result));
        await Eventually.TrueAsync(() => { lock (messages) { return string.Concat(messages).Contains("line 2"); } },
            () => $"progress messages: {string.Join(" | ", messages)}");
        lock (messages)
        {
            Assert.True(messages.Count >= 2, $"output came as one piece: {string.Join(" | ", messages)}");
        }
    }

    [Fact]
    public async Task Http_CancellingTheCallEndsTheRun()
    {
        await using var client = await _server.ConnectHttpAsync(TestKeys.Alice, Ct);
        await AssertCancellingEndsTheRunAsync(client);
    }

    /// <summary>A run cancelled by the client once its first output arrived: the call ends, and its sandbox well before the program's 25 s sleep would.</summary>
    private async Task AssertCancellingEndsTheRunAsync(McpClient client)
    {
        using var cts = CancellationTokenSource.CreateLinkedTokenSource(Ct);
        int before = _server.Runtime.Vms.Count;
        var started = new TaskCompletionSource();
        var call = client.CallToolAsync("run_code",
            Args(("template", McpServerFixture.Python), ("code", "import time\nprint('started')\ntime.sleep(25)\nprint('finished')"), ("timeout_s", 40.0)),
            new SyncProgress(_ => started.TrySetResult()), cancellationToken: cts.Token).AsTask();
        await started.Task.WaitAsync(TimeSpan.FromSeconds(20), Ct);
        var vm = _server.Runtime.Vms.Skip(before).Single();
        cts.Cancel();

        await Assert.ThrowsAnyAsync<OperationCanceledException>(() => call);
        // Eventually waits 20 s at most.
        await Eventually.TrueAsync(() => vm.Ended, () => $"sandbox {vm.Id} still runs after the call was cancelled");
    }

    [Fact]
    public async Task Http_TemplatesAreResources()
    {
        await using var client = await _server.ConnectHttpAsync(TestKeys.Alice, Ct);
        var resources = await client.ListResourcesAsync(cancellationToken: Ct);
        var python = Assert.Single(resources, r => r.Uri == "sandboxvm://templates/" + McpServerFixture.Python);

        var read = await client.ReadResourceAsync(python.Uri, cancellationToken: Ct);
        string text = Assert.IsType<TextResourceContents>(Assert.Single(read.Contents)).Text;
        Assert.Contains("language: python", text);
        Assert.Contains("run_timeout_s: 30", text);
        await Assert.ThrowsAsync<McpProtocolException>(async () => await client.ReadResourceAsync("sandboxvm://templates/nope", cancellationToken: Ct));
    }

    [Fact]
    public async Task Stdio_TheCliListsToolsRunsCodeAndKeepsASandbox()
    {
        var stderr = new List<string>();
        await using var client = await _server.ConnectStdioAsync(TestKeys.Alice, stderr, Ct);
        var tools = await client.ListToolsAsync(cancellationToken: Ct);
        Assert.Equal(ToolNames.Order(), tools.Select(t => t.Name).Order());

        var run = await client.CallToolAsync("run_code", Args(("template", McpServerFixture.Python), ("code", "print(6 * 7)")), cancellationToken: Ct);
        Assert.True(run.IsError != true, TextOf(run) + string.Join('\n', stderr));
        Assert.Contains("42", TextOf(run));

        string id = await CreateSandboxAsync(client);
        try
        {
            await client.CallToolAsync("run_in_sandbox", Args(("sandbox_id", id), ("code", "y = 'stdio state'")), cancellationToken: Ct);
            var second = await client.CallToolAsync("run_in_sandbox", Args(("sandbox_id", id), ("code", "print(y)")), cancellationToken: Ct);
            Assert.Contains("stdio state", TextOf(second));
        }
        finally
        {
            await client.CallToolAsync("kill_sandbox", Args(("sandbox_id", id)), cancellationToken: Ct);
        }
    }

    [Fact]
    public async Task Stdio_CancellingTheCallEndsTheRun()
    {
        await using var client = await _server.ConnectStdioAsync(TestKeys.Alice, [], Ct);
        await AssertCancellingEndsTheRunAsync(client);
    }

    [Fact]
    public async Task Stdio_AWrongKeyIsAToolErrorNamingTheKey()
    {
        var stderr = new List<string>();
        await using var client = await _server.ConnectStdioAsync("svmk_wrong_0123456789abcdefghijklmnopqrstuvwxyz", stderr, Ct);
        var result = await client.CallToolAsync("run_code", Args(("template", McpServerFixture.Python), ("code", "print(1)")), cancellationToken: Ct);

        Assert.True(result.IsError == true);
        Assert.Contains("API key", TextOf(result));
    }

    /// <summary>Reports on the caller's thread (Progress&lt;T&gt; posts to the thread pool, after the call may have returned).</summary>
    private sealed class SyncProgress(Action<ProgressNotificationValue> report) : IProgress<ProgressNotificationValue>
    {
        public void Report(ProgressNotificationValue value) => report(value);
    }
}
