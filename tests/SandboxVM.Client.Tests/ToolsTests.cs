using System.Net;
using System.Text.Json;

namespace SandboxVM.Client.Tests;

[Trait("tier", "unit")]
public class ToolsTests
{
    private const string SearchAnswer = """
        {"results": [{"title": "Example Domain", "url": "https://example.com/", "snippet": "For use in examples"},
                     {"title": null, "url": "https://b.example/", "snippet": ""}],
         "metrics": {"queue_ms": 1, "startup_ms": 0, "compile_ms": 0, "run_ms": 200, "host_ms": 3, "total_ms": 204.5, "vm_source": "singleton"}}
        """;

    private const string FetchAnswer = """
        {"status": 404, "url": "http://example.com/x", "final_url": "https://example.com/x/", "content_type": "text/html; charset=utf-8",
         "title": null, "text": "Not here", "links": [{"url": "https://example.com/", "text": "Home"}], "truncated": true, "bytes": 5120,
         "metrics": {"total_ms": 88, "vm_source": "singleton"}, "something_newer": {"a": 1}}
        """;

    private static (SandboxClient Client, FakeHandler Handler) Create(HttpResponseMessage response, string? apiKey = null)
    {
        var handler = new FakeHandler(_ => response);
        return (new SandboxClient(new SandboxClientOptions { BaseUrl = "http://sandbox.test:8000", ApiKey = apiKey, HttpMessageHandler = handler }), handler);
    }

    [Fact]
    public async Task Search_PostsQueryAndMaxResults_AndReadsTheHits()
    {
        var (client, handler) = Create(FakeHandler.Response(HttpStatusCode.OK, SearchAnswer), apiKey: "k");
        using var _ = client;

        var found = await client.Tools.SearchAsync("example \"domain\"\n", maxResults: 3, TestContext.Current.CancellationToken);

        Assert.Equal(HttpMethod.Post, handler.LastRequest.Method);
        Assert.Equal("http://sandbox.test:8000/v1/tools/search", handler.LastRequest.RequestUri!.ToString());
        Assert.Equal("Bearer k", handler.LastRequest.Headers.Authorization!.ToString());
        using var body = JsonDocument.Parse(handler.LastBody!);
        Assert.Equal(["query", "max_results"], body.RootElement.EnumerateObject().Select(p => p.Name));
        Assert.Equal("example \"domain\"\n", body.RootElement.GetProperty("query").GetString());
        Assert.Equal(3, body.RootElement.GetProperty("max_results").GetInt32());

        Assert.Equal(2, found.Results.Count);
        Assert.Equal("Example Domain", found.Results[0].Title);
        Assert.Equal("https://example.com/", found.Results[0].Url);
        Assert.Equal("For use in examples", found.Results[0].Snippet);
        Assert.Equal("", found.Results[1].Title);
        Assert.Equal(204.5, found.Metrics.TotalMs);
        Assert.Equal(VmSource.Singleton, found.Metrics.VmSource);
    }

    [Fact]
    public async Task Search_SendsFiveResultsByDefault()
    {
        var (client, handler) = Create(FakeHandler.Response(HttpStatusCode.OK, """{"results": []}"""));
        using var _ = client;

        var found = await client.Tools.SearchAsync("q", cancellationToken: TestContext.Current.CancellationToken);

        Assert.Equal("""{"query":"q","max_results":5}""", handler.LastBody);
        Assert.Empty(found.Results);
        Assert.NotNull(found.Metrics);
    }

    [Fact]
    public async Task Fetch_PostsTheUrlAsGiven_AndReadsThePage()
    {
        var (client, handler) = Create(FakeHandler.Response(HttpStatusCode.OK, FetchAnswer));
        using var _ = client;
        const string url = "http://example.com/x?a=\"b\"&c=d e";

        var page = await client.Tools.FetchAsync(url, TestContext.Current.CancellationToken);

        Assert.Equal("http://sandbox.test:8000/v1/tools/fetch", handler.LastRequest.RequestUri!.ToString());
        using var body = JsonDocument.Parse(handler.LastBody!);
        Assert.Equal(url, body.RootElement.GetProperty("url").GetString());
        Assert.Equal(404, page.Status);
        Assert.False(page.IsSuccess);
        Assert.Equal("http://example.com/x", page.Url);
        Assert.Equal("https://example.com/x/", page.FinalUrl);
        Assert.Equal("text/html; charset=utf-8", page.ContentType);
        Assert.Null(page.Title);
        Assert.Equal("Not here", page.Text);
        Assert.Equal("Home", Assert.Single(page.Links).Text);
        Assert.Equal("https://example.com/", page.Links[0].Url);
        Assert.True(page.Truncated);
        Assert.Equal(5120, page.Bytes);
        Assert.Equal(88, page.Metrics.TotalMs);
    }

