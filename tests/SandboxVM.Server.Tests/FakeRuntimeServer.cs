using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting.Server;
using Microsoft.AspNetCore.Hosting.Server.Features;
using Microsoft.AspNetCore.Server.Kestrel.Core;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;
using SandboxVM.Core;
using SandboxVM.Core.Pools;
using SandboxVM.Core.Runs;
using SandboxVM.Core.Templates;
using SandboxVM.Runtime;
using SandboxVM.Testing;

namespace SandboxVM.Server.Tests;

/// <summary>
/// The whole server (ServerApp, every endpoint, runs, sessions, pools) on loopback with the runtime a
/// test gives it, and templates from YAML the test writes (loaded by the real template loader). Images
/// are never built: each sandbox's spec is the template's resources with no root filesystem.
/// </summary>
internal sealed class LoopbackServer : IAsyncDisposable
{
    private readonly WebApplication _app;
    private readonly string _dir;

    private LoopbackServer(WebApplication app, string dir, Uri baseUri)
    {
        _app = app;
        _dir = dir;
        BaseUri = baseUri;
        Http = new HttpClient { BaseAddress = baseUri, Timeout = TimeSpan.FromSeconds(60) };
    }

    public Uri BaseUri { get; }
    public HttpClient Http { get; }
    public IServiceProvider Services => _app.Services;

    /// <param name="runtime">Every sandbox's runtime.</param>
    /// <param name="templates">Template YAML by name.</param>
    /// <param name="configure">Changes to the server's options.</param>
    /// <param name="services">Changes to its services, after the runtime's.</param>
    public static async Task<LoopbackServer> StartAsync(IVmRuntime runtime, IReadOnlyDictionary<string, string> templates,
        Action<SandboxVmOptions>? configure = null, Action<IServiceCollection>? services = null)
    {
        string dir = Path.Combine(Path.GetTempPath(), "sandboxvm-loopback-" + Guid.NewGuid().ToString("N"));
        Directory.CreateDirectory(Path.Combine(dir, "templates"));
        foreach (var (name, yaml) in templates)
        {
            await File.WriteAllTextAsync(Path.Combine(dir, "templates", name + ".yaml"), yaml);
        }
        var app = ServerApp.Build([], o =>
        {
            o.TemplateDirectories = [Path.Combine(dir, "templates")];
            o.CacheDir = Path.Combine(dir, "cache");
            o.BuildTemplatesOnStart = false;
            o.CacheGcOnStart = false;
            o.Pools = false;
            o.StartSingletonsWithServer = false;
            configure?.Invoke(o);
        }, "http://127.0.0.1:0", s =>
        {
            s.AddLogging(b => b.ClearProviders());
            s.AddSingleton(runtime);
            s.AddSingleton(new RuntimeChoice(runtime.Name, null, "tests"));
            s.AddSingleton(sp => new PoolManager(runtime, new TemplateSpecs(), sp.GetRequiredService<VmTracker>(), sp.GetRequiredService<ILogger<PoolManager>>()));
            services?.Invoke(s);
        });
        try
        {
            await app.StartAsync(TestContext.Current.CancellationToken);
        }
        catch
        {
            await app.DisposeAsync();
            Directory.Delete(dir, recursive: true);
            throw;
        }
        string address = app.Services.GetRequiredService<IServer>().Features.Get<IServerAddressesFeature>()!.Addresses.First();
        return new LoopbackServer(app, dir, new Uri(address + "/"));
    }

    public async ValueTask DisposeAsync()
    {
        Http.Dispose();
        await _app.StopAsync(CancellationToken.None);
        await _app.DisposeAsync();
        Directory.Delete(_dir, recursive: true);
    }
}

/// <summary>
/// <see cref="LoopbackServer"/> with <see cref="FakeAgentRuntime"/> for its runtime: each sandbox's agent
/// is scripted by the test. One template, <see cref="Template"/>, with a small output cap.
/// </summary>
internal sealed class FakeRuntimeServer : IAsyncDisposable
{
    public const string Template = "fake-py";

    private readonly LoopbackServer _server;

    private FakeRuntimeServer(LoopbackServer server, FakeAgentRuntime runtime)
    {
        _server = server;
        Runtime = runtime;
    }

    public FakeAgentRuntime Runtime { get; }
    public Uri BaseUri => _server.BaseUri;
    public HttpClient Http => _server.Http;
    public IServiceProvider Services => _server.Services;

    /// <param name="outputBytes">The template's output cap.</param>
    /// <param name="configure">Changes to the server's options.</param>
    /// <param name="noMinimumResponseRate">
    /// Turns off Kestrel's minimum response data rate, which cuts clients that read under 240 B/s: a
    /// client that reads just above it is never cut, and this plays one without pacing a reader.
    /// </param>
    /// <param name="services">Last changes to the server's services (e.g. its TimeProvider).</param>
    public static async Task<FakeRuntimeServer> StartAsync(long outputBytes = 64 * 1024, Action<SandboxVmOptions>? configure = null,
        bool noMinimumResponseRate = false, Action<IServiceCollection>? services = null)
    {
        var runtime = new FakeAgentRuntime();
        var server = await LoopbackServer.StartAsync(runtime, new Dictionary<string, string>
        {
            [Template] = $"""
                name: {Template}
                description: served by the fake runtime of the tests
                source:
                  type: debian
                  suite: bookworm
                  packages: []
                language:
                  name: python
                  source_file: main.py
                  run: [python3, main.py]
                limits:
                  run_timeout_s: 5
                  max_timeout_s: 60
                  output_bytes: {outputBytes}
                output: text
                network:
                  mode: none
                warmup:
                  strategy: cold
                """,
        }, o =>
        {
            o.HostTimeoutMarginS = 1;
            o.ArtifactTimeoutS = 2;
            configure?.Invoke(o);
        }, s =>
        {
            if (noMinimumResponseRate)
            {
                s.Configure<KestrelServerOptions>(k => k.Limits.MinResponseDataRate = null);
            }
            services?.Invoke(s);
        });
        return new FakeRuntimeServer(server, runtime);
    }

    public async ValueTask DisposeAsync()
    {
        await _server.DisposeAsync();
        await Runtime.DisposeAllAsync();
    }
}
