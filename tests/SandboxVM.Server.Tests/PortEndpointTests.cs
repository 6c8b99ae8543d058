using System.Net;
using System.Text.Json.Nodes;
using SandboxVM.Client;

namespace SandboxVM.Server.Tests;

/// <summary>/v1/sandboxes/{id}/ports/{port}/...: a server started as a background command, reached through the agent channel.</summary>
[Trait("tier", "integration")]
public sealed class PortEndpointTests(LocalAgentServer server) : IClassFixture<LocalAgentServer>
{
    private static CancellationToken Ct => TestContext.Current.CancellationToken;

    private readonly LocalAgentServer _server = server.OrSkip();


    private const string EchoServer = """
        import http.server, json, sys
        class H(http.server.BaseHTTPRequestHandler):
            def do_GET(self): self.answer(b"")
            def do_POST(self): self.answer(self.rfile.read(int(self.headers.get("Content-Length", 0))))
            def answer(self, body):
                data = json.dumps({"method": self.command, "path": self.path, "headers": dict(self.headers), "body": body.decode()}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Set-Cookie", "session=guest")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
            def log_message(self, *args): pass
        http.server.ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), H).serve_forever()
        """;

    /// <summary>Polls the port URL until the server answers (it needs a moment to bind).</summary>
    private async Task<HttpResponseMessage> GetWhenUpAsync(string url)
    {
        var deadline = DateTime.UtcNow + TimeSpan.FromSeconds(60);
        while (true)
        {
            var response = await _server.Http.GetAsync(url, Ct);
            if (response.StatusCode != HttpStatusCode.BadGateway || DateTime.UtcNow > deadline)
            {
                return response;
            }
            response.Dispose();
            await Task.Delay(200, Ct);
        }
    }

    [Fact]
    public async Task HttpServer_StartedInTheBackground_ServesAFileThroughThePortUrl()
    {
        await using var sb = await _server.Client.CreateSandboxAsync(LocalAgentServer.Python, cancellationToken: Ct);
        await sb.Files.WriteAsync("site/hello.txt", "hello through the port\n", Ct);
        int port = LocalAgentServer.FreePort();
        var server = await sb.Commands.StartAsync(["python3", "-m", "http.server", port.ToString(), "--bind", "127.0.0.1"],
            new CommandOptions { Cwd = "site" }, Ct);

        using var response = await GetWhenUpAsync($"v1/sandboxes/{sb.Id}/ports/{port}/hello.txt");

        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        Assert.Equal("hello through the port\n", await response.Content.ReadAsStringAsync(Ct));
        using var listing = await _server.Http.GetAsync($"v1/sandboxes/{sb.Id}/ports/{port}/", Ct);
        Assert.Contains("hello.txt", await listing.Content.ReadAsStringAsync(Ct));
        await sb.Commands.KillAsync(server.Id, cancellationToken: Ct);
    }

    [Fact]
    public async Task Requests_KeepPathQueryAndBody_NeverTheApiKey_AndDropTheGuestsCookies()
    {
        await using var sb = await _server.Client.CreateSandboxAsync(LocalAgentServer.Python, cancellationToken: Ct);
        await sb.Files.WriteAsync("echo.py", EchoServer, Ct);
        int port = LocalAgentServer.FreePort();
        await sb.Commands.StartAsync(["python3", "echo.py", port.ToString()], cancellationToken: Ct);
        (await GetWhenUpAsync($"v1/sandboxes/{sb.Id}/ports/{port}/up")).Dispose();

        using var request = new HttpRequestMessage(HttpMethod.Post, $"v1/sandboxes/{sb.Id}/ports/{port}/a/b?x=1&y=two")
        {
            Content = new StringContent("payload"),
        };
        request.Headers.Add("X-Custom", "kept");
        request.Headers.Authorization = new System.Net.Http.Headers.AuthenticationHeaderValue("Bearer", "the-callers-key");
        using var response = await _server.Http.SendAsync(request, Ct);

        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        var echo = JsonNode.Parse(await response.Content.ReadAsStringAsync(Ct))!;
        Assert.Equal("POST", (string?)echo["method"]);
        Assert.Equal("/a/b?x=1&y=two", (string?)echo["path"]);
        Assert.Equal("payload", (string?)echo["body"]);
        Assert.Equal("kept", (string?)echo["headers"]!["X-Custom"]);
        Assert.Null(echo["headers"]!["Authorization"]);
        Assert.False(response.Headers.Contains("Set-Cookie"));
        // The API's own sandboxing headers, not the guest's.
        Assert.Contains("sandbox", response.Headers.GetValues("Content-Security-Policy").Single());
    }

    [Fact]
    public async Task APortNothingListensOn_Is502PortClosed_AndABadPortIs400()
    {
        await using var sb = await _server.Client.CreateSandboxAsync(LocalAgentServer.Python, cancellationToken: Ct);

        using var closed = await _server.Http.GetAsync($"v1/sandboxes/{sb.Id}/ports/{LocalAgentServer.FreePort()}/", Ct);
        Assert.Equal(HttpStatusCode.BadGateway, closed.StatusCode);
        Assert.Equal("port_closed", (string?)JsonNode.Parse(await closed.Content.ReadAsStringAsync(Ct))!["code"]);

        using var bad = await _server.Http.GetAsync($"v1/sandboxes/{sb.Id}/ports/70000/", Ct);
        Assert.Equal(HttpStatusCode.BadRequest, bad.StatusCode);
        Assert.Equal("invalid_port", (string?)JsonNode.Parse(await bad.Content.ReadAsStringAsync(Ct))!["code"]);

        using var unknown = await _server.Http.GetAsync("v1/sandboxes/sb-nope/ports/8000/", Ct);
        Assert.Equal(HttpStatusCode.NotFound, unknown.StatusCode);
    }
}
