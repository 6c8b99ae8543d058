using System.Text.Json;
using System.Text.Json.Serialization;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Hosting.Server;
using Microsoft.AspNetCore.Hosting.Server.Features;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Http.Json;
using Microsoft.Extensions.Configuration;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;
using SandboxVM.Core;
using SandboxVM.Core.Catalog;
using SandboxVM.Core.Pools;
using SandboxVM.Core.Runs;
using SandboxVM.Core.Sessions;
using SandboxVM.Core.Singletons;
using SandboxVM.Core.Egress;
using SandboxVM.Egress;
using SandboxVM.Core.Templates;
using SandboxVM.Images;
using SandboxVM.Images.Boot;
using SandboxVM.Runtime;
using SandboxVM.Runtime.Cgroups;
using SandboxVM.Runtime.Gvisor;
using SandboxVM.Runtime.Process;
using SandboxVM.Runtime.Qemu;

namespace SandboxVM.Server;

/// <summary>Builds and runs the HTTP server. The CLI's `serve` and the functional tests both start it here.</summary>
public static partial class ServerApp
{
    public const string DefaultUrl = "http://127.0.0.1:8000";

    /// <summary>How names and enum values are written on the wire (and in metric labels): snake_case.</summary>
    public static readonly JsonNamingPolicy WireNames = JsonNamingPolicy.SnakeCaseLower;

    /// <summary>JSON on the wire: snake_case names and enum values, nulls kept so fields are always present.</summary>
    public static void ConfigureJson(JsonSerializerOptions o)
    {
        o.PropertyNamingPolicy = WireNames;
        o.Converters.Add(new JsonStringEnumConverter(WireNames, allowIntegerValues: false));
        o.UnmappedMemberHandling = JsonUnmappedMemberHandling.Disallow;
        o.NumberHandling = JsonNumberHandling.Strict;
    }

    /// <summary>
    /// Creates the application. Settings come from (later wins) defaults, environment variables
    /// SANDBOXVM_* (AGENT, CACHE, RUNTIME, TEMPLATES, API_KEY, API_KEYS_FILE), configuration section "SandboxVM",
    /// and <paramref name="configure"/>. Throws <see cref="InvalidOperationException"/> (saying what to do) for a
    /// keys file that does not read, and for a listen address beyond loopback without keys or InsecureNoAuth.
    /// </summary>
    /// <param name="args">Command line (configuration).</param>
    /// <param name="configure">Last changes to the options.</param>
    /// <param name="url">Listen URL.</param>
    /// <param name="configureServices">Last changes to the services (tests: e.g. an <see cref="SandboxVM.Egress.IEgressResolver"/> that maps names without DNS).</param>
    /// <param name="extension">A layer around the API (the cluster, src/SandboxVM.Cluster): its services, and its middleware after the caller's key is known.</param>
    public static WebApplication Build(string[] args, Action<SandboxVmOptions>? configure = null, string? url = null,
        Action<IServiceCollection>? configureServices = null, IServerExtension? extension = null)
    {
        var builder = WebApplication.CreateSlimBuilder(new WebApplicationOptions { Args = args, ApplicationName = "SandboxVM.Server" });
        builder.Logging.AddSimpleConsole(o =>
        {
            o.SingleLine = true;
            o.TimestampFormat = "HH:mm:ss.fff ";
        });
        // Per-request framework logs drown the sandbox events; raise them with Logging__LogLevel__Microsoft.AspNetCore.
        builder.Logging.AddFilter("Microsoft.AspNetCore", LogLevel.Warning);
        var options = LoadOptions(builder.Configuration);
        configure?.Invoke(options);
        var urls = Listening.Urls(url ?? builder.Configuration["urls"] ?? DefaultUrl);
        var callers = CallerStore.Create(builder.Configuration["SandboxVM:ApiKey"] ?? Environment.GetEnvironmentVariable("SANDBOXVM_API_KEY"),
            options.ApiKeysFile, options.KeyLimits);
        Listening.CheckAuth(urls, callers, options);
        builder.WebHost.UseUrls([.. urls]);
        builder.Services.Configure<JsonOptions>(o => ConfigureJson(o.SerializerOptions));
        Problems.AddServices(builder.Services);
        AddSandboxVm(builder.Services, options);
        HttpSurface.AddServices(builder.Services, callers, AllowedHosts.For(options, urls));
        Mcp.McpEndpoint.AddServices(builder.Services);
        PortEndpoints.AddServices(builder.Services);
        builder.Services.AddSingleton<E2b.E2bState>();
        OpenApiDocs.AddServices(builder.Services);
        configureServices?.Invoke(builder.Services);
        extension?.AddServices(builder, options, urls);

        var app = builder.Build();
        HttpSurface.Use(app);
        app.UseWebSockets();
        extension?.Use(app);
        Endpoints.Map(app);
        Mcp.McpEndpoint.Map(app);
        E2b.E2bEndpoints.MapE2b(app);
        OpenApiDocs.Map(app);
        var logger = app.Services.GetRequiredService<ILoggerFactory>().CreateLogger("SandboxVM.Server");
        if (options.InsecureNoAuth && !callers.KeysRequired && urls.Any(u => !Listening.IsLoopback(u)))
        {
            LogInsecure(logger, string.Join(", ", urls));
        }
        app.Lifetime.ApplicationStarted.Register(() =>
        {
            callers.Watch(app.Services.GetRequiredService<ILogger<CallerStore>>());
            // Kestrel may have been given other endpoints (Kestrel:Endpoints) than the URLs checked above.
            var bound = app.Services.GetRequiredService<IServer>().Features.Get<IServerAddressesFeature>()?.Addresses ?? [];
            if (!callers.KeysRequired && !options.InsecureNoAuth && bound.FirstOrDefault(a => !Listening.IsLoopback(a)) is { } open)
            {
                LogRefusedOpen(logger, open);
                app.Lifetime.StopApplication();
            }
        });
        app.Lifetime.ApplicationStopped.Register(callers.Dispose);
        return app;
    }

