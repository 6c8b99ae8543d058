using System.Text;
using SandboxVM.Egress.Search;

namespace SandboxVM.Egress.Tests;

[Trait("tier", "unit")]
public class SearchProviderTests
{
    private static CancellationToken Ct => TestContext.Current.CancellationToken;

    /// <summary>No proxy at all: the tests talk to loopback only, whatever the environment says.</summary>
    private static HttpClient Direct() => new(new SocketsHttpHandler { UseProxy = false }) { Timeout = Timeout.InfiniteTimeSpan };

    private static ISearchProvider Provider(string provider, string baseUrl, HttpClient http, string? key = null, TimeSpan? timeout = null, int maxBytes = 1 << 20) =>
        SearchProviderFactory.Create(new SearchOptions
        {
            Provider = provider,
            BaseUrl = baseUrl,
            ApiKey = key,
            Timeout = timeout ?? TimeSpan.FromSeconds(10),
            MaxResponseBytes = maxBytes,
        }, http);

    private const string SearXngJson = """
        {"query": "rust lang", "number_of_results": 3, "results": [
          {"title": "Rust &amp; <b>Cargo</b>", "url": "https://www.rust-lang.test/", "content": "A language  empowering\n everyone.", "engine": "x"},
          {"title": "Bad", "url": "javascript:alert(1)", "content": "skipped"},
          {"title": "The Book", "url": "https://doc.rust-lang.test/book/", "content": "Learn Rust"},
          {"title": "Third", "url": "http://third.test/", "content": null}
        ]}
        """;

    [Fact]
    public async Task SearXNG_results_come_from_the_json_api()
    {
        await using var server = FakeHttpServer.Responding(200, "application/json", SearXngJson);
        using var http = Direct();
        var provider = Provider("searxng", server.BaseUrl + "/searx/", http);

        var results = await provider.SearchAsync("  rust lang ", 2, Ct);

        Assert.Equal("searxng", provider.Name);
        Assert.Equal(
        [
            new SearchResult("Rust & Cargo", "https://www.rust-lang.test/", "A language empowering everyone."),
            new SearchResult("The Book", "https://doc.rust-lang.test/book/", "Learn Rust"),
        ], results);
        var request = Assert.Single(server.Requests);
        Assert.Equal("GET", request.Method);
        Assert.Equal("/searx/search?q=rust%20lang&format=json", request.Target);
        Assert.Equal("SandboxVM-Search/1.0", request.Header("User-Agent"));
    }

    [Fact]
    public async Task Brave_sends_the_key_and_reads_web_results()
    {
        const string json = """
            {"type": "search", "web": {"type": "search", "results": [
              {"title": "Example <strong>Domain</strong>", "url": "https://example.test/", "description": "This <strong>domain</strong> is for use in &quot;examples&quot;."},
              {"title": "Two", "url": "https://two.test/a?b=c", "description": "second"}
            ]}}
            """;
        await using var server = FakeHttpServer.Responding(200, "application/json", json);
        using var http = Direct();
        var provider = Provider("Brave", server.BaseUrl, http, key: "KEY-123");

        var results = await provider.SearchAsync("example domain", 50, Ct);

        Assert.Equal(2, results.Count);
        Assert.Equal(new SearchResult("Example Domain", "https://example.test/", "This domain is for use in \"examples\"."), results[0]);
        Assert.Equal("https://two.test/a?b=c", results[1].Url);
        var request = Assert.Single(server.Requests);
        Assert.Equal("/res/v1/web/search?q=example%20domain&count=20", request.Target);
        Assert.Equal("KEY-123", request.Header("X-Subscription-Token"));
        Assert.Contains("application/json", request.Header("Accept"));
    }

    [Fact]
    public async Task Brave_without_web_results_is_an_empty_list()
    {
        await using var server = FakeHttpServer.Responding(200, "application/json", """{"type":"search","query":{"original":"x"}}""");
        using var http = Direct();
        Assert.Empty(await Provider("brave", server.BaseUrl, http, key: "k").SearchAsync("x", 5, Ct));
    }

