using System.Diagnostics;
using System.Diagnostics.Metrics;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Routing;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.DependencyInjection.Extensions;
using Prometheus;
using SandboxVM.Core.Catalog;
using SandboxVM.Core.Runs;
using SandboxVM.Core.Sessions;
using SandboxVM.Core.Singletons;
using SandboxVM.Core.Templates;
using SandboxVM.Egress;

namespace SandboxVM.Server;

/// <summary>
/// The server's own instruments, meter <c>SandboxVM.Server</c>. Instrument names are short because the
/// Prometheus exporter prefixes the meter name: <c>runs</c> is scraped as <c>sandboxvm_server_runs</c>.
/// </summary>
internal sealed class ServerMetrics
{
    public const string MeterName = "SandboxVM.Server";
    public const string Runs = "runs";
    public const string RunDuration = "run_duration_seconds";
    public const string RunPhase = "run_phase_seconds";
    public const string RunHostPhase = "run_host_phase_seconds";
    public const string ToolRequests = "tool_requests";
    public const string SandboxesLive = "sandboxes_live";
    public const string VmsLive = "vms_live";
    public const string SingletonRestarts = "singleton_restarts";
    public const string PoolTarget = "pool_target";
    public const string PoolReady = "pool_ready";
    public const string PoolHits = "pool_hits";
    public const string PoolMisses = "pool_misses";
    public const string SandboxesFrozen = "sandboxes_frozen";

    /// <summary>Run kinds (tag <c>kind</c>): <c>POST /v1/run</c>, a sandbox's run, a tools call.</summary>
    public const string KindRun = "run";
    public const string KindSandbox = "sandbox";
    public const string KindTool = "tool";

    /// <summary>Bucket bounds of <see cref="RunDuration"/>, seconds.</summary>
    public static readonly double[] RunDurationBuckets = [0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300];
    /// <summary>Phases go down to a pool take's fraction of a millisecond.</summary>
    public static readonly double[] RunPhaseBuckets = [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300];

    private readonly Counter<long> _runs;
    private readonly Histogram<double> _runDuration;
    private readonly Histogram<double> _runPhase;
    private readonly Histogram<double> _runHostPhase;
    private readonly Counter<long> _toolRequests;
    private readonly IServiceProvider _services;

    public ServerMetrics(IMeterFactory meters, IServiceProvider services)
    {
        _services = services;
        var meter = meters.Create(MeterName);
        _runs = meter.CreateCounter<long>(Runs, unit: "{run}", description: "Finished runs by template, status and kind (run, sandbox, tool)");
        _runDuration = meter.CreateHistogram<double>(RunDuration, unit: "s", description: "Run duration on the server (queue to result) by template and status");
        _runHostPhase = meter.CreateHistogram<double>(RunHostPhase, unit: "s",
            description: "Where the host phase of a run went, by template and part: attach, prepare, steps, end_processes, list (the agent's), channel, artifacts, other");
        _runPhase = meter.CreateHistogram<double>(RunPhase, unit: "s",
            description: "Where a run's time went, by template and phase: queue (a run slot), startup (a sandbox: pool take, restore or boot), compile, run (the guest's steps), host (the rest: artifacts, the agent round trips)");
        _toolRequests = meter.CreateCounter<long>(ToolRequests, unit: "{request}", description: "Tools calls by tool and outcome (ok or the problem code)");
        meter.CreateObservableGauge(SandboxesLive, ObserveSandboxes, unit: "{sandbox}", description: "Sandboxes (sessions) running");
        meter.CreateObservableGauge(VmsLive, ObserveVms, unit: "{vm}", description: "VMs alive: pools, singletons, runs and sessions");
        meter.CreateObservableGauge(SingletonRestarts, ObserveRestarts, unit: "{restart}", description: "Times each singleton template's VM was started again");
        meter.CreateObservableGauge(PoolTarget, () => ObservePools(p => p.Target), unit: "{vm}", description: "Ready sandboxes each template's pool aims at (follows demand between its min and max)");
        meter.CreateObservableGauge(PoolReady, () => ObservePools(p => p.Ready), unit: "{vm}", description: "Ready sandboxes in each template's pool");
        meter.CreateObservableCounter(PoolHits, () => ObservePools(p => p.Hits), unit: "{request}", description: "Requests served from each template's pool");
        meter.CreateObservableCounter(PoolMisses, () => ObservePools(p => p.Misses), unit: "{request}", description: "Requests that found each template's pool empty and started a sandbox");
        meter.CreateObservableGauge(SandboxesFrozen, ObserveFrozen, unit: "{sandbox}", description: "Sandboxes (sessions) frozen between calls");
    }

    /// <summary>Counts a finished run and its duration (the server-measured total).</summary>
    public void RecordRun(string? template, string kind, RunResult result)
    {
        var tags = new TagList
        {
            { "template", string.IsNullOrEmpty(template) ? "unknown" : template },
            { "status", StatusName(result.Status) },
            { "kind", kind },
        };
        _runs.Add(1, tags);
        _runDuration.Record(Math.Max(0, result.Metrics.TotalMs) / 1000.0, tags);
        var m = result.Metrics;
        foreach (var (phase, ms) in new[] { ("queue", m.QueueMs), ("startup", m.StartupMs), ("compile", m.CompileMs), ("run", m.RunMs), ("host", m.HostMs) })
        {
            _runPhase.Record(Math.Max(0, ms) / 1000.0, new TagList { { "template", tags[0].Value }, { "kind", kind }, { "phase", phase } });
        }
        foreach (var (phase, ms) in m.HostPhases ?? [])
        {
            _runHostPhase.Record(Math.Max(0, ms) / 1000.0, new TagList { { "template", tags[0].Value }, { "kind", kind }, { "phase", phase } });
        }
    }

