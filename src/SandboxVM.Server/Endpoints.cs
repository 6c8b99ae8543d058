using System.Text.Json;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Diagnostics;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Http.Json;
using Microsoft.AspNetCore.Routing;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Options;
using SandboxVM.Core.Catalog;
using SandboxVM.Core.Pools;
using SandboxVM.Core.Runs;
using SandboxVM.Core.Singletons;
using SandboxVM.Core.Templates;
using SandboxVM.Runtime;

namespace SandboxVM.Server;

internal static partial class Endpoints
{
    private static readonly Dictionary<string, object?> s_expectJson = new() { ["expected"] = "application/json" };

    public static void Map(IEndpointRouteBuilder app)
    {
        app.MapGet("/healthz", () => Results.Json(new { status = "ok" }));
        app.MapGet("/readyz", (IVmRuntime runtime) => Results.Json(new { status = "ready", runtime = runtime.Name }));
        app.MapGet("/v1/templates", (TemplateCatalog catalog, IVmRuntime runtime, PoolManager pools, SingletonManager singletons) =>
            Results.Json(new { templates = catalog.All.Select(t => Describe(t, catalog, runtime, pools, singletons)).ToList() }));
        app.MapGet("/v1/templates/{name}", (string name, TemplateCatalog catalog, IVmRuntime runtime, PoolManager pools, SingletonManager singletons) =>
            catalog.Find(name) is { } t
                ? Results.Json(Describe(t, catalog, runtime, pools, singletons))
                : Problems.Result(404, ProblemCodes.UnknownTemplate, "name", $"unknown template '{name}'"));
        app.MapPost("/v1/run", RunAsync).CountsAsRun();
        SandboxEndpoints.Map(app);
        CommandEndpoints.Map(app);
        PortEndpoints.Map(app);
        PtyEndpoints.Map(app);
        ToolsEndpoints.Map(app);
        AdminEndpoints.Map(app);
        MetricsExporter.Map(app);
    }

    private static async Task RunAsync(HttpContext context, RunService runs, ServerMetrics metrics, IOptions<JsonOptions> json)
    {
        var body = await ReadJsonAsync<RunRequestBody>(context, json.Value.SerializerOptions, "run request");
        if (body is null)
        {
            return;
        }
        var request = body.ToCore();
        if (RunStreaming.Wanted(context))
        {
            await RunStreaming.WriteAsync(context, json.Value.SerializerOptions, (events, ct) =>
                metrics.TrackAsync(() => request.Template, ServerMetrics.KindRun, runs.RunAsync(request, events, ct)));
            return;
        }
        try
        {
            var result = await metrics.TrackAsync(() => request.Template, ServerMetrics.KindRun, runs.RunAsync(request, context.RequestAborted));
            await context.Response.WriteAsJsonAsync(RunResultBody.From(result), json.Value.SerializerOptions, context.RequestAborted);
        }
        catch (RunRequestException e)
        {
            await Problems.Write(context, e);
        }
    }

    /// <summary>
    /// The request body as a <typeparamref name="T"/>; null after answering a 400 problem when it is not one,
    /// or a 415 when it is not sent as JSON: a page of any site may POST text/plain, a form or multipart to
    /// this server without asking (no CORS preflight), but never application/json.
    /// </summary>
    internal static async Task<T?> ReadJsonAsync<T>(HttpContext context, JsonSerializerOptions options, string what) where T : class
    {
        if (!context.Request.HasJsonContentType())
        {
            string sent = context.Request.ContentType is { Length: > 0 } type ? $"'{(type.Length > 100 ? type[..100] + "…" : type)}'" : "no Content-Type";
            await Problems.Write(context, 415, HttpProblemCodes.UnsupportedMediaType, null,
                $"the {what} must be sent as application/json (Content-Type: application/json); got {sent}", extra: s_expectJson);
            return null;
        }
        T? request;
        try
        {
            request = await JsonSerializer.DeserializeAsync<T>(context.Request.Body, options, context.RequestAborted);
        }
        catch (JsonException e)
        {
            string where = string.IsNullOrEmpty(e.Path) || e.Path == "$" ? "" : $" at {e.Path}";
            await Problems.Write(context, 400, ProblemCodes.MalformedJson, FieldOf(e.Path), $"the request body is not a valid {what}{where}: {FirstSentence(e.Message)}");
            return null;
        }
        if (request is null)
        {
            await Problems.Write(context, 400, ProblemCodes.MalformedJson, null, "the request body must be a JSON object");
        }
        return request;
    }

    private static string? FieldOf(string? jsonPath) =>
        jsonPath is null || jsonPath == "$" ? null : jsonPath.TrimStart('$', '.').Split('.', '[')[0];

    private static string FirstSentence(string message)
    {
        int end = message.IndexOf(". ", StringComparison.Ordinal);
        return end > 0 ? message[..end] : message;
    }