    private const string DuckDuckGoHtml = """
        <!DOCTYPE html>
        <html><head><title>rust at DuckDuckGo</title></head>
        <body>
        <div class="serp__results">
          <div class="result results_links results_links_deep result--ad">
            <div class="links_main links_deep result__body">
              <h2 class="result__title"><a rel="nofollow" class="result__a" href="https://duckduckgo.test/y.js?ad_domain=ads.test&amp;u3=x">Buy Rust Now</a></h2>
              <a class="result__snippet" href="https://duckduckgo.test/y.js?ad_domain=ads.test">An advert.</a>
            </div>
          </div>
          <div class="result results_links results_links_deep web-result ">
            <div class="links_main links_deep result__body">
              <h2 class="result__title">
                <a rel="nofollow" class="result__a" href="//duckduckgo.test/l/?uddg=https%3A%2F%2Fwww.rust%2Dlang.test%2Flearn%3Fa%3D1%26b%3D2&amp;rut=abc123">Learn <b>Rust</b> &ndash; Rust Programming Language</a>
              </h2>
              <div class="result__extras"><a class="result__url" href="//duckduckgo.test/l/?uddg=https%3A%2F%2Fwww.rust%2Dlang.test%2Flearn">www.rust-lang.test/learn</a></div>
              <a class="result__snippet" href="//duckduckgo.test/l/?uddg=x">Get started with <b>Rust</b> &amp; Cargo.
                Tutorials &#x2014; docs.</a>
            </div>
          </div>
          <div class="result results_links results_links_deep web-result ">
            <div class="links_main links_deep result__body">
              <h2 class="result__title"><a rel='nofollow' class='result__a' href='https://plain.test/page'>Plain&nbsp;link</a></h2>
              <div class="result__snippet">No <i>redirect</i> here</div>
            </div>
          </div>
          <div class="result results_links results_links_deep web-result ">
            <h2 class="result__title"><a class="result__a" href="https://third.test/">Third</a></h2>
          </div>
        </div>
        </body></html>
        """;

    [Fact]
    public async Task DuckDuckGo_html_is_parsed_ads_skipped_and_redirects_unwrapped()
    {
        await using var server = FakeHttpServer.Responding(200, "text/html; charset=utf-8", DuckDuckGoHtml);
        using var http = Direct();
        var provider = Provider("duckduckgo", server.BaseUrl, http);

        var results = await provider.SearchAsync("rust", 10, Ct);

        Assert.Equal(3, results.Count);
        Assert.Equal(new SearchResult("Learn Rust – Rust Programming Language", "https://www.rust-lang.test/learn?a=1&b=2",
            "Get started with Rust & Cargo. Tutorials — docs."), results[0]);
        Assert.Equal(new SearchResult("Plain link", "https://plain.test/page", "No redirect here"), results[1]); // &nbsp; is whitespace
        Assert.Equal(new SearchResult("Third", "https://third.test/", ""), results[2]);
        Assert.Equal("/html/?q=rust", Assert.Single(server.Requests).Target);

        Assert.Single(await provider.SearchAsync("rust", 1, Ct));
    }

    [Fact]
    public void DuckDuckGo_parsing_survives_garbage()
    {
        Assert.Empty(DuckDuckGoSearchProvider.ParseHtml("", 10));
        Assert.Empty(DuckDuckGoSearchProvider.ParseHtml("<a class=\"result__a\" href=\"", 10));
        Assert.Empty(DuckDuckGoSearchProvider.ParseHtml("<<<>>> <a class=result__a href=javascript:x>t</a>", 10));
        var r = Assert.Single(DuckDuckGoSearchProvider.ParseHtml("<a class=result__a href=https://x.test/>unclosed title", 10));
        Assert.Equal("https://x.test/", r.Url);
        Assert.Equal("https://a.test/?q=1+2", DuckDuckGoSearchProvider.Unwrap("/l/?kh=-1&uddg=https%3A%2F%2Fa.test%2F%3Fq%3D1%2B2"));
    }

