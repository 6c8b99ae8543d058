using System.Net;
using System.Net.Http.Json;
using System.Text;
using System.Text.Json;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Routing;
using Microsoft.Extensions.DependencyInjection;
using ModelContextProtocol.Server;

namespace SandboxVM.Server.Tests;

/// <summary>/openapi/v1.json against the endpoints the server has, and /v1/tools/definitions against the MCP tools.</summary>
[Trait("tier", "unit")]
public sealed class OpenApiTests
{
    private static CancellationToken Ct => TestContext.Current.CancellationToken;

    private static async Task<JsonElement> DocumentAsync(FakeRuntimeServer server)
    {
        using var response = await server.Http.GetAsync("openapi/v1.json", Ct);
        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        return JsonDocument.Parse(await response.Content.ReadAsStringAsync(Ct)).RootElement.Clone();
    }

    /// <summary>Every (method, route) the server maps, but those of other protocols (MCP, E2B) and the document itself.</summary>
    private static List<(string Method, string Path)> Routes(FakeRuntimeServer server)
    {
        var routes = new List<(string, string)>();
        foreach (var endpoint in server.Services.GetRequiredService<EndpointDataSource>().Endpoints.OfType<RouteEndpoint>())
        {
            string path = OpenApiDocs.KeyOf("GET", endpoint.RoutePattern.RawText ?? "")[4..];
            if (OpenApiDocs.IsOtherProtocol(path))
            {
                continue;
            }
            var methods = endpoint.Metadata.GetMetadata<IHttpMethodMetadata>()?.HttpMethods ?? OpenApiDocs.AnyMethod;
            routes.AddRange(methods.Select(m => (m, path)));
        }
        return routes;
    }

    [Fact]
    public async Task EveryRoute_IsInTheDocument_WithItsAnswersAndProblems()
    {
        await using var server = await FakeRuntimeServer.StartAsync();
        var paths = (await DocumentAsync(server)).GetProperty("paths");

        var routes = Routes(server);
        Assert.Contains(("POST", "/v1/sandboxes/{id}/commands"), routes);
        Assert.Contains(("GET", "/v1/sandboxes/{id}/ports/{port}/{path}"), routes);
        foreach (var (method, path) in routes)
        {
            Assert.True(paths.TryGetProperty(path, out var item), $"{path} is not in the document");
            Assert.True(item.TryGetProperty(method.ToLowerInvariant(), out var operation), $"{method} {path} is not in the document");
            var responses = operation.GetProperty("responses");
            var success = responses.EnumerateObject().Where(r => r.Name[0] is '1' or '2').ToList();
            Assert.True(success.Count == 1, $"{method} {path} documents no success answer");
            if (success[0].Name is not ("204" or "101"))
            {
                Assert.True(success[0].Value.TryGetProperty("content", out var content) && content.EnumerateObject().Any(c => c.Value.TryGetProperty("schema", out _)),
                    $"{method} {path}: its answer has no schema");
            }
            Assert.True(responses.GetProperty("default").GetProperty("content").TryGetProperty("application/problem+json", out _), $"{method} {path}: no problem answer");
            if (path.StartsWith("/v1/", StringComparison.Ordinal))
            {
                Assert.True(responses.TryGetProperty("401", out _), $"{method} {path}: the 401 of a missing key is not documented");
            }
        }
        // Each shape names a route that exists: the table cannot document an operation the server does not have.
        var mapped = routes.Select(r => $"{r.Method} {r.Path}").Concat(routes.Select(r => $"ANY {r.Path}")).ToHashSet();
        Assert.All(OpenApiDocs.Shapes.Keys, k => Assert.Contains(k, mapped));
        var run = paths.GetProperty("/v1/sandboxes/{id}/run").GetProperty("post");
        Assert.True(run.GetProperty("requestBody").GetProperty("content").TryGetProperty("application/json", out _));
    }

