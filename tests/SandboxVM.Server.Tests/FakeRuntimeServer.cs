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
/// The whole server (ServerApp, every endpoint, runs, sessions, pools) on loopback, with
/// <see cref="FakeAgentRuntime"/> for its runtime: each sandbox's agent is scripted by the test.
/// One template, <see cref="Template"/>, with a small output cap.
/// </summary>
internal sealed class FakeRuntimeServer : IAsyncDisposable
{
    public const string Template = "fake-py";

    private readonly WebApplication _app;
    private readonly string _dir;

    private FakeRuntimeServer(WebApplication app, string dir, FakeAgentRuntime runtime, Uri baseUri)
    {
        _app = app;
        _dir = dir;
        Runtime = runtime;
        BaseUri = baseUri;
        Http = new HttpClient { BaseAddress = baseUri, Timeout = TimeSpan.FromSeconds(60) };
    }

    public FakeAgentRuntime Runtime { get; }
    public Uri BaseUri { get; }
    public HttpClient Http { get; }

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
        string dir = Path.Combine(Path.GetTempPath(), "sandboxvm-fakeserver-" + Guid.NewGuid().ToString("N"));
        Directory.CreateDirectory(Path.Combine(dir, "templates"));
        await File.WriteAllTextAsync(Path.Combine(dir, "templates", Template + ".yaml"), $"""
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
            """);
        var runtime = new FakeAgentRuntime();
        var app = ServerApp.Build([], o =>
        {
            o.TemplateDirectories = [Path.Combine(dir, "templates")];
            o.CacheDir = Path.Combine(dir, "cache");
            o.BuildTemplatesOnStart = false;
            o.CacheGcOnStart = false;
            o.Pools = false;
            o.StartSingletonsWithServer = false;
            o.HostTimeoutMarginS = 1;
            o.ArtifactTimeoutS = 2;
            configure?.Invoke(o);
        }, "http://127.0.0.1:0", s =>
        {
            s.AddLogging(b => b.ClearProviders());
            if (noMinimumResponseRate)
            {
                s.Configure<KestrelServerOptions>(k => k.Limits.MinResponseDataRate = null);
            }
            s.AddSingleton<IVmRuntime>(runtime);
            s.AddSingleton(new RuntimeChoice("fake", null, "tests"));
            s.AddSingleton(sp => new PoolManager(runtime, new Specs(), sp.GetRequiredService<VmTracker>(), sp.GetRequiredService<ILogger<PoolManager>>()));
            services?.Invoke(s);
        });
        await app.StartAsync(TestContext.Current.CancellationToken);
        string address = app.Services.GetRequiredService<IServer>().Features.Get<IServerAddressesFeature>()!.Addresses.First();
        return new FakeRuntimeServer(app, dir, runtime, new Uri(address + "/"));
    }

    private sealed class Specs : IVmSpecProvider
    {
        public Task<VmSpec> GetSpecAsync(TemplateDefinition template, CancellationToken cancellationToken) =>
            Task.FromResult(new VmSpec { TemplateName = template.Name, RootfsDir = "/nonexistent" });
    }

    public async ValueTask DisposeAsync()
    {
        Http.Dispose();
        await _app.StopAsync(CancellationToken.None);
        await _app.DisposeAsync();
        await Runtime.DisposeAllAsync();
        Directory.Delete(_dir, recursive: true);
    }
}