    [LoggerMessage(Level = LogLevel.Warning,
        Message = "INSECURE: listening on {Urls} without API keys (InsecureNoAuth): anyone who can reach it can run code and use every sandbox")]
    private static partial void LogInsecure(ILogger logger, string urls);

    [LoggerMessage(Level = LogLevel.Critical, Message = "stopping: listening on {Address} without API keys; configure keys or InsecureNoAuth")]
    private static partial void LogRefusedOpen(ILogger logger, string address);

    public static SandboxVmOptions LoadOptions(IConfiguration configuration)
    {
        var options = new SandboxVmOptions
        {
            AgentPath = Environment.GetEnvironmentVariable("SANDBOXVM_AGENT") ?? DefaultAgentPath(),
            CacheDir = Environment.GetEnvironmentVariable("SANDBOXVM_CACHE") ?? "/var/cache/sandboxvm",
            Runtime = Environment.GetEnvironmentVariable("SANDBOXVM_RUNTIME") ?? "auto",
            Accel = Environment.GetEnvironmentVariable("SANDBOXVM_ACCEL") ?? "auto",
            SearchProvider = Environment.GetEnvironmentVariable("SANDBOXVM_SEARCH_PROVIDER"),
            SearchBaseUrl = Environment.GetEnvironmentVariable("SANDBOXVM_SEARCH_URL"),
            SearchApiKey = Environment.GetEnvironmentVariable("SANDBOXVM_SEARCH_API_KEY"),
            ApiKeysFile = Environment.GetEnvironmentVariable("SANDBOXVM_API_KEYS_FILE"),
        };
        string? builtIn = FindBuiltInTemplates();
        if (builtIn is not null)
        {
            options.TemplateDirectories.Add(builtIn);
        }
        foreach (string dir in (Environment.GetEnvironmentVariable("SANDBOXVM_TEMPLATES") ?? "").Split(':', StringSplitOptions.RemoveEmptyEntries))
        {
            options.TemplateDirectories.Add(dir);
        }
        configuration.GetSection("SandboxVM").Bind(options);
        return options;
    }

    /// <summary>The agent published next to the server binaries, or in the checkout's artifacts/ folder.</summary>
    private static string DefaultAgentPath()
    {
        string beside = Path.Combine(AppContext.BaseDirectory, "agent", "sandboxvm-agent");
        if (File.Exists(beside))
        {
            return beside;
        }
        return FindUp("SandboxVM.slnx") is { } root ? Path.Combine(root, "artifacts", "agent", "sandboxvm-agent") : beside;
    }

    private static string? FindBuiltInTemplates()
    {
        string beside = Path.Combine(AppContext.BaseDirectory, "templates");
        if (Directory.Exists(beside))
        {
            return beside;
        }
        return FindUp("SandboxVM.slnx") is { } root ? Path.Combine(root, "templates") : null;
    }