    [Fact]
    public async Task Fetch_AcceptsAUri()
    {
        var (client, handler) = Create(FakeHandler.Response(HttpStatusCode.OK, FetchAnswer));
        using var _ = client;

        await client.Tools.FetchAsync(new Uri("https://example.com/a b"), TestContext.Current.CancellationToken);

        Assert.Equal("https://example.com/a b", JsonDocument.Parse(handler.LastBody!).RootElement.GetProperty("url").GetString());
    }

    [Fact]
    public async Task EmptyArguments_AreRefusedBeforeAnyCall()
    {
        var (client, handler) = Create(FakeHandler.Response(HttpStatusCode.OK, "{}"));
        using var _ = client;

        await Assert.ThrowsAsync<ArgumentException>(() => client.Tools.SearchAsync("", cancellationToken: TestContext.Current.CancellationToken));
        await Assert.ThrowsAsync<ArgumentNullException>(() => client.Tools.FetchAsync((string)null!, TestContext.Current.CancellationToken));
        Assert.Empty(handler.Requests);
    }

    [Fact]
    public async Task EgressDenied_IsAnEgressDeniedException_WithTheReason_NotAnAuthError()
    {
        var problem = FakeHandler.Response(HttpStatusCode.Forbidden,
            """{"type":"urn:sandboxvm:problem:egress_denied","title":"Forbidden","status":403,"detail":"the sandbox may not connect there (private_address): 10.0.0.1","code":"egress_denied","field":"url","reason":"private_address"}""",
            "application/problem+json");
        var (client, _) = Create(problem);
        using var _c = client;

        var ex = await Assert.ThrowsAsync<EgressDeniedException>(() => client.Tools.FetchAsync("http://10.0.0.1/", TestContext.Current.CancellationToken));

        Assert.Equal("private_address", ex.Reason);
        Assert.Equal("egress_denied", ex.Code);
        Assert.Equal("url", ex.Field);
        Assert.Equal(HttpStatusCode.Forbidden, ex.StatusCode);
        Assert.Contains("private_address", ex.Message);
    }

    [Theory]
    [InlineData(HttpStatusCode.BadGateway, "fetch_failed", false)]
    [InlineData(HttpStatusCode.BadGateway, "fetch_too_large", false)]
    [InlineData(HttpStatusCode.BadGateway, "search_failed", false)]
    [InlineData(HttpStatusCode.GatewayTimeout, "upstream_timeout", true)]
    [InlineData(HttpStatusCode.GatewayTimeout, "tool_timeout", true)]
    [InlineData(HttpStatusCode.BadGateway, "tool_failed", false)]
    [InlineData(HttpStatusCode.BadGateway, "sandbox_error", false)]
    public async Task ToolFailures_AreToolFailedExceptions(HttpStatusCode status, string code, bool timeout)
    {
        var (client, _) = Create(FakeHandler.Problem(status, code));
        using var _c = client;

        var ex = await Assert.ThrowsAsync<ToolFailedException>(() => client.Tools.FetchAsync("https://example.com/", TestContext.Current.CancellationToken));

        Assert.Equal(code, ex.Code);
        Assert.Equal(status, ex.StatusCode);
        Assert.Equal(timeout, ex.IsTimeout);
    }

    [Theory]
    [InlineData(HttpStatusCode.ServiceUnavailable, "search_not_configured", typeof(SearchNotConfiguredException))]
    [InlineData(HttpStatusCode.Conflict, "template_unavailable", typeof(SandboxUnavailableException))]
    [InlineData(HttpStatusCode.TooManyRequests, "overloaded", typeof(SandboxUnavailableException))]
    [InlineData(HttpStatusCode.BadRequest, "invalid_url", typeof(SandboxBadRequestException))]
    [InlineData(HttpStatusCode.BadRequest, "invalid_argument", typeof(SandboxBadRequestException))]
    [InlineData(HttpStatusCode.BadRequest, "missing_field", typeof(SandboxBadRequestException))]
    [InlineData(HttpStatusCode.Unauthorized, "unauthorized", typeof(SandboxAuthException))]
    public async Task OtherToolProblems_MapToTheirExceptionTypes(HttpStatusCode status, string code, Type expected)
    {
        var (client, _) = Create(FakeHandler.Problem(status, code, field: "query"));
        using var _c = client;

        var ex = await Assert.ThrowsAnyAsync<SandboxApiException>(() => client.Tools.SearchAsync("q", cancellationToken: TestContext.Current.CancellationToken));

        Assert.IsType(expected, ex);
        Assert.Equal(code, ex.Code);
    }

    [Fact]
    public async Task SearchNotConfigured_IsAnUnavailableException()
    {
        var (client, _) = Create(FakeHandler.Problem(HttpStatusCode.ServiceUnavailable, "search_not_configured"));
        using var _c = client;

        await Assert.ThrowsAnyAsync<SandboxUnavailableException>(() => client.Tools.SearchAsync("q", cancellationToken: TestContext.Current.CancellationToken));
    }
}
