using System.Net;
using System.Text;
using System.Text.Json;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Hosting.Server;
using Microsoft.AspNetCore.Hosting.Server.Features;
using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;
using SandboxVM.Egress;

namespace SandboxVM.Functional.Tests;

/// <summary>
/// A web site on 127.0.0.1 (never anything else) for the egress tests: an HTML page, a redirect chain,
/// a large page, a slow page, and a SearXNG-compatible <c>/search?q=..&amp;format=json</c>.
/// </summary>
public sealed class EgressTestSite : IAsyncDisposable
{
    public const string PageTitle = "Egress Test Page";
    public const string PageText = "The quick brown fox jumps over the lazy dog";
    public const int LargeBytes = 6 * 1024 * 1024;

    private readonly WebApplication _app;
    private int _searches;

    private EgressTestSite(WebApplication app) => _app = app;

    public int Port { get; private set; }
    public string BaseUrl => $"http://127.0.0.1:{Port}";
    public int Searches => Volatile.Read(ref _searches);

    public static async Task<EgressTestSite> StartAsync()
    {
        var builder = WebApplication.CreateSlimBuilder();
        builder.Logging.ClearProviders();
        builder.WebHost.UseUrls("http://127.0.0.1:0");
        var app = builder.Build();
        var site = new EgressTestSite(app);
        app.MapGet("/page", () => Results.Content(
            $$"""
            <!doctype html><html><head><title>{{PageTitle}}</title><style>body { color: red }</style>
            <script>var hidden = "script text";</script></head>
            <body><nav><a href="/nav-only">Navigation</a></nav><header>Site header</header>
            <main><h1>Main heading</h1><p>{{PageText}}.</p>
            <p>See <a href="/other">the other page</a> and <a href="http://127.0.0.1:{{site.Port}}/abs#frag">an absolute link</a>.</p></main>
            <footer>Footer text</footer></body></html>
            """, "text/html; charset=utf-8"));
        app.MapGet("/other", () => Results.Content("<html><head><title>Other</title></head><body><p>other page</p></body></html>", "text/html"));
        app.MapGet("/redirect/{n:int}", (int n) => Results.Redirect(n <= 1 ? "/page" : $"/redirect/{n - 1}"));
        app.MapGet("/large", async (HttpContext context) =>
        {
            context.Response.ContentType = "text/plain";
            byte[] line = Encoding.ASCII.GetBytes(new string('x', 1023) + "\n");
            for (int i = 0; i < LargeBytes / line.Length && !context.RequestAborted.IsCancellationRequested; i++)
            {
                await context.Response.Body.WriteAsync(line, context.RequestAborted);
            }
        });
        app.MapGet("/slow", async (HttpContext context) =>
        {
            // Bounded: the client gives up long before, and the request's abort ends it at once.
            await Task.Delay(TimeSpan.FromSeconds(20), context.RequestAborted);
            return Results.Content("<html><title>slow</title></html>", "text/html");
        });
        app.MapGet("/search", (string? q, string? format) =>
        {
            Interlocked.Increment(ref site._searches);
            if (format != "json")
            {
                return Results.BadRequest();
            }
            var results = Enumerable.Range(1, 8).Select(i => new
            {
                title = $"Result {i} for {q}",
                url = $"https://example.org/{i}",
                content = $"Snippet {i} about {q}",
            });
            return Results.Json(new { query = q, results }, new JsonSerializerOptions());
        });
        await app.StartAsync();
        site.Port = new Uri(app.Services.GetRequiredService<IServer>().Features.Get<IServerAddressesFeature>()!.Addresses.First()).Port;
        return site;
    }

    public async ValueTask DisposeAsync()
    {
        await _app.StopAsync();
        await _app.DisposeAsync();
    }
}

/// <summary>Name resolution for the tests' gateways: a fixed map, never DNS.</summary>
public sealed class TestResolver : IEgressResolver
{
    /// <summary>Resolves to a private address (10.1.2.3).</summary>
    public const string PrivateName = "private.egress.test";

    public Task<IReadOnlyList<IPAddress>> ResolveAsync(string host, CancellationToken cancellationToken) => host switch
    {
        PrivateName => Task.FromResult<IReadOnlyList<IPAddress>>([IPAddress.Parse("10.1.2.3")]),
        _ => throw new InvalidOperationException($"{host}: the tests resolve no real names"),
    };
}
