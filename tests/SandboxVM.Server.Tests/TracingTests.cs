using System.Net;
using System.Text;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting.Server;
using Microsoft.AspNetCore.Hosting.Server.Features;
using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;
using OpenTelemetry.Trace;
using SandboxVM.Testing;

namespace SandboxVM.Server.Tests;

/// <summary>Runs traced to an OpenTelemetry collector over OTLP/HTTP: a collector on loopback receives them.</summary>
[Trait("tier", "integration")]
[Collection(nameof(ProcessWide))]
public sealed class TracingTests
{
    private static CancellationToken Ct => TestContext.Current.CancellationToken;

    [Fact]
    public async Task ARun_IsExportedByOtlp_AsARunSpanWithItsPhases()
    {
        await using var collector = await FakeCollector.StartAsync();
        await using var server = await ApiServer.StartAsync(configure: o => o.OtlpEndpoint = collector.BaseUrl);

        var response = await server.PostJsonAsync("/v1/run", """{"template": "py", "code": "print(1)"}""");
        Assert.Equal(HttpStatusCode.OK, response.StatusCode);

        // OTLP/protobuf carries names and string attributes as plain UTF-8: what a collector would show.
        // The request's span ends after its response is sent: flushed until both are there (a batch goes within 5 s anyway).
        var tracer = server.Services.GetRequiredService<TracerProvider>();
        await Eventually.TrueAsync(() => tracer.ForceFlush(1000) && collector.Received.Contains("sandboxvm.run", StringComparison.Ordinal)
            && collector.Received.Contains("POST /v1/run", StringComparison.Ordinal), () => "the run's and the request's spans at the collector");
        string sent = collector.Received;
        Assert.Contains("sandboxvm", sent); // service.name
        foreach (var phase in new[] { "queue", "acquire", "exec", "run", "artifacts" })
        {
            Assert.Contains(phase, sent);
        }
        Assert.Contains("sandboxvm.template", sent);
        Assert.Contains("POST /v1/run", sent); // the request's span from ASP.NET Core, the run's parent
    }

    [Fact]
    public async Task WithoutAnEndpoint_ThereIsNoTracer()
    {
        await using var server = await ApiServer.StartAsync();
        Assert.Null(server.Services.GetService<TracerProvider>());
    }

    /// <summary>An OTLP/HTTP collector that keeps what it was sent.</summary>
    private sealed class FakeCollector : IAsyncDisposable
    {
        private readonly WebApplication _app;
        private readonly StringBuilder _received = new();

        private FakeCollector(WebApplication app) => _app = app;

        public string BaseUrl { get; private set; } = "";

        public string Received
        {
            get
            {
                lock (_received)
                {
                    return _received.ToString();
                }
            }
        }

        public static async Task<FakeCollector> StartAsync()
        {
            var builder = WebApplication.CreateSlimBuilder();
            builder.Logging.ClearProviders();
            builder.WebHost.UseSetting("urls", "http://127.0.0.1:0");
            var app = builder.Build();
            var collector = new FakeCollector(app);
            app.MapPost("/v1/traces", async (HttpContext context) =>
            {
                using var body = new MemoryStream();
                await context.Request.Body.CopyToAsync(body, context.RequestAborted);
                lock (collector._received)
                {
                    collector._received.Append(Encoding.UTF8.GetString(body.ToArray()));
                }
                context.Response.ContentType = "application/x-protobuf";
                return Results.Ok();
            });
            await app.StartAsync(Ct);
            collector.BaseUrl = app.Services.GetRequiredService<IServer>().Features.Get<IServerAddressesFeature>()!.Addresses.First();
            return collector;
        }

        public async ValueTask DisposeAsync() => await _app.DisposeAsync();
    }
}
