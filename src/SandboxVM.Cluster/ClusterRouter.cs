using System.Net;
using System.Text.Json;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Http.Features;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using Orleans.Runtime;
using SandboxVM.Core;
using SandboxVM.Core.Runs;
using SandboxVM.Core.Sessions;
using SandboxVM.Server;
using SandboxVM.Server.E2b;
using Yarp.ReverseProxy.Forwarder;

namespace SandboxVM.Cluster;

/// <summary>Problem codes of the cluster.</summary>
public static class ClusterProblemCodes
{
    /// <summary>410: the node that held the sandbox died; the sandbox and its files are gone.</summary>
    public const string SandboxLost = "sandbox_lost";

    /// <summary>503: the node that holds the sandbox does not answer (and is not yet known dead): try again.</summary>
    public const string NodeUnreachable = "node_unreachable";

    /// <summary>503: the node is draining and is handing this sandbox to another node (or no other node takes new work): try again.</summary>
    public const string NodeDraining = "node_draining";

    /// <summary>409: a drain of a node that is draining already.</summary>
    public const string AlreadyDraining = "already_draining";
}

/// <summary>
/// Middleware after the caller's key is checked: a call on a sandbox this node does not hold goes to the
/// node that does, streamed both ways by YARP's forwarder (SSE events and file bodies as they come, no
/// buffering), with the hop's secret and the caller instead of the key. The owner comes from the
/// sandbox's grain. A sandbox held here is served here without asking anyone.
/// </summary>
internal sealed partial class ClusterRouter(RequestDelegate next, SessionManager sessions, IGrainFactory grains,
    IHttpForwarder forwarder, ClusterNode node, ClusterHop hop, SandboxRegistrar registrar,
    IClusterMembershipService membership, SandboxVmOptions options, RunPlacement placement, NodeDrain drain,
    IHostApplicationLifetime lifetime, PortShares shares, ILogger<ClusterRouter> logger)
{
    /// <summary>The node that served a call (set by that node; a forwarded answer keeps it).</summary>
    public const string NodeHeader = "SandboxVM-Node";

    private const string OneShotPath = "/v1/run";

    /// <summary>A one-shot run's body read to find its template; a larger one runs where it arrived.</summary>
    private const int PlacementBodyBytes = 1 << 20;

    private const string Prefix = "/v1/sandboxes";

    /// <summary>The cluster's nodes as Orleans' membership has them (admin keys only).</summary>
    public const string NodesPath = "/v1/admin/cluster";

    /// <summary>POST: this node hands its sandboxes to the others and leaves (admin keys only).</summary>
    public const string DrainPath = "/v1/admin/drain";

    /// <summary>How long finding a sandbox's owner may take before the caller hears <c>node_unreachable</c>.</summary>
    private static readonly TimeSpan LocateTimeout = TimeSpan.FromSeconds(10);

    /// <summary>How long a node may take to list its sandboxes before the list goes out without them.</summary>
    private static readonly TimeSpan ListTimeout = TimeSpan.FromSeconds(5);

    private readonly HopTransformer _transformer = new(hop, relay: false);
    private readonly HopTransformer _relay = new(hop, relay: true);
    private readonly PassThroughTransformer _share = new(ShareHopHeader, dropAuthorization: true);
    private readonly PassThroughTransformer _e2b = new(E2bHopHeader, dropAuthorization: false);

    /// <summary>On an E2B call forwarded to the node holding its sandbox: serve it there.</summary>
    public const string E2bHopHeader = "SandboxVM-Cluster-E2b-Hop";

    /// <summary>On a share link's request forwarded to the node holding its sandbox: serve it there (no caller, no secret: a share link needs neither).</summary>
    public const string ShareHopHeader = "SandboxVM-Cluster-Share-Hop";

    public async Task InvokeAsync(HttpContext context)
    {
        var path = context.Request.Path;
        context.Response.Headers[NodeHeader] = node.Url.ToString();
        if (path == DrainPath && HttpMethods.IsPost(context.Request.Method))
        {
            await DrainAsync(context);
            return;
        }
        if (node.Draining && !ClusterHop.IsHop(context) && await RelayWhileDrainingAsync(context))
        {
            return;
        }
        if (path == OneShotPath && HttpMethods.IsPost(context.Request.Method) && !ClusterHop.ServeHere(context))
        {
            await PlaceRunAsync(context);
            return;
        }
        if (path == NodesPath && HttpMethods.IsGet(context.Request.Method))
        {
            await WriteNodesAsync(context);
            return;
        }
        if (path.StartsWithSegments(PortShares.Path, out var shared))
        {
            await RouteShareAsync(context, shared);
            return;
        }
        if (path == E2bEnvd.SignedFilesPath && !context.Request.Headers.ContainsKey(E2bHopHeader))
        {
            await RouteSignedFileAsync(context);
            return;
        }
        if (path.StartsWithSegments(E2bEndpoints.Prefix, out var e2b))
        {
            await RouteE2bAsync(context, e2b);
            return;
        }
        if (!path.StartsWithSegments(Prefix, out var rest))
        {
            await next(context);
            return;
        }
        string id = FirstSegment(rest);
        if (id.Length == 0 && !rest.HasValue && HttpMethods.IsGet(context.Request.Method) && !ClusterHop.ServeHere(context))
        {
            await ListAsync(context);
            return;
        }
        if (node.Draining && id.Length > 0 && !IsLocal(id))
        {
            // Handed off (or being handed off) from here: the next try goes to the node that adopts it.
            await Problems.Write(context, 503, ClusterProblemCodes.NodeDraining, null,
                $"the node that held sandbox '{id}' is draining; try again", TimeSpan.FromSeconds(1));
            return;
        }
        if (id.Length == 0 || ClusterHop.ServeHere(context) || IsLocal(id))
        {
            await ServeHereAsync(context);
            return;
        }
        await RouteToOwnerAsync(context, id, _transformer);
    }

    /// <summary>A call on sandbox <paramref name="id"/>, which this node does not hold: to the node that does, else the answer why not.</summary>
    private async Task RouteToOwnerAsync(HttpContext context, string id, HttpTransformer transformer)
    {
        SandboxPlace? place;
        try
        {
            place = await grains.GetGrain<ISandboxGrain>(id).LocateAsync().WaitAsync(LocateTimeout, context.RequestAborted);
        }
        catch (Exception e) when (e is TimeoutException or SiloUnavailableException or OrleansException)
        {
            LogLocateFailed(logger, id, e.Message);
            // The grain could not be reached, which happens to a sandbox on a live node too while the part of
            // Orleans' grain directory that knows it is on a node that just died and is not yet declared dead
            // (seen once in NodeLossTests: 1 of 108 calls to the live nodes' sandboxes). The sandbox's record
            // in the grain storage still names its node: a live, active one is asked directly.
            place = await RecordedPlaceAsync(context, id);
            if (place is null)
            {
                await Problems.Write(context, 503, ClusterProblemCodes.NodeUnreachable, null,
                    $"the node that holds sandbox '{id}' does not answer; try again", TimeSpan.FromSeconds(1));
                return;
            }
        }
        if (place is null)
        {
            // No node holds it: the local answer is the usual 404.
            await next(context);
            return;
        }
        if (place.Lost)
        {
            await WriteLostAsync(context, id);
            return;
        }
        if (IsLocal(id))
        {
            // Adopted by this node just now (paused in the shared state directory by a node that died or left).
            await ServeHereAsync(context);
            return;
        }
        await ForwardAsync(context, id, place, transformer);
    }

    /// <summary>
    /// The E2B door (<c>/e2b</c>): a call on a sandbox (its id in the control API's path, or envd's and the
    /// interpreter's <c>E2b-Sandbox-Id</c> header) goes to the node holding it as it came, credentials and
    /// all: the door checks E2B's own headers itself (the X-API-KEY, the sandbox's access token, alike on
    /// every node), so the owner checks them again. A list gathers every node's; creates are served where they arrive.
    /// </summary>
    private async Task RouteE2bAsync(HttpContext context, PathString rest)
    {
        bool hopped = context.Request.Headers.ContainsKey(E2bHopHeader);
        if (!hopped && HttpMethods.IsGet(context.Request.Method) && (rest == "/sandboxes" || rest == "/v2/sandboxes"))
        {
            await ListE2bAsync(context);
            return;
        }
        string id = context.Request.Headers["E2b-Sandbox-Id"].ToString();
        if (id.Length == 0 && (rest.StartsWithSegments("/sandboxes", out var tail) || rest.StartsWithSegments("/v2/sandboxes", out tail)))
        {
            id = FirstSegment(tail);
        }
        if (id.Length == 0 || hopped || IsLocal(id))
        {
            await ServeHereAsync(context);
            return;
        }
        await RouteToOwnerAsync(context, id, _e2b);
    }

    /// <summary>
    /// E2B's <c>Sandbox.list()</c>: the key checked here, then every live node's own list (the same query, marked
    /// to be served there), one array; <c>limit</c> applies to the whole. Sandboxes of nodes that died or left
    /// and that no node has taken over yet are not in it (E2B has no state for them; GET /v1/sandboxes lists them).
    /// </summary>
    private async Task ListE2bAsync(HttpContext context)
    {
        if (E2bEndpoints.CallerOf(context) is null)
        {
            await E2bEndpoints.Unauthorized.ExecuteAsync(context);
            return;
        }
        string key = context.Request.Headers["X-API-KEY"].ToString();
        var lists = await FromLiveNodesAsync(context, context.Request.Path + context.Request.QueryString, request =>
        {
            request.Headers.TryAddWithoutValidation("X-API-KEY", key);
            request.Headers.TryAddWithoutValidation(E2bHopHeader, "1");
        }, root => root);
        IEnumerable<JsonElement> all = lists.SelectMany(l => l);
        if (int.TryParse(context.Request.Query["limit"], out int limit) && limit > 0)
        {
            all = all.Take(limit);
        }
        await Results.Json(all.ToList()).ExecuteAsync(context);
    }

    /// <summary>
    /// E2B's signed file URLs (<c>uploadUrl</c>/<c>downloadUrl</c>) come to <c>/files</c> with no sandbox named: one
    /// signed by a sandbox of this node is served here; else the signer is looked for among every node's sandboxes
    /// (live nodes', and those a dead or drained node left, which the call adopts when they wait in the shared
    /// state directory) and the request goes to its node. A URL nobody signed gets this node's 401.
    /// </summary>
    private async Task RouteSignedFileAsync(HttpContext context)
    {
        var local = sessions.List().Select(s => s.Id).ToHashSet(StringComparer.Ordinal);
        if (!context.Request.Query.ContainsKey("signature") || E2bEnvd.SignerOf(context, local) is not null)
        {
            await next(context);
            return;
        }
        List<string> ids = [];
        try
        {
            var lists = await Task.WhenAll(membership.CurrentSnapshot.Members.Values
                .Where(m => m.Status is SiloStatus.Active or SiloStatus.Dead or SiloStatus.ShuttingDown or SiloStatus.Stopping)
                .Select(m => grains.GetGrain<INodeSandboxesGrain>(m.SiloAddress.ToParsableString()).IdsAsync()))
                .WaitAsync(LocateTimeout, context.RequestAborted);
            ids = [.. lists.SelectMany(l => l).Where(id => !local.Contains(id))];
        }
        catch (Exception e) when (e is TimeoutException or SiloUnavailableException or OrleansException)
        {
            LogLocateFailed(logger, "(signer of a file URL)", e.Message);
        }
        if (E2bEnvd.SignerOf(context, ids) is { } signer)
        {
            await RouteToOwnerAsync(context, signer, _e2b);
            return;
        }
        await next(context);
    }

    /// <summary>
    /// <c>/shared/{token}/...</c>: a share link works on every node (they sign links with one key drawn from
    /// the cluster secret) and is served by the node holding its sandbox. A link that does not check out, or
    /// whose sandbox is here or nowhere, gets this node's own answer.
    /// </summary>
    private async Task RouteShareAsync(HttpContext context, PathString rest)
    {
        string token = FirstSegment(rest);
        string? id = null;
        try
        {
            id = token.Length > 0 ? shares.Check(token).Id : null;
        }
        catch (RunRequestException)
        {
            // Changed, made up or expired: the endpoint says which.
        }
        if (id is null || context.Request.Headers.ContainsKey(ShareHopHeader) || IsLocal(id))
        {
            await next(context);
            return;
        }
        await RouteToOwnerAsync(context, id, _share);
    }
    private Task ServeHereAsync(HttpContext context)
    {
        if (HttpMethods.IsPost(context.Request.Method))
        {
            // Creates, forks and resumes: the new sandbox is known to the cluster before its id is out.
            context.Response.OnStarting(() => RegisterAsync(context.RequestAborted));
        }
        return next(context);
    }

    /// <summary>
    /// While this node drains, new work that arrives here goes to another node, marked to be routed there
    /// as if it had arrived there (a sandbox's owner looked up, a one-shot run placed); calls on sandboxes
    /// still held here are served here until they are handed off. False: served here.
    /// </summary>
    private async Task<bool> RelayWhileDrainingAsync(HttpContext context)
    {
        var path = context.Request.Path;
        bool newWork = path == OneShotPath && HttpMethods.IsPost(context.Request.Method);
        if (path.StartsWithSegments(Prefix, out var rest))
        {
            string id = FirstSegment(rest);
            bool list = id.Length == 0 && HttpMethods.IsGet(context.Request.Method);
            newWork = !list && (id.Length == 0 || !IsLocal(id));
        }
        if (!newWork)
        {
            return false;
        }
        if (await placement.ChooseOtherNowAsync(context.RequestAborted) is not { } target)
        {
            await Problems.Write(context, 503, ClusterProblemCodes.NodeDraining, null,
                "this node is draining and no other node takes new work; try again", TimeSpan.FromSeconds(1));
            return true;
        }
        if (context.Features.Get<IHttpMaxRequestBodySizeFeature>() is { IsReadOnly: false } bodySize)
        {
            bodySize.MaxRequestBodySize = options.MaxUploadBytes + 1;
        }
        context.Response.Headers.Remove(NodeHeader);
        var error = await forwarder.SendAsync(context, target, node.Forwarding, node.ForwardingConfig, _relay);
        if (error != ForwarderError.None)
        {
            LogForwardFailed(logger, "(new work while draining)", target, error.ToString());
            if (!context.Response.HasStarted && error is ForwarderError.Request or ForwarderError.RequestTimedOut)
            {
                context.Response.Clear();
                context.Response.Headers[NodeHeader] = node.Url.ToString();
                await Problems.Write(context, 503, ClusterProblemCodes.NodeDraining, null,
                    "this node is draining and the node chosen for the call did not answer; try again", TimeSpan.FromSeconds(1));
            }
        }
        return true;
    }

    /// <summary>POST /v1/admin/drain: hands every sandbox to the shared state directory, answers what moved, then stops this node.</summary>
    private async Task DrainAsync(HttpContext context)
    {
        NodeDrain.Outcome outcome;
        try
        {
            outcome = await drain.DrainAsync();
        }
        catch (RunRequestException e)
        {
            await Problems.Write(context, 409, e.Code, null, e.Message);
            return;
        }
        // The answer goes out first; then the server stops (its silo leaves the cluster, its remaining sandboxes end).
        context.Response.OnCompleted(() =>
        {
            lifetime.StopApplication();
            return Task.CompletedTask;
        });
        await Results.Json(new
        {
            node = node.Url.ToString(),
            moved = outcome.Moved,
            not_moved = outcome.NotMoved.Select(n => new { id = n.Id, code = n.Code, detail = n.Detail }).ToList(),
        }).ExecuteAsync(context);
    }

    /// <summary>A one-shot run goes where a clone of its template is ready, else to the least loaded node.</summary>
    private async Task PlaceRunAsync(HttpContext context)
    {
        string? template = null;
        if (context.Request.ContentLength is null or (> 0 and <= PlacementBodyBytes))
        {
            // At most the first MiB is read here (a chunked body has no length); the endpoint reads it again.
            context.Request.EnableBuffering();
            byte[] head = new byte[PlacementBodyBytes + 1];
            int read = await context.Request.Body.ReadAtLeastAsync(head, head.Length, throwOnEndOfStream: false, context.RequestAborted);
            context.Request.Body.Position = 0;
            if (read <= PlacementBodyBytes)
            {
                template = TemplateOf(head.AsSpan(0, read));
            }
        }
        string? target = template is null ? null : placement.Choose(template);
        if (target is null)
        {
            await next(context);
            return;
        }
        var error = await SendAsync(context, target);
        if (error != ForwarderError.None && !context.Response.HasStarted && error is ForwarderError.Request or ForwarderError.RequestTimedOut)
        {
            // The chosen node went away before the run started: nothing ran there, so it runs here.
            LogForwardFailed(logger, "(one-shot run)", target, error.ToString());
            context.Response.Clear();
            context.Response.Headers[NodeHeader] = node.Url.ToString();
            context.Request.Body.Position = 0;
            await next(context);
        }
    }

    /// <summary>Forwards the call; the answer names the node that served it, not this one.</summary>
    private async Task<ForwarderError> SendAsync(HttpContext context, string url, HttpTransformer? transformer = null)
    {
        context.Response.Headers.Remove(NodeHeader);
        return await forwarder.SendAsync(context, url, node.Forwarding, node.ForwardingConfig, transformer ?? _transformer);
    }

    /// <summary>The top-level "template" of a run request, or null (malformed bodies are the endpoint's to refuse).</summary>
    private static string? TemplateOf(ReadOnlySpan<byte> json)
    {
        try
        {
            var reader = new Utf8JsonReader(json);
            if (!reader.Read() || reader.TokenType != JsonTokenType.StartObject)
            {
                return null;
            }
            while (reader.Read() && reader.TokenType == JsonTokenType.PropertyName)
            {
                bool isTemplate = reader.ValueTextEquals("template"u8);
                reader.Read();
                if (isTemplate)
                {
                    return reader.TokenType == JsonTokenType.String ? reader.GetString() : null;
                }
                reader.Skip();
            }
        }
        catch (JsonException)
        {
        }
        return null;
    }

    private async Task ForwardAsync(HttpContext context, string id, SandboxPlace place, HttpTransformer transformer)
    {
        // The owner enforces the upload limit; here the server-wide cap would cut a large file short.
        if (context.Features.Get<IHttpMaxRequestBodySizeFeature>() is { IsReadOnly: false } bodySize)
        {
            bodySize.MaxRequestBodySize = options.MaxUploadBytes + 1;
        }
        var error = await SendAsync(context, place.Url, transformer);
        if (error == ForwarderError.None)
        {
            return;
        }
        LogForwardFailed(logger, id, place.Url, error.ToString());
        if (context.Response.HasStarted || error is not (ForwarderError.Request or ForwarderError.RequestTimedOut))
        {
            // Part of the answer is out, or the caller went away: YARP has ended the response.
            return;
        }
        context.Response.Clear();
        context.Response.Headers[NodeHeader] = node.Url.ToString();
        if (IsDead(place.Silo))
        {
            await WriteLostAsync(context, id);
            return;
        }
        await Problems.Write(context, 503, ClusterProblemCodes.NodeUnreachable, null,
            $"the node that holds sandbox '{id}' does not answer; try again", TimeSpan.FromSeconds(1));
    }

    /// <summary>
    /// The caller's sandboxes on every node: each live node's own list (asked over a hop, in parallel,
    /// a few seconds at most), and those of dead nodes as <c>lost</c>.
    /// </summary>
    private async Task ListAsync(HttpContext context)
    {
        var caller = context.GetCaller();
        var snapshot = membership.CurrentSnapshot;
        var live = FromLiveNodesAsync(context, Prefix + context.Request.QueryString, request => hop.Stamp(request, caller), root => root.GetProperty("sandboxes"));
        var lost = Task.WhenAll(snapshot.Members.Values.Where(m => m.Status == SiloStatus.Dead).Select(async m =>
        {
            var entries = await grains.GetGrain<INodeSandboxesGrain>(m.SiloAddress.ToParsableString()).ListAsync(caller.Name);
            return entries.Select(s => JsonSerializer.SerializeToElement(new Dictionary<string, object>
            {
                ["id"] = s.Id,
                ["template"] = s.Template,
                // Paused in the shared state directory: its next call resumes it on a live node.
                ["state"] = sessions.IsPausedInSharedState(s.Id) ? "paused" : "lost",
                ["created_at"] = s.CreatedAt.UtcDateTime,
            })).ToList();
        }));
        var lists = (await live).Concat(await lost);
        await Results.Json(new { sandboxes = lists.SelectMany(l => l).ToList() }).ExecuteAsync(context);
    }

    /// <summary>
    /// A GET of <paramref name="pathAndQuery"/> on every active node (this one too), in parallel, a few seconds at
    /// most, each marked by <paramref name="stamp"/>; <paramref name="items"/> finds the array in an answer. A node
    /// that fails or refuses is left out (logged).
    /// </summary>
    private async Task<List<JsonElement>[]> FromLiveNodesAsync(HttpContext context, string pathAndQuery, Action<HttpRequestMessage> stamp,
        Func<JsonElement, JsonElement> items)
    {
        using var http = new HttpClient(node.Handler, disposeHandler: false) { Timeout = ListTimeout };
        return await Task.WhenAll(membership.CurrentSnapshot.Members.Values.Where(m => m.Status == SiloStatus.Active).Select(async m =>
        {
            using var request = new HttpRequestMessage(HttpMethod.Get, new Uri(new Uri(m.Name), pathAndQuery));
            stamp(request);
            try
            {
                using var response = await http.SendAsync(request, context.RequestAborted);
                response.EnsureSuccessStatusCode();
                using var doc = await JsonDocument.ParseAsync(await response.Content.ReadAsStreamAsync(context.RequestAborted), cancellationToken: context.RequestAborted);
                return items(doc.RootElement).EnumerateArray().Select(e => e.Clone()).ToList();
            }
            catch (Exception e) when (e is HttpRequestException or TaskCanceledException or JsonException or KeyNotFoundException or InvalidOperationException
                && !context.RequestAborted.IsCancellationRequested)
            {
                LogListFailed(logger, m.Name, e.Message);
                return [];
            }
        }));
    }

    private Task WriteNodesAsync(HttpContext context)
    {
        var snapshot = membership.CurrentSnapshot;
        return Results.Json(new
        {
            self = node.Url.ToString(),
            version = snapshot.Version.Value,
            nodes = snapshot.Members.Values.OrderBy(m => m.Name, StringComparer.Ordinal).Select(m => new
            {
                url = m.Name,
                silo = m.SiloAddress.ToParsableString(),
                status = m.Status.ToString().ToLowerInvariant(),
            }).ToList(),
        }).ExecuteAsync(context);
    }

    private static Task WriteLostAsync(HttpContext context, string id) =>
        Problems.Write(context, 410, ClusterProblemCodes.SandboxLost, null,
            $"sandbox '{id}' is lost: the node that held it left the cluster");

    /// <summary>
    /// Where sandbox <paramref name="id"/>'s record in the grain storage says it is, when that node is active
    /// and holds it (not handed off); else null. Read without its grain, for when the grain cannot be reached.
    /// </summary>
    private async Task<SandboxPlace?> RecordedPlaceAsync(HttpContext context, string id)
    {
        try
        {
            var storage = context.RequestServices.GetRequiredKeyedService<Orleans.Storage.IGrainStorage>(ClusterExtension.StorageName);
            var state = new GrainState<SandboxRecord>();
            await storage.ReadStateAsync(SandboxGrain.StateName, grains.GetGrain<ISandboxGrain>(id).GetGrainId(), state).WaitAsync(LocateTimeout, context.RequestAborted);
            if (!state.RecordExists || state.State is not { Url: { } url, Silo: { } silo, HandedOff: false }
                || membership.CurrentSnapshot.GetSiloStatus(SiloAddress.FromParsableString(silo)) != SiloStatus.Active)
            {
                return null;
            }
            return new SandboxPlace(url, silo);
        }
        catch (Exception e) when (e is not OperationCanceledException and not OutOfMemoryException)
        {
            LogLocateFailed(logger, id, "its record: " + e.Message);
            return null;
        }
    }

    private bool IsDead(string silo) =>
        membership.CurrentSnapshot.GetSiloStatus(SiloAddress.FromParsableString(silo)) is SiloStatus.Dead or SiloStatus.None;

    private bool IsLocal(string id)
    {
        try
        {
            sessions.Get(id);
            return true;
        }
        catch (SandboxVM.Core.Runs.RunRequestException)
        {
            return false;
        }
    }

    private async Task RegisterAsync(CancellationToken cancellationToken)
    {
        try
        {
            await registrar.SyncAsync(cancellationToken);
        }
        catch (Exception e) when (e is not OperationCanceledException)
        {
            // The registrar's loop tries again within a second.
            LogRegisterFailed(logger, e.Message);
        }
    }

    /// <summary>The first segment of what follows a prefix (/v1/sandboxes, /shared, /e2b/sandboxes), unescaped; empty for none.</summary>
    private static string FirstSegment(PathString rest)
    {
        string value = rest.Value ?? "";
        if (value.Length < 2)
        {
            return "";
        }
        int slash = value.IndexOf('/', 1);
        return WebUtility.UrlDecode(slash < 0 ? value[1..] : value[1..slash]);
    }

    [LoggerMessage(Level = LogLevel.Warning, Message = "cluster: finding the owner of sandbox {Id} failed: {Error}")]
    private static partial void LogLocateFailed(ILogger logger, string id, string error);

    [LoggerMessage(Level = LogLevel.Warning, Message = "cluster: forwarding a call on sandbox {Id} to {Url} failed: {Error}")]
    private static partial void LogForwardFailed(ILogger logger, string id, string url, string error);

    [LoggerMessage(Level = LogLevel.Warning, Message = "cluster: node {Url} did not list its sandboxes: {Error}")]
    private static partial void LogListFailed(ILogger logger, string url, string error);

    [LoggerMessage(Level = LogLevel.Warning, Message = "cluster: registering new sandboxes failed: {Error}")]
    private static partial void LogRegisterFailed(ILogger logger, string error);

    /// <summary>The request as it came, minus its key, plus the hop's secret and caller.</summary>
    private sealed class HopTransformer(ClusterHop hop, bool relay) : HttpTransformer
    {
        public override async ValueTask TransformRequestAsync(HttpContext httpContext, HttpRequestMessage proxyRequest,
            string destinationPrefix, CancellationToken cancellationToken)
        {
            await base.TransformRequestAsync(httpContext, proxyRequest, destinationPrefix, cancellationToken);
            hop.Stamp(proxyRequest, httpContext.GetCaller(), relay);
        }
    }

    /// <summary>
    /// A request whose credentials the owner checks itself (a share link's token, E2B's key and sandbox token): it
    /// goes as it came, without any hop identity, marked with <paramref name="hopHeader"/> so the owner serves it
    /// where it lands; <paramref name="dropAuthorization"/> for one that needs no key at all.
    /// </summary>
    private sealed class PassThroughTransformer(string hopHeader, bool dropAuthorization) : HttpTransformer
    {
        public override async ValueTask TransformRequestAsync(HttpContext httpContext, HttpRequestMessage proxyRequest,
            string destinationPrefix, CancellationToken cancellationToken)
        {
            await base.TransformRequestAsync(httpContext, proxyRequest, destinationPrefix, cancellationToken);
            if (dropAuthorization)
            {
                proxyRequest.Headers.Authorization = null;
            }
            proxyRequest.Headers.Remove(ClusterHop.SecretHeader);
            proxyRequest.Headers.Remove(ClusterHop.CallerHeader);
            proxyRequest.Headers.TryAddWithoutValidation(hopHeader, "1");
        }
    }
}
