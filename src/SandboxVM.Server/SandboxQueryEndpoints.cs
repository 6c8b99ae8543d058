using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Http.Json;
using Microsoft.AspNetCore.Routing;
using Microsoft.Extensions.Options;
using SandboxVM.Core.Runs;
using SandboxVM.Core.Sessions;
using SandboxVM.Runtime;

namespace SandboxVM.Server;

/// <summary>
/// Finding and reconnecting to sandboxes, and their named snapshots: the filtered list, PATCH of the
/// lifetime, <c>/v1/sandboxes/{id}/snapshots</c> and <c>/v1/snapshots</c> (see docs/API.md).
/// </summary>
internal static class SandboxQueryEndpoints
{
    private const string MetadataPrefix = "metadata.";

    public static void Map(IEndpointRouteBuilder app, RouteGroupBuilder sandboxes)
    {
        sandboxes.MapGet("", List);
        // Each of these names the sandbox of another caller a 404, like an unknown id (SessionManager.Get with the owner).
        sandboxes.MapPatch("/{id}", PatchAsync);
        sandboxes.MapPost("/{id}/snapshots", SnapshotAsync);
        var snapshots = app.MapGroup("/v1/snapshots");
        snapshots.MapGet("", (HttpContext context, SessionManager sessions) =>
            Results.Json(new { snapshots = sessions.ListSnapshots(context.GetCaller().Name).Select(Describe).ToList() }));
        snapshots.MapDelete("/{name}", (string name, HttpContext context, SessionManager sessions) =>
            SandboxEndpoints.Handle(context, () =>
            {
                sessions.DeleteSnapshot(context.GetCaller().Name, name);
                return Task.FromResult(Results.NoContent());
            }));
    }

    /// <summary>The caller's sandboxes, those with every <c>metadata.KEY=VALUE</c> given and (when given) one of the <c>state</c>s (comma-separated).</summary>
    private static IResult List(HttpContext context, SessionManager sessions, IVmRuntime runtime) =>
        SandboxEndpoints.Handle(context, () =>
        {
            var query = context.Request.Query;
            var metadata = new List<KeyValuePair<string, string>>();
            HashSet<string>? states = null;
            foreach (var (key, values) in query)
            {
                if (key.StartsWith(MetadataPrefix, StringComparison.Ordinal) && key.Length > MetadataPrefix.Length)
                {
                    metadata.AddRange(values.Select(v => KeyValuePair.Create(key[MetadataPrefix.Length..], v ?? "")));
                }
                else if (key == "state")
                {
                    states = [.. values.SelectMany(v => (v ?? "").Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries))];
                    string? unknown = states.FirstOrDefault(s => !Enum.TryParse<SessionState>(s, ignoreCase: true, out var known)
                        || known.ToString().ToLowerInvariant() != s);
                    if (unknown is not null)
                    {
                        throw new RunRequestException(ProblemCodes.InvalidFilter, "state",
                            $"state is one or more of running, pausing, paused, resuming (comma-separated), not '{unknown}'");
                    }
                }
                else
                {
                    throw new RunRequestException(ProblemCodes.InvalidFilter, key, $"unknown filter '{key}': use state=... or metadata.KEY=VALUE");
                }
            }
            string caller = context.GetCaller().Name;
            var found = sessions.List()
                .Where(s => s.Owner == caller)
                .Where(s => states is null || states.Contains(s.State.ToString().ToLowerInvariant()))
                .Where(s => metadata.All(m => s.Metadata.TryGetValue(m.Key, out string? v) && v == m.Value))
                .OrderBy(s => s.CreatedAt)
                .Select(s => SandboxEndpoints.Describe(s, runtime))
                .ToList();
            return Task.FromResult(Results.Json(new { sandboxes = found }));
        });

    private static async Task PatchAsync(string id, HttpContext context, SessionManager sessions, IVmRuntime runtime, IOptions<JsonOptions> json)
    {
        if (!await IsCallersAsync(context, sessions, id))
        {
            return;
        }
        var body = await Endpoints.ReadJsonAsync<PatchSandboxBody>(context, json.Value.SerializerOptions, "sandbox update");
        if (body is null)
        {
            return;
        }
        await SandboxEndpoints.Handle(context, () =>
            Task.FromResult(Results.Json(SandboxEndpoints.Describe(sessions.SetTimeout(id, body.TimeoutS), runtime)))).ExecuteAsync(context);
    }

    private static async Task SnapshotAsync(string id, HttpContext context, SessionManager sessions, IOptions<JsonOptions> json)
    {
        if (!await IsCallersAsync(context, sessions, id))
        {
            return;
        }
        var body = await Endpoints.ReadJsonAsync<SnapshotBody>(context, json.Value.SerializerOptions, "snapshot request");
        if (body is null)
        {
            return;
        }
        await SandboxEndpoints.Handle(context, async () =>
            Results.Json(Describe(await sessions.SnapshotAsync(id, body.Name, context.RequestAborted)), statusCode: 201)).ExecuteAsync(context);
    }

    /// <summary>Before the body is read: another caller's sandbox is the same 404 as an unknown id.</summary>
    private static async Task<bool> IsCallersAsync(HttpContext context, SessionManager sessions, string id)
    {
        try
        {
            sessions.Get(id, context.GetCaller().Name);
            return true;
        }
        catch (RunRequestException e)
        {
            await Problems.Write(context, e);
            return false;
        }
    }

    private static SnapshotDto Describe(NamedSnapshot s) => new(s.Name, s.Template, s.SizeBytes, s.CreatedAt.UtcDateTime, s.SourceSandbox);
}

/// <summary>Body of <c>PATCH /v1/sandboxes/{id}</c>.</summary>
internal sealed class PatchSandboxBody
{
    public double? TimeoutS { get; set; }
}

/// <summary>Body of <c>POST /v1/sandboxes/{id}/snapshots</c>.</summary>
internal sealed class SnapshotBody
{
    public string? Name { get; set; }
}

/// <summary>A named snapshot on the wire.</summary>
internal sealed record SnapshotDto(string Name, string Template, long SizeBytes, DateTime CreatedAt, string SourceSandbox);