    [Fact]
    public async Task EveryDocumentedOperation_Answers_NoneIsAnUnroutedPath()
    {
        await using var server = await FakeRuntimeServer.StartAsync();
        using var created = await server.Http.PostAsJsonAsync("v1/sandboxes", new { template = FakeRuntimeServer.Template }, Ct);
        Assert.Equal(HttpStatusCode.Created, created.StatusCode);
        string id = JsonDocument.Parse(await created.Content.ReadAsStringAsync(Ct)).RootElement.GetProperty("id").GetString()!;
        var paths = (await DocumentAsync(server)).GetProperty("paths");

        // Deleting the sandbox last, so that the calls before it find it.
        var operations = paths.EnumerateObject()
            .SelectMany(p => p.Value.EnumerateObject().Select(o => (Method: o.Name.ToUpperInvariant(), Path: p.Name)))
            .OrderBy(o => o.Method == "DELETE" && o.Path == "/v1/sandboxes/{id}")
            .ToList();
        Assert.True(operations.Count >= OpenApiDocs.Shapes.Count);
        foreach (var (method, path) in operations)
        {
            string url = path.Replace("{id}", id).Replace("{port}", "1").Replace("{cid}", "c1").Replace("{name}", "n1").Replace("{path}", "p1").TrimStart('/');
            using var request = new HttpRequestMessage(new HttpMethod(method), url);
            if (method is "POST" or "PUT" or "PATCH")
            {
                request.Content = new StringContent("{}", Encoding.UTF8, "application/json");
            }
            using var timeout = CancellationTokenSource.CreateLinkedTokenSource(Ct);
            timeout.CancelAfter(TimeSpan.FromSeconds(30));
            using var response = await server.Http.SendAsync(request, timeout.Token);
            string body = await response.Content.ReadAsStringAsync(timeout.Token);
            Assert.True(response.StatusCode != HttpStatusCode.MethodNotAllowed, $"{method} {path}: 405");
            // A 404 of the API names what is missing (a command, a snapshot); routing's own 404 has no body.
            Assert.True(response.StatusCode != HttpStatusCode.NotFound || body.Contains("\"code\"", StringComparison.Ordinal), $"{method} {path}: unrouted 404");
        }
    }

    [Theory]
    [InlineData("openai")]
    [InlineData("anthropic")]
    public async Task ToolDefinitions_AreTheMcpTools_InTheVendorsShape(string format)
    {
        await using var server = await FakeRuntimeServer.StartAsync();
        var mcp = server.Services.GetServices<McpServerTool>().Select(t => t.ProtocolTool).ToDictionary(t => t.Name);

        using var response = await server.Http.GetAsync($"v1/tools/definitions?format={format}", Ct);

        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        var body = JsonDocument.Parse(await response.Content.ReadAsStringAsync(Ct)).RootElement;
        Assert.Equal(format, body.GetProperty("format").GetString());
        var tools = body.GetProperty("tools").EnumerateArray().ToList();
        Assert.Equal(mcp.Count, tools.Count);
        Assert.Contains("run_code", mcp.Keys);
        foreach (var tool in tools)
        {
            JsonElement fn = tool;
            string schemaName = "input_schema";
            if (format == "openai")
            {
                Assert.Equal("function", tool.GetProperty("type").GetString());
                fn = tool.GetProperty("function");
                schemaName = "parameters";
            }
            var t = mcp[fn.GetProperty("name").GetString()!];
            Assert.Equal(t.Description, fn.GetProperty("description").GetString());
            var schema = fn.GetProperty(schemaName);
            Assert.Equal("object", schema.GetProperty("type").GetString());
            Assert.True(JsonElement.DeepEquals(t.InputSchema, schema), $"{t.Name}: the schema differs from MCP's");
        }
        var runCode = tools.Select(t => format == "openai" ? t.GetProperty("function") : t).Single(t => t.GetProperty("name").GetString() == "run_code");
        var required = runCode.GetProperty(format == "openai" ? "parameters" : "input_schema").GetProperty("required").EnumerateArray().Select(e => e.GetString()).ToList();
        Assert.Equal(["template", "code"], required);
    }

    [Theory]
    [InlineData("")]
    [InlineData("?format=gemini")]
    public async Task ToolDefinitions_WithoutAKnownFormat_Are400InvalidFormat(string query)
    {
        await using var server = await FakeRuntimeServer.StartAsync();

        using var response = await server.Http.GetAsync("v1/tools/definitions" + query, Ct);

        Assert.Equal(HttpStatusCode.BadRequest, response.StatusCode);
        var problem = JsonDocument.Parse(await response.Content.ReadAsStringAsync(Ct)).RootElement;
        Assert.Equal("invalid_format", problem.GetProperty("code").GetString());
        Assert.Equal("format", problem.GetProperty("field").GetString());
    }

    [Fact]
    public async Task McpToolsList_OverHttp_IsTheSameToolSet()
    {
        await using var server = await FakeRuntimeServer.StartAsync();
        await using var client = await ModelContextProtocol.Client.McpClient.CreateAsync(new ModelContextProtocol.Client.HttpClientTransport(
            new ModelContextProtocol.Client.HttpClientTransportOptions { Endpoint = new Uri(server.BaseUri, "mcp") }), cancellationToken: Ct);
        var listed = (await client.ListToolsAsync(cancellationToken: Ct)).Select(t => t.Name).Order().ToList();

        using var response = await server.Http.GetAsync("v1/tools/definitions?format=anthropic", Ct);
        var names = JsonDocument.Parse(await response.Content.ReadAsStringAsync(Ct)).RootElement.GetProperty("tools")
            .EnumerateArray().Select(t => t.GetProperty("name").GetString()!).Order().ToList();

        Assert.Equal(listed, names);
    }
}
