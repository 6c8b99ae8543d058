using System.Collections.Concurrent;
using System.Net.Http.Headers;
using System.Text;
using System.Text.Json;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting.Server;
using Microsoft.AspNetCore.Hosting.Server.Features;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;
using SandboxVM.Core;
using SandboxVM.Core.Egress;
using SandboxVM.Core.Pools;
using SandboxVM.Core.Runs;
using SandboxVM.Core.Templates;
using SandboxVM.Runtime;
using SandboxVM.Testing;

namespace SandboxVM.Server.Tests;

/// <summary>
/// The whole server as ServerApp builds it (middleware, endpoints, sessions, runs), on a loopback
/// port, with <see cref="FakeAgentRuntime"/> (honest fake agents) instead of VMs and every log line captured.
/// </summary>
internal sealed class ApiServer : IAsyncDisposable
{
    /// <summary>A plain template (no network).</summary>
    public const string Template = "py";

    /// <summary>A template whose sandboxes get the host's egress handler (search included).</summary>
    public const string WebTemplate = "web";

    private readonly WebApplication _app;

    private ApiServer(WebApplication app, FakeAgentRuntime runtime, LogCapture logs, string baseUrl)
    {
        _app = app;
        Runtime = runtime;
        Logs = logs;
        BaseUrl = baseUrl;
        Http = new HttpClient { BaseAddress = new Uri(baseUrl), Timeout = TimeSpan.FromSeconds(30) };
    }

    public FakeAgentRuntime Runtime { get; }
    public LogCapture Logs { get; }
    public string BaseUrl { get; }
    public HttpClient Http { get; }
    public IServiceProvider Services => _app.Services;

    private static CancellationToken Ct => TestContext.Current.CancellationToken;

    public static TemplateDefinition[] Templates { get; } =
    [
        new()
        {
            Name = Template,
            Source = new TemplateSource(),
            Language = new LanguageRecipe { Name = "python", SourceFile = "main.py", Run = ["python3", "main.py"] },
            Warmup = new WarmupPolicy { Strategy = WarmupStrategy.Cold },
        },
        new()
        {
            Name = WebTemplate,
            Source = new TemplateSource(),
            Language = new LanguageRecipe { Name = "python", SourceFile = "main.py", Run = ["python3", "main.py"] },
            Warmup = new WarmupPolicy { Strategy = WarmupStrategy.Cold },
            Network = new NetworkPolicy { Mode = NetworkMode.Proxy },
        },
    ];

    /// <summary>Builds the server as <see cref="ServerApp.Build"/> does; the application is not started.</summary>
    public static WebApplication Build(string[] args, FakeAgentRuntime runtime, LogCapture logs, Action<SandboxVmOptions>? configure = null,
        string url = "http://127.0.0.1:0", Action<IServiceCollection>? services = null) =>
        ServerApp.Build(args, o =>
        {
            o.BuildTemplatesOnStart = false;
            o.Pools = false;
            o.StartSingletonsWithServer = false;
            o.CacheGcOnStart = false;
            o.TemplateDirectories = [];
            o.SandboxReapIntervalS = 3600;
            configure?.Invoke(o);
        }, url, s =>
        {
            s.AddSingleton(new TemplateRegistry(Templates));
            s.AddSingleton<IVmRuntime>(runtime);
            s.AddSingleton(new RuntimeChoice("fake", null, "tests"));
            s.AddSingleton(sp => new PoolManager(runtime, new TemplateSpecs(), sp.GetRequiredService<VmTracker>(), sp.GetRequiredService<ILogger<PoolManager>>())
            {
                OnAcquired = sp.GetRequiredService<EgressBridge>().AttachAsync,
                MinHostMemoryBytes = (long)sp.GetRequiredService<SandboxVmOptions>().MinHostMemoryMiB << 20,
            });
            s.AddSingleton<ILoggerProvider>(logs);
            services?.Invoke(s);
        });

