using System.Net.Http.Json;
using System.Text.Json;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting.Server;
using Microsoft.AspNetCore.Hosting.Server.Features;
using Microsoft.Extensions.DependencyInjection;
using SandboxVM.Core.Catalog;
using SandboxVM.Core.Runs;

namespace SandboxVM.Functional.Tests;

/// <summary>
/// One real server on a loopback port with the built-in templates built (from the cache when
/// unchanged), shared by the tests of one runtime's collection. Stopping it ends every sandbox.
/// </summary>
public abstract class ServerFixture : IAsyncLifetime
{
    private WebApplication? _app;

    /// <summary>The runtime every sandbox of this server uses.</summary>
    public abstract string Runtime { get; }

    /// <summary>Why this runtime cannot run on this host (its tests are skipped saying so), or null.</summary>
    public virtual string? SkipReason => null;

    /// <summary>This server, or a skip of the test being constructed when its runtime cannot run here.</summary>
    public ServerFixture OrSkip()
    {
        Assert.SkipWhen(SkipReason is not null, $"{Runtime}: {SkipReason}");
        return this;
    }

    protected virtual void Configure(SandboxVM.Core.SandboxVmOptions options)
    {
    }

    /// <summary>Live sandboxes this server keeps (small, so the cap test is cheap on VMs; the README's fork into 3 needs 4).</summary>
    public const int MaxSandboxes = 4;

    /// <summary>Upload limit (above the 50 MB round-trip test, below the default, so going over it is cheap).</summary>
    public const long MaxUploadBytes = 60L << 20;

    /// <summary>The loopback web site and search endpoint the egress tests reach through websearch-tools.</summary>
    public EgressTestSite Site { get; private set; } = null!;

    public HttpClient Http { get; private set; } = null!;
    public string BaseUrl { get; private set; } = "";
    public IServiceProvider Services => _app!.Services;

    public static readonly JsonSerializerOptions Json = new(JsonSerializerDefaults.Web)
    {
        PropertyNamingPolicy = JsonNamingPolicy.SnakeCaseLower,
    };

    public async ValueTask InitializeAsync()
    {
        if (SkipReason is not null)
        {
            return;
        }
        string agent = Environment.GetEnvironmentVariable("SANDBOXVM_AGENT") ?? Path.Combine(RepoRoot(), "artifacts", "agent", "sandboxvm-agent");
        if (!File.Exists(agent))
        {
            throw new InvalidOperationException($"the guest agent is not published at {agent}: run scripts/test.sh (or scripts/build.sh) first");
        }
        Site = await EgressTestSite.StartAsync();
        await StartServerAsync(agent);
    }

    /// <summary>
    /// This server's state directory (paused sandboxes), its own, under /var/tmp: on disk like the
    /// default, and kept across <see cref="RestartAsync"/>.
    /// </summary>
    public string StateDir { get; } = Path.Combine("/var/tmp", "sandboxvm-functional-state-" + Guid.NewGuid().ToString("N")[..12]);

    /// <summary>Stops this server (every running sandbox ends; paused ones stay in <see cref="StateDir"/>) and starts a new one on the same state directory.</summary>
    public async Task RestartAsync()
    {
        Http.Dispose();
        await _app!.StopAsync();
        await _app.DisposeAsync();
        _app = null;
        string agent = Environment.GetEnvironmentVariable("SANDBOXVM_AGENT") ?? Path.Combine(RepoRoot(), "artifacts", "agent", "sandboxvm-agent");
        await StartServerAsync(agent);
    }

    /// <summary>This server's warnings and errors (artifacts/test-results/logs/functional-RUNTIME-ID.server.log).</summary>
    internal ServerLogFile LogFile => _logFile ??= new(Path.Combine(LogDirectory(), $"functional-{Runtime}-{Guid.NewGuid().ToString("N")[..8]}.server.log"));

    private ServerLogFile? _logFile;

    private static string LogDirectory()
    {
        string dir = Path.Combine(RepoRoot(), "artifacts", "test-results", "logs");
        Directory.CreateDirectory(dir);
        return dir;
    }