    [Theory]
    [InlineData(null, "no search provider is set")]
    [InlineData("", "no search provider is set")]
    [InlineData("bing", "unknown search provider 'bing'")]
    public void Without_a_provider_search_is_not_configured(string? provider, string message)
    {
        var e = Assert.Throws<SearchNotConfiguredException>(() => SearchProviderFactory.Create(new SearchOptions { Provider = provider, BaseUrl = "http://127.0.0.1:1" }));
        Assert.Contains(message, e.Message);
        Assert.StartsWith("web search is not configured", e.Message);
    }

    [Theory]
    [InlineData("searxng", null, null, "needs a base URL")]
    [InlineData("duckduckgo", "   ", null, "needs a base URL")]
    [InlineData("searxng", "ftp://127.0.0.1/", null, "is not an http(s) URL")]
    [InlineData("searxng", "127.0.0.1:8080", null, "is not an http(s) URL")]
    [InlineData("brave", "http://127.0.0.1:1", null, "needs an API key")]
    public void Missing_settings_are_reported(string provider, string? baseUrl, string? key, string message)
    {
        var e = Assert.Throws<SearchNotConfiguredException>(() =>
            SearchProviderFactory.Create(new SearchOptions { Provider = provider, BaseUrl = baseUrl, ApiKey = key }));
        Assert.Contains(message, e.Message);
    }

    [Fact]
    public async Task Bad_queries_are_argument_errors()
    {
        using var http = Direct();
        var provider = Provider("searxng", "http://127.0.0.1:1", http);
        await Assert.ThrowsAsync<ArgumentException>(() => provider.SearchAsync("   ", 5, Ct));
        await Assert.ThrowsAsync<ArgumentException>(() => provider.SearchAsync(new string('x', SearchOptions.MaxQueryLength + 1), 5, Ct));
        await Assert.ThrowsAsync<ArgumentOutOfRangeException>(() => provider.SearchAsync("ok", 0, Ct));
    }

    [Fact]
    public async Task An_error_status_is_a_search_failure_with_the_status()
    {
        await using var server = FakeHttpServer.Responding(503, "text/plain", "busy");
        using var http = Direct();
        var e = await Assert.ThrowsAsync<SearchFailedException>(() => Provider("searxng", server.BaseUrl, http).SearchAsync("x", 5, Ct));
        Assert.Equal(503, e.StatusCode);
        Assert.Contains("HTTP 503", e.Message);
    }

    [Fact]
    public async Task Unreadable_answers_are_search_failures()
    {
        await using var server = FakeHttpServer.Responding(200, "application/json", "<html>not json</html>");
        using var http = Direct();
        var e = await Assert.ThrowsAsync<SearchFailedException>(() => Provider("searxng", server.BaseUrl, http).SearchAsync("x", 5, Ct));
        Assert.Contains("could not be read", e.Message);

        await using var noResults = FakeHttpServer.Responding(200, "application/json", """{"answers": []}""");
        await Assert.ThrowsAsync<SearchFailedException>(() => Provider("searxng", noResults.BaseUrl, http).SearchAsync("x", 5, Ct));
    }

    [Fact]
    public async Task A_refused_connection_is_a_search_failure()
    {
        var listener = new System.Net.Sockets.TcpListener(System.Net.IPAddress.Loopback, 0);
        listener.Start();
        var port = ((System.Net.IPEndPoint)listener.LocalEndpoint).Port;
        listener.Stop();
        listener.Dispose();
        using var http = Direct();
        var e = await Assert.ThrowsAsync<SearchFailedException>(() => Provider("searxng", $"http://127.0.0.1:{port}", http).SearchAsync("x", 5, Ct));
        Assert.IsType<HttpRequestException>(e.InnerException);
    }

