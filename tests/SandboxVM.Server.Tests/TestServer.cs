using System.Net.Http.Headers;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Hosting.Server;
using Microsoft.AspNetCore.Hosting.Server.Features;
using Microsoft.AspNetCore.Http.Json;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;
using SandboxVM.Core.Runs;

namespace SandboxVM.Server.Tests;

/// <summary>
/// Tests that read process-wide state run alone, after the parallel ones: the meter adapter behind
/// /metrics and the trace listener see every server in the process, and a heap bound sees every test's heap.
/// The other classes run side by side (each test starts its own server on its own port).
/// </summary>
[CollectionDefinition(nameof(ProcessWide), DisableParallelization = true)]
public sealed class ProcessWide;

/// <summary>
/// The tools and metrics endpoints behind the same middleware as ServerApp's, on a loopback port, with a
/// fake runner instead of the websearch-tools sandbox.
/// </summary>
internal sealed class TestServer : IAsyncDisposable
{
    private readonly WebApplication _app;

    private TestServer(WebApplication app, Uri baseUri, FakeToolRunner runner)
    {
        _app = app;
        Runner = runner;
        Http = new HttpClient { BaseAddress = baseUri, Timeout = TimeSpan.FromSeconds(30) };
    }

    public FakeToolRunner Runner { get; }

    public HttpClient Http { get; }

    public IServiceProvider Services => _app.Services;

    public static async Task<TestServer> StartAsync(FakeToolRunner? runner = null, string? apiKey = null)
    {
        runner ??= new FakeToolRunner();
        var builder = WebApplication.CreateSlimBuilder();
        builder.WebHost.UseUrls("http://127.0.0.1:0");
        builder.Logging.ClearProviders();
        builder.Services.Configure<JsonOptions>(o => ServerApp.ConfigureJson(o.SerializerOptions));
        builder.Services.AddSingleton(new SandboxVM.Core.SandboxVmOptions());
        HttpSurface.AddServices(builder.Services, CallerStore.Create(apiKey, null, new SandboxVM.Core.KeyLimitOptions()),
            new AllowedHosts(["127.0.0.1"]));
        builder.Services.AddSingleton<IToolRunner>(runner);
        ToolsEndpoints.AddServices(builder.Services);
        MetricsExporter.AddServices(builder.Services);
        var app = builder.Build();
        HttpSurface.Use(app);
        ToolsEndpoints.Map(app);
        MetricsExporter.Map(app);
        await app.StartAsync(TestContext.Current.CancellationToken);
        string address = app.Services.GetRequiredService<IServer>().Features.Get<IServerAddressesFeature>()!.Addresses.First();
        return new TestServer(app, new Uri(address + "/"), runner);
    }

    public Task<HttpResponseMessage> PostJsonAsync(string path, string json, string? apiKey = null)
    {
        var request = new HttpRequestMessage(HttpMethod.Post, path.TrimStart('/'))
        {
            Content = new StringContent(json, System.Text.Encoding.UTF8, "application/json"),
        };
        if (apiKey is not null)
        {
            request.Headers.Authorization = new AuthenticationHeaderValue("Bearer", apiKey);
        }
        return Http.SendAsync(request, TestContext.Current.CancellationToken);
    }

    public Task<HttpResponseMessage> GetAsync(string path, string? apiKey = null)
    {
        var request = new HttpRequestMessage(HttpMethod.Get, path.TrimStart('/'));
        if (apiKey is not null)
        {
            request.Headers.Authorization = new AuthenticationHeaderValue("Bearer", apiKey);
        }
        return Http.SendAsync(request, TestContext.Current.CancellationToken);
    }

    public async ValueTask DisposeAsync()
    {
        Http.Dispose();
        await _app.StopAsync(CancellationToken.None);
        await _app.DisposeAsync();
    }
}

/// <summary>Answers tool runs with canned results and remembers every request.</summary>
internal sealed class FakeToolRunner : IToolRunner
{
    private readonly Lock _lock = new();

    public Func<RunRequest, RunResult> Respond { get; set; } = _ => Ok("""{"results": []}""");

    public List<RunRequest> Requests { get; } = [];

    public RunRequest LastRequest
    {
        get
        {
            lock (_lock)
            {
                return Requests[^1];
            }
        }
    }

    public Task<RunResult> RunAsync(RunRequest request, CancellationToken cancellationToken)
    {
        lock (_lock)
        {
            Requests.Add(request);
        }
        return Task.FromResult(Respond(request));
    }

    public static RunResult Ok(string stdout) => Exited(0, stdout);

    public static RunResult Exited(int code, string stdout, string stderr = "") => new()
    {
        Status = code == 0 ? RunStatus.Ok : RunStatus.Error,
        ExitCode = code,
        Stdout = stdout,
        Stderr = stderr,
        Output = stdout + stderr,
        Metrics = new RunMetrics { QueueMs = 1, RunMs = 120, TotalMs = 150, VmSource = "singleton" },
    };

    public static RunResult Failed(RunStatus status, string error) => new()
    {
        Status = status,
        Error = error,
        Metrics = new RunMetrics { TotalMs = 60_000, VmSource = "singleton" },
    };

    /// <summary>The argv the driver would hand the module, read back from the request's stdin.</summary>
    public static List<string> ArgvOf(RunRequest request)
    {
        using var doc = System.Text.Json.JsonDocument.Parse(request.Stdin!);
        return [.. doc.RootElement.GetProperty("argv").EnumerateArray().Select(a => a.GetString()!)];
    }
}