    private static TemplateInfo Describe(TemplateDefinition t, TemplateCatalog catalog, IVmRuntime runtime, PoolManager pools, SingletonManager singletons)
    {
        string? unavailable = TemplateCatalog.UnavailableReason(t);
        return new TemplateInfo
        {
            Name = t.Name,
            Description = t.Description,
            Language = t.Language.Name,
            Runtime = runtime.Name,
            Isolation = runtime.Capabilities.Isolation.Name(),
            Accel = runtime.Accel,
            Pause = runtime is ISandboxSaver,
            Available = unavailable is null,
            UnavailableReason = unavailable,
            Built = catalog.TryGetBuilt(t) is not null,
            Output = t.Output == OutputMode.TextAndImages ? "text+images" : "text",
            Network = t.Network.Mode == NetworkMode.Proxy ? "proxy" : "none",
            Warmup = t.Warmup.Strategy.ToString().ToLowerInvariant(),
            Pool = pools.Status(t.Name) is { } p
                ? new PoolInfo
                {
                    Ready = p.Ready, Target = p.Target, Min = p.Min, Max = p.Max, Starting = p.Starting, Frozen = p.Frozen,
                    Hits = p.Hits, Misses = p.Misses, LastError = p.LastError,
                }
                : null,
            Singleton = singletons.Status(t.Name) is { } s
                ? new SingletonInfo { State = s.State, Restarts = s.Restarts, Running = s.Running, Queued = s.Queued, LastError = s.LastError, StartedAt = s.StartedAt?.UtcDateTime }
                : null,
            Limits = new TemplateLimitsInfo
            {
                CompileTimeoutS = t.Limits.CompileTimeoutS,
                RunTimeoutS = t.Limits.RunTimeoutS,
                MaxTimeoutS = t.Limits.MaxTimeoutS,
                OutputBytes = t.Limits.OutputBytes,
                Processes = t.Limits.Processes,
                FileBytes = t.Limits.FileBytes,
            },
            Vcpus = t.Vcpus,
            MemoryMib = t.MemoryMib,
        };
    }

    /// <summary>Last line of defence: an unexpected exception becomes a 500 problem without a stack trace.</summary>
    public static async Task HandleUnexpectedAsync(HttpContext context)
    {
        var error = context.Features.Get<IExceptionHandlerFeature>()?.Error;
        var logger = context.RequestServices.GetRequiredService<ILoggerFactory>().CreateLogger("SandboxVM.Server");
        if (error is not null)
        {
            LogUnhandled(logger, context.Request.Path, error);
        }
        if (error is BadHttpRequestException bad)
        {
            await Problems.Write(context, bad.StatusCode, "bad_request", null, bad.Message);
            return;
        }
        await Problems.Write(context, 500, "internal", null, "the server failed to handle this request; the error is in its log");
    }

    [LoggerMessage(Level = LogLevel.Error, Message = "unhandled error on {Path}")]
    private static partial void LogUnhandled(ILogger logger, string path, Exception e);
}

internal sealed class TemplateInfo
{
    public string Name { get; set; } = "";
    public string Description { get; set; } = "";
    public string Language { get; set; } = "";
    public string Runtime { get; set; } = "";
    public string Isolation { get; set; } = "";
    /// <summary>Sandboxes of this runtime can be paused, resumed and forked (qemu, gvisor; not the process runtime).</summary>
    public bool Pause { get; set; }
    public string? Accel { get; set; }
    public bool Available { get; set; }
    public string? UnavailableReason { get; set; }
    public bool Built { get; set; }
    public string Output { get; set; } = "";
    public string Network { get; set; } = "";
    public string Warmup { get; set; } = "";
    public PoolInfo? Pool { get; set; }
    public SingletonInfo? Singleton { get; set; }
    public TemplateLimitsInfo Limits { get; set; } = new();
    public int Vcpus { get; set; }
    public int MemoryMib { get; set; }
}

internal sealed class PoolInfo
{
    public int Ready { get; set; }
    /// <summary>What the pool aims at now, between <see cref="Min"/> and <see cref="Max"/> (with demand).</summary>
    public int Target { get; set; }
    public int Min { get; set; }
    public int Max { get; set; }
    public int Starting { get; set; }
    /// <summary>Ready sandboxes that are frozen while they wait.</summary>
    public int Frozen { get; set; }
    public long Hits { get; set; }
    public long Misses { get; set; }
    public string? LastError { get; set; }
}

internal sealed class SingletonInfo
{
    /// <summary>ready, starting, stopped (not started yet) or failed.</summary>
    public string State { get; set; } = "";
    public int Restarts { get; set; }
    public int Running { get; set; }
    public int Queued { get; set; }
    public string? LastError { get; set; }
    public DateTime? StartedAt { get; set; }
}

internal sealed class TemplateLimitsInfo
{
    public double CompileTimeoutS { get; set; }
    public double RunTimeoutS { get; set; }
    public double MaxTimeoutS { get; set; }
    public long OutputBytes { get; set; }
    public int Processes { get; set; }
    public long FileBytes { get; set; }
}