    [Fact]
    public async Task An_announced_oversized_answer_is_refused_before_reading()
    {
        await using var server = new FakeHttpServer(async (_, client, ct) =>
        {
            var s = client.GetStream();
            await s.WriteAsync("HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 104857600\r\n\r\n{\"results\":["u8.ToArray(), ct);
            await Task.Delay(Timeout.Infinite, ct);
        });
        using var http = Direct();
        var e = await Assert.ThrowsAsync<SearchFailedException>(() => Provider("searxng", server.BaseUrl, http, maxBytes: 4096).SearchAsync("x", 5, Ct));
        Assert.Contains("larger than the limit of 4096 bytes", e.Message);
    }

    [Fact]
    public async Task An_unannounced_oversized_answer_is_cut_off()
    {
        await using var server = new FakeHttpServer(async (_, client, ct) =>
        {
            // No Content-Length: the body runs until the connection closes, and it is long.
            var s = client.GetStream();
            await s.WriteAsync("HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nConnection: close\r\n\r\n"u8.ToArray(), ct);
            var chunk = Encoding.ASCII.GetBytes(new string('x', 1024));
            for (var i = 0; i < 1024; i++)
                await s.WriteAsync(chunk, ct);
        });
        using var http = Direct();
        var e = await Assert.ThrowsAsync<SearchFailedException>(() => Provider("duckduckgo", server.BaseUrl, http, maxBytes: 8192).SearchAsync("x", 5, Ct));
        Assert.Contains("larger than the limit of 8192 bytes", e.Message);
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public async Task A_slow_answer_hits_the_timeout(bool headersFirst)
    {
        await using var server = new FakeHttpServer(async (_, client, ct) =>
        {
            if (headersFirst)
                await client.GetStream().WriteAsync("HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"res"u8.ToArray(), ct);
            await Task.Delay(Timeout.Infinite, ct);
        });
        using var http = Direct();
        var started = DateTime.UtcNow;
        var e = await Assert.ThrowsAsync<SearchFailedException>(() =>
            Provider("searxng", server.BaseUrl, http, timeout: TimeSpan.FromMilliseconds(300)).SearchAsync("x", 5, Ct));
        Assert.IsType<TimeoutException>(e.InnerException);
        Assert.Contains("within 0.3 s", e.Message);
        Assert.True(DateTime.UtcNow - started < TimeSpan.FromSeconds(20));
    }

    [Fact]
    public async Task The_http_client_goes_through_an_explicit_upstream_proxy()
    {
        // The fake proxy answers the forwarded request itself: search.test is never resolved anywhere.
        await using var proxy = FakeHttpServer.Responding(200, "application/json", SearXngJson);
        using var http = SearchProviderFactory.CreateHttpClient(UpstreamProxy.Parse($"http://127.0.0.1:{proxy.Port}"));

        var results = await Provider("searxng", "http://search.test:8888", http).SearchAsync("via proxy", 3, Ct);

        Assert.Equal(3, results.Count);
        var request = Assert.Single(proxy.Requests);
        Assert.Equal("GET http://search.test:8888/search?q=via%20proxy&format=json HTTP/1.1", request.RequestLine);
    }

    [Fact]
    public async Task NO_PROXY_of_an_explicit_upstream_proxy_is_honoured_by_the_http_client()
    {
        await using var server = FakeHttpServer.Responding(200, "application/json", SearXngJson);
        await using var proxy = FakeHttpServer.Responding(500, "text/plain", "should not be used");
        using var http = SearchProviderFactory.CreateHttpClient(UpstreamProxy.Parse($"http://127.0.0.1:{proxy.Port}", "127.0.0.1"));

        Assert.Equal(3, (await Provider("searxng", server.BaseUrl, http).SearchAsync("x", 5, Ct)).Count);
        Assert.Equal(0, proxy.Accepted);
    }

    [Fact]
    public async Task Caller_cancellation_is_not_a_search_failure()
    {
        await using var server = new FakeHttpServer((_, _, ct) => Task.Delay(Timeout.Infinite, ct));
        using var http = Direct();
        using var cts = CancellationTokenSource.CreateLinkedTokenSource(Ct);
        cts.CancelAfter(200);
        await Assert.ThrowsAnyAsync<OperationCanceledException>(() => Provider("searxng", server.BaseUrl, http).SearchAsync("x", 5, cts.Token));
    }
}