    private async Task StartServerAsync(string agent)
    {
        _app = SandboxVM.Server.ServerApp.Build([], o =>
        {
            // websearch-tools may reach exactly the test site (127.0.0.1 on its port, nothing else on
            // loopback) and searches it; names resolve through a fixed map, never DNS.
            o.EgressAllow = [$"127.0.0.1:{Site.Port}"];
            o.SearchProvider = "searxng";
            o.SearchBaseUrl = Site.BaseUrl;
            o.StartSingletonsWithServer = false;
            o.Runtime = Runtime;
            o.AgentPath = agent;
            o.BuildTemplatesOnStart = false;
            o.TemplateDirectories = [Path.Combine(RepoRoot(), "templates")];
            o.MaxSandboxes = MaxSandboxes;
            o.MaxUploadBytes = MaxUploadBytes;
            o.CacheGcOnStart = false;  // tests share the host's image cache; collecting it is not theirs to do
            o.StateDir = StateDir;
            Configure(o);
        }, "http://127.0.0.1:0", services =>
        {
            services.AddSingleton<SandboxVM.Egress.IEgressResolver, TestResolver>();
            services.AddSingleton<Microsoft.Extensions.Logging.ILoggerProvider>(LogFile);
        });
        await _app.StartAsync();
        var catalog = _app.Services.GetRequiredService<TemplateCatalog>();
        foreach (var t in catalog.All.Where(t => TemplateCatalog.UnavailableReason(t) is null))
        {
            await catalog.EnsureBuiltAsync(t, null, CancellationToken.None);
        }
        // Tests start from a warm server, as a user would after start-up: every pool at its target.
        var pools = _app.Services.GetRequiredService<SandboxVM.Core.Pools.PoolManager>();
        var deadline = DateTime.UtcNow + TimeSpan.FromMinutes(10);
        foreach (var t in catalog.All)
        {
            while (pools.Status(t.Name) is { } p && p.Ready < p.Target)
            {
                if (DateTime.UtcNow > deadline)
                {
                    throw new TimeoutException($"pool of {t.Name} did not fill: {p}");
                }
                await Task.Delay(100);
            }
        }
        BaseUrl = _app.Services.GetRequiredService<IServer>().Features.Get<IServerAddressesFeature>()!.Addresses.First();
        Http = new HttpClient { BaseAddress = new Uri(BaseUrl), Timeout = TimeSpan.FromMinutes(3) };
    }

    public async Task<RunResultDto> RunAsync(object request, CancellationToken cancellationToken)
    {
        using var response = await Http.PostAsJsonAsync("/v1/run", request, Json, cancellationToken);
        string body = await response.Content.ReadAsStringAsync(cancellationToken);
        Assert.True(response.IsSuccessStatusCode, $"POST /v1/run answered {(int)response.StatusCode}: {body}");
        return JsonSerializer.Deserialize<RunResultDto>(body, Json)!;
    }

    /// <summary>A new sandbox's id (POST /v1/sandboxes must answer 201).</summary>
    public async Task<string> CreateSandboxAsync(string template, CancellationToken cancellationToken)
    {
        using var response = await Http.PostAsJsonAsync("/v1/sandboxes", new { template }, Json, cancellationToken);
        string body = await response.Content.ReadAsStringAsync(cancellationToken);
        Assert.True(response.StatusCode == System.Net.HttpStatusCode.Created, $"POST /v1/sandboxes answered {(int)response.StatusCode}: {body}");
        return JsonDocument.Parse(body).RootElement.GetProperty("id").GetString()!;
    }

    /// <summary>Ends a sandbox (whatever the answer: tests call it in finally blocks).</summary>
    public async Task DeleteSandboxAsync(string id)
    {
        using var _ = await Http.DeleteAsync($"/v1/sandboxes/{id}", CancellationToken.None);
    }

    /// <summary>Waits until every sandbox the server started has been torn down.</summary>
    public async Task WaitForNoLiveSandboxesAsync(TimeSpan timeout)
    {
        var tracker = Services.GetRequiredService<VmTracker>();
        var deadline = DateTime.UtcNow + timeout;
        while (tracker.LiveCount > 0 && DateTime.UtcNow < deadline)
        {
            await Task.Delay(50);
        }
    }