    public static async Task<ApiServer> StartAsync(string[]? args = null, Action<SandboxVmOptions>? configure = null,
        Action<IServiceCollection>? services = null, FakeAgentRuntime? runtime = null)
    {
        runtime ??= new FakeAgentRuntime();
        var logs = new LogCapture();
        var app = Build(args ?? [], runtime, logs, configure, services: services);
        await app.StartAsync(Ct);
        string address = app.Services.GetRequiredService<IServer>().Features.Get<IServerAddressesFeature>()!.Addresses.First();
        return new ApiServer(app, runtime, logs, address);
    }

    public async Task<HttpResponseMessage> SendAsync(HttpMethod method, string path, string? key = null, HttpContent? content = null,
        Action<HttpRequestMessage>? configure = null)
    {
        using var request = new HttpRequestMessage(method, path) { Content = content };
        if (key is not null)
        {
            request.Headers.Authorization = new AuthenticationHeaderValue("Bearer", key);
        }
        configure?.Invoke(request);
        var response = await Http.SendAsync(request, Ct);
        await response.Content.LoadIntoBufferAsync(Ct);
        return response;
    }

    public Task<HttpResponseMessage> GetAsync(string path, string? key = null) => SendAsync(HttpMethod.Get, path, key);

    public Task<HttpResponseMessage> PostJsonAsync(string path, string json, string? key = null) =>
        SendAsync(HttpMethod.Post, path, key, Json(json));

    public static StringContent Json(string json) => new(json, Encoding.UTF8, "application/json");

    /// <summary>Creates a sandbox of <paramref name="template"/> as <paramref name="key"/>; its id.</summary>
    public async Task<string> CreateSandboxAsync(string? key = null, string template = Template)
    {
        var response = await PostJsonAsync("/v1/sandboxes", $$"""{"template": "{{template}}"}""", key);
        string body = await response.Content.ReadAsStringAsync(Ct);
        Assert.True(response.StatusCode == System.Net.HttpStatusCode.Created, $"create answered {(int)response.StatusCode}: {body}");
        return JsonDocument.Parse(body).RootElement.GetProperty("id").GetString()!;
    }

    public static async Task<JsonElement> BodyOf(HttpResponseMessage response)
    {
        string text = await response.Content.ReadAsStringAsync(Ct);
        using var doc = JsonDocument.Parse(text);
        return doc.RootElement.Clone();
    }

    public async ValueTask DisposeAsync()
    {
        Http.Dispose();
        await _app.StopAsync(CancellationToken.None);
        await _app.DisposeAsync();
        await Runtime.DisposeAllAsync();
    }
}

/// <summary>Every log line of a server, formatted, with its exception and the values of its structured state.</summary>
internal sealed class LogCapture : ILoggerProvider
{
    private readonly ConcurrentQueue<string> _lines = new();

    public IReadOnlyList<string> Lines => [.. _lines];

    public string All => string.Join('\n', _lines);

    public ILogger CreateLogger(string categoryName) => new Logger(this, categoryName);

    public void Dispose()
    {
    }

    private sealed class Logger(LogCapture owner, string category) : ILogger
    {
        public IDisposable? BeginScope<TState>(TState state) where TState : notnull
        {
            owner._lines.Enqueue($"{category} scope: {Describe(state)}");
            return null;
        }

        public bool IsEnabled(LogLevel logLevel) => true;

        public void Log<TState>(LogLevel logLevel, EventId eventId, TState state, Exception? exception, Func<TState, Exception?, string> formatter) =>
            owner._lines.Enqueue($"{logLevel} {category}: {formatter(state, exception)} {exception} {Describe(state)}");

        private static string Describe<TState>(TState state) => state is IEnumerable<KeyValuePair<string, object?>> values
            ? string.Join(", ", values.Select(v => $"{v.Key}={v.Value}"))
            : state?.ToString() ?? "";
    }
}