    /// <summary>Counts a tools call: <paramref name="outcome"/> is <c>ok</c> or the problem code it was answered with.</summary>
    public void RecordTool(string tool, string outcome) =>
        _toolRequests.Add(1, new TagList { { "tool", tool }, { "outcome", outcome } });

    /// <summary>Runs <paramref name="run"/> and records it as a run of <paramref name="template"/>.</summary>
    public async Task<RunResult> TrackAsync(Func<string?> template, string kind, Task<RunResult> run)
    {
        var result = await run;
        RecordRun(template(), kind, result);
        return result;
    }

    /// <summary>The wire name of a run status (<c>sandbox_error</c>), as RunResult's JSON writes it.</summary>
    public static string StatusName(RunStatus status) => ServerApp.WireNames.ConvertName(status.ToString());

    // Observations run on the scrape; a failure must not fail the scrape, so each one is guarded.
    private IEnumerable<Measurement<int>> ObserveSandboxes()
    {
        int count = Guard(() => _services.GetService<SessionManager>()?.List().Count ?? 0);
        return [new Measurement<int>(count)];
    }

    private List<Measurement<long>> ObservePools(Func<Core.Pools.PoolStatus, long> value)
    {
        try
        {
            return _services.GetService<Core.Pools.PoolManager>()?.Statuses()
                .Select(p => new Measurement<long>(value(p.Value), new KeyValuePair<string, object?>("template", p.Key)))
                .ToList() ?? [];
        }
        catch (Exception e) when (e is not OutOfMemoryException)
        {
            return [];
        }
    }

    private IEnumerable<Measurement<int>> ObserveFrozen() =>
        [new Measurement<int>(Guard(() => _services.GetService<SessionManager>()?.List().Count(s => s.Frozen) ?? 0))];

    private IEnumerable<Measurement<int>> ObserveVms() =>
        [new Measurement<int>(Guard(() => _services.GetService<VmTracker>()?.LiveCount ?? 0))];

    private IEnumerable<Measurement<int>> ObserveRestarts()
    {
        var catalog = _services.GetService<TemplateCatalog>();
        var singletons = _services.GetService<SingletonManager>();
        if (catalog is null || singletons is null)
        {
            return [];
        }
        try
        {
            return catalog.All
                .Where(t => t.Warmup.Strategy == WarmupStrategy.Singleton)
                .Select(t => (t.Name, Status: singletons.Status(t.Name)))
                .Where(s => s.Status is not null)
                .Select(s => new Measurement<int>(s.Status!.Restarts, new KeyValuePair<string, object?>("template", s.Name)))
                .ToList();
        }
        catch (Exception e) when (e is not OutOfMemoryException)
        {
            return [];
        }
    }

    private static int Guard(Func<int> observe)
    {
        try
        {
            return observe();
        }
        catch (Exception e) when (e is not OutOfMemoryException)
        {
            return 0;
        }
    }
}

/// <summary>
/// Serves <c>/metrics</c> in the Prometheus text format: the <c>SandboxVM.Egress</c> and <c>SandboxVM.Server</c>
/// meters through prometheus-net's meter adapter, in a registry of this server's own (not prometheus-net's
/// process-wide default one), plus the .NET process metrics.
/// </summary>
internal sealed class MetricsExporter : IDisposable
{
    public const string Path = "/metrics";

    private readonly IDisposable _adapter;

    public MetricsExporter(ServerMetrics server)
    {
        _ = server; // created first, so its instruments are published when the adapter starts listening
        Registry = Metrics.NewCustomRegistry();
        _adapter = MeterAdapter.StartListening(new MeterAdapterOptions
        {
            Registry = Registry,
            // Without it the adapter writes to prometheus-net's default registry whatever Registry says.
            MetricFactory = Metrics.WithCustomRegistry(Registry),
            InstrumentFilterPredicate = i => i.Meter.Name is EgressMetrics.MeterName or ServerMetrics.MeterName,
            // The adapter drops a series that has not changed for this long (a counter that comes back
            // restarts at zero). Label values here are few (templates, statuses, reasons): keep them for
            // the longest the adapter allows.
            MetricsExpireAfter = TimeSpan.FromDays(1),
            ResolveHistogramBuckets = i => (i.Meter.Name, i.Name) switch
            {
                (ServerMetrics.MeterName, ServerMetrics.RunDuration) => ServerMetrics.RunDurationBuckets,
                (ServerMetrics.MeterName, ServerMetrics.RunPhase or ServerMetrics.RunHostPhase) => ServerMetrics.RunPhaseBuckets,
                _ => MeterAdapterOptions.DefaultHistogramBuckets,
            },
        });
        DotNetStats.Register(Registry);
    }

    public CollectorRegistry Registry { get; }

    public static void AddServices(IServiceCollection services)
    {
        services.AddMetrics();
        services.TryAddSingleton<ServerMetrics>();
        services.TryAddSingleton<MetricsExporter>();
    }

    /// <summary>Maps <see cref="Path"/>; the exporter (and with it the meter listener) starts here.</summary>
    public static void Map(IEndpointRouteBuilder app)
    {
        var exporter = app.ServiceProvider.GetRequiredService<MetricsExporter>();
        app.MapMetrics(Path, exporter.Registry);
    }

    public void Dispose() => _adapter.Dispose();
}