    private static string? FindUp(string marker)
    {
        for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir is not null; dir = dir.Parent)
        {
            if (File.Exists(Path.Combine(dir.FullName, marker)))
            {
                return dir.FullName;
            }
        }
        return null;
    }

    internal static void AddSandboxVm(IServiceCollection services, SandboxVmOptions options)
    {
        services.AddSingleton(options);
        services.AddSingleton(TimeProvider.System);
        // A bad template file stops the server here, naming the file and the field.
        services.AddSingleton(_ => TemplateRegistry.Load(options.TemplateDirectories));
        services.AddSingleton(sp => new ImageBuilder(new ImageBuilderOptions { CacheRoot = options.CacheDir }, sp.GetRequiredService<ILogger<ImageBuilder>>()));
        services.AddSingleton(sp => new TemplateCatalog(
            sp.GetRequiredService<TemplateRegistry>(), sp.GetRequiredService<ImageBuilder>(), options,
            sp.GetRequiredService<ILogger<TemplateCatalog>>(),
            sp.GetRequiredService<IVmRuntime>().Capabilities.OwnKernel
                ? new BootArtifactsBuilder(new ImageBuilderOptions { CacheRoot = options.CacheDir }, sp.GetRequiredService<ILogger<BootArtifactsBuilder>>())
                : null));
        // The runsc probe runs a tiny sandbox (about a second): only where gvisor may be chosen, and only
        // when the runtime is chosen (at start): a host that brings its own runtime and RuntimeChoice (the
        // tests' servers) probes nothing. Built eagerly, it ran a gVisor sandbox for each of Server.Tests'
        // 250 servers: 26 runsc probes for HttpSurfaceTests' 29 tests.
        services.AddSingleton(_ => HostFacts.Probe(probeRunsc: options.Runtime is "gvisor" or "auto"));
        services.AddSingleton(sp => RuntimeSelector.Choose(options.Runtime, sp.GetRequiredService<HostFacts>(), options.Accel));
        services.AddSingleton<CgroupManager>();
        services.AddSingleton<IVmRuntime>(sp =>
        {
            var choice = sp.GetRequiredService<RuntimeChoice>();
            return choice.Runtime switch
            {
                "process" => new ProcessRuntime(new ProcessRuntimeOptions(), sp.GetRequiredService<CgroupManager>(), sp.GetRequiredService<ILogger<ProcessRuntime>>()),
                "qemu" => new QemuRuntime(
                    new QemuRuntimeOptions
                    {
                        Accel = choice.Accel ?? "auto",
                        SnapshotDirectory = options.SnapshotDir,
                        SnapshotGracePeriod = TimeSpan.FromSeconds(options.SnapshotGracePeriodS),
                    },
                    sp.GetRequiredService<CgroupManager>(), sp.GetRequiredService<ILogger<QemuRuntime>>()),
                "gvisor" => new GvisorRuntime(
                    new GvisorRuntimeOptions { Platform = choice.Accel ?? HostFacts.GvisorPlatform, SnapshotDirectory = options.SnapshotDir, SnapshotGracePeriod = TimeSpan.FromSeconds(options.SnapshotGracePeriodS) },
                    sp.GetRequiredService<CgroupManager>(), sp.GetRequiredService<ILogger<GvisorRuntime>>()),
                _ => throw new InvalidOperationException($"runtime '{choice.Runtime}' is not implemented"),
            };
        });
        services.AddSingleton<VmTracker>();
        services.AddSingleton(sp => new EgressBridge(options, sp.GetRequiredService<ILoggerFactory>(), sp.GetService<IEgressResolver>(), time: sp.GetRequiredService<TimeProvider>())
        {
            SearchBudget = sp.GetService<SearchBudgets>(),
        });
        services.AddSingleton(sp => new PoolManager(
            sp.GetRequiredService<IVmRuntime>(), sp.GetRequiredService<TemplateCatalog>(),
            sp.GetRequiredService<VmTracker>(), sp.GetRequiredService<ILogger<PoolManager>>(), sp.GetRequiredService<TimeProvider>())
        {
            Warmup = Warmup.RunAsync,
            FreezeWaiting = options.FreezeIdle,
            MinHostMemoryBytes = (long)options.MinHostMemoryMiB << 20,
            RefillConcurrency = options.PoolRefillConcurrency > 0 ? options.PoolRefillConcurrency : Math.Max(1, Environment.ProcessorCount),
            BurstMemory = TimeSpan.FromSeconds(Math.Max(0, options.PoolBurstMemoryS)),
            RefillHoldAfterTake = TimeSpan.FromMilliseconds(Math.Max(0, options.PoolRefillHoldMs)),
            // Sessions of proxy templates get their way out; every other sandbox gets a channel without a handler.
            OnAcquired = sp.GetRequiredService<EgressBridge>().AttachAsync,
        });
        services.AddSingleton(sp => new SingletonManager(sp.GetRequiredService<PoolManager>(), sp.GetRequiredService<VmTracker>(),
            options, sp.GetRequiredService<ILogger<SingletonManager>>(), sp.GetRequiredService<TimeProvider>())
        {
            OnStarted = sp.GetRequiredService<EgressBridge>().AttachAsync,
        });
        services.AddSingleton<RunService>();
        services.AddSingleton<SessionManager>();
        ToolsEndpoints.AddServices(services);
        MetricsExporter.AddServices(services);
        Tracing.AddServices(services, options);
        services.AddHostedService<StartupService>();
    }
}