    public static string RepoRoot()
    {
        for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir is not null; dir = dir.Parent)
        {
            if (File.Exists(Path.Combine(dir.FullName, "SandboxVM.slnx")))
            {
                return dir.FullName;
            }
        }
        throw new InvalidOperationException("repository root (SandboxVM.slnx) not found above " + AppContext.BaseDirectory);
    }

    public async ValueTask DisposeAsync()
    {
        Http?.Dispose();
        if (_app is not null)
        {
            await _app.StopAsync();
            await _app.DisposeAsync();
        }
        if (Site is not null)
        {
            await Site.DisposeAsync();
        }
        if (Directory.Exists(StateDir))
        {
            Directory.Delete(StateDir, recursive: true);
        }
    }
}

/// <summary>The process runtime (bubblewrap): runs everywhere, fast.</summary>
public sealed class ProcessServer : ServerFixture
{
    public const string Collection = "process runtime";

    public override string Runtime => "process";
}

[CollectionDefinition(ProcessServer.Collection)]
public sealed class ProcessCollection : ICollectionFixture<ProcessServer>;

/// <summary>
/// QEMU microVMs under software emulation (TCG), as on any host without KVM (CI included), even where
/// KVM happens to work: this is the path every machine can take.
/// </summary>
public sealed class QemuServer : ServerFixture
{
    public const string Collection = "qemu runtime";

    public override string Runtime => "qemu";

    protected override void Configure(SandboxVM.Core.SandboxVmOptions options) => options.Accel = "tcg";
}

[CollectionDefinition(QemuServer.Collection)]
public sealed class QemuCollection : ICollectionFixture<QemuServer>;

/// <summary>
/// gVisor sandboxes (runsc, systrap): a kernel in user space between the code and the host, fast
/// without KVM. Skipped with the reason when runsc is missing or cannot run a sandbox here.
/// </summary>
public sealed class GvisorServer : ServerFixture
{
    public const string Collection = "gvisor runtime";

    private static readonly Lazy<string?> _skipReason = new(() =>
    {
        if (SandboxVM.Host.HostPath.Find("runsc") is not { } runsc)
        {
            return "runsc is not installed (scripts/install-deps.sh installs it from bookworm-backports)";
        }
        var status = SandboxVM.Runtime.Gvisor.RunscProbe.Check(runsc, SandboxVM.Runtime.HostFacts.GvisorPlatform, TimeSpan.FromSeconds(30));
        return status.Works ? null : "gVisor cannot run a sandbox here: " + status.Detail;
    });

    public override string Runtime => "gvisor";

    public override string? SkipReason => _skipReason.Value;
}

[CollectionDefinition(GvisorServer.Collection)]
public sealed class GvisorCollection : ICollectionFixture<GvisorServer>;

/// <summary>The RunResult as a caller reads it off the wire (deliberately not the server's own type).</summary>
public sealed class RunResultDto
{
    public string Stdout { get; set; } = "";
    public string Stderr { get; set; } = "";
    public string Output { get; set; } = "";
    public int? ExitCode { get; set; }
    public string Status { get; set; } = "";
    public bool Truncated { get; set; }
    public string? Error { get; set; }
    public string? Result { get; set; }
    public bool BuildCached { get; set; }
    public bool StateReset { get; set; }
    public List<ArtifactDto> Artifacts { get; set; } = [];
    public Dictionary<string, JsonElement> Metrics { get; set; } = [];

    /// <summary>Fails with the whole result (error text, output, metrics) when the status is not <paramref name="expected"/>.</summary>
    public void AssertStatus(string expected) => Assert.True(Status == expected, $"expected status {expected}, got {this}");

    public override string ToString() =>
        $"status={Status} exit={ExitCode} error={Error}\nstdout={Stdout}\nstderr={Stderr}\nmetrics={string.Join(", ", Metrics.Select(m => $"{m.Key}={m.Value}"))}";
}

public sealed class ArtifactDto
{
    public string Path { get; set; } = "";
    public string Mime { get; set; } = "";
    public long Size { get; set; }
    public string Sha256 { get; set; } = "";
    public string? ContentBase64 { get; set; }
}
