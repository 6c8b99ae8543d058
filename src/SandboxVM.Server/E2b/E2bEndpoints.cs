using System.Text.Json.Nodes;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Routing;
using Microsoft.Extensions.DependencyInjection;
using SandboxVM.Core.Runs;
using SandboxVM.Core.Sessions;

namespace SandboxVM.Server.E2b;

/// <summary>
/// An E2B-compatible door under /e2b (docs/E2B.md): E2B's control API with the caller's SandboxVM key in
/// X-API-KEY, and on the same prefix what E2B serves inside a sandbox (envd on port 49983, the code
/// interpreter on 49999), chosen by the E2b-Sandbox-Id header, so E2B_API_URL and E2B_SANDBOX_URL can
/// both be http://host:8000/e2b.
/// </summary>
internal static class E2bEndpoints
{
    public const string Prefix = "/e2b";

    /// <summary>E2B's template ids that mean "the code interpreter" (and E2B's base image): SandboxVM's python-data-analysis.</summary>
    public const string DefaultTemplate = "python-data-analysis";
    private static readonly HashSet<string> s_interpreterIds = new(StringComparer.Ordinal)
    {
        "code-interpreter-v1", "code-interpreter", "code-interpreter-beta", "base",
    };

    public static IEndpointRouteBuilder MapE2b(this IEndpointRouteBuilder app)
    {
        var g = app.MapGroup(Prefix);
        g.MapPost("/sandboxes", (Delegate)CreateAsync);
        g.MapPost("/v2/sandboxes", (Delegate)CreateAsync);
        g.MapGet("/sandboxes", (Delegate)ListAsync);
        g.MapGet("/v2/sandboxes", (Delegate)ListAsync);
        g.MapGet("/sandboxes/{id}", (string id, HttpContext c) => OwnedAsync(c, id, (s, _) => Task.FromResult<IResult>(Results.Json(Listed(c, s)))));
        g.MapDelete("/sandboxes/{id}", (string id, HttpContext c) => OwnedAsync(c, id, async (s, sessions) =>
        {
            await sessions.DeleteAsync(s.Id);
            c.RequestServices.GetRequiredService<E2bState>().Forget(s.Id);
            return Results.NoContent();
        }));
        g.MapPost("/sandboxes/{id}/timeout", (string id, HttpContext c) => OwnedAsync(c, id, async (s, sessions) =>
        {
            var body = await ReadBodyAsync(c);
            sessions.SetTimeout(s.Id, Seconds(body, "timeout"));
            return Results.NoContent();
        }));
        g.MapPost("/sandboxes/{id}/refreshes", (string id, HttpContext c) => OwnedAsync(c, id, async (s, sessions) =>
        {
            var body = await ReadBodyAsync(c);
            sessions.KeepAlive(s.Id, body["duration"] is null ? null : Seconds(body, "duration"));
            return Results.NoContent();
        }));
        g.MapPost("/sandboxes/{id}/pause", (string id, HttpContext c) => OwnedAsync(c, id, async (s, sessions) =>
        {
            if (s.State != SessionState.Running)
            {
                return Error(409, $"sandbox {s.Id} is already paused");
            }
            await sessions.PauseAsync(s.Id, c.RequestAborted);
            return Results.NoContent();
        }));
        g.MapPost("/sandboxes/{id}/resume", (string id, HttpContext c) => ConnectAsync(c, id));
        g.MapPost("/v2/sandboxes/{id}/connect", (string id, HttpContext c) => ConnectAsync(c, id));
        E2bEnvd.Map(g);
        E2bEnvd.MapSignedFiles(app);
        E2bInterpreter.Map(g);
        return app;
    }

    /// <summary>E2B's error body: {"code": status, "message": ...}.</summary>
    public static IResult Error(int status, string message) =>
        Results.Json(new JsonObject { ["code"] = status, ["message"] = message }, statusCode: status);

    /// <summary>The caller of a control call, from X-API-KEY checked like a Bearer key; null when the key is wrong.</summary>
    public static Caller? CallerOf(HttpContext context)
    {
        var callers = context.RequestServices.GetRequiredService<CallerStore>();
        if (!callers.KeysRequired)
        {
            return Caller.Anonymous;
        }
        return callers.Authenticate(context.Request.Headers["X-API-KEY"].ToString());
    }

    public static readonly IResult Unauthorized = Error(401, "Invalid API key: X-API-KEY must be a SandboxVM API key");

    /// <summary>Runs a control call as its caller; a SandboxVM refusal becomes E2B's error body with its status.</summary>
    private static async Task<IResult> AsCallerAsync(HttpContext context, Func<Caller, SessionManager, Task<IResult>> handler)
    {
        if (CallerOf(context) is not { } caller)
        {
            return Unauthorized;
        }
        try
        {
            return await handler(caller, context.RequestServices.GetRequiredService<SessionManager>());
        }
        catch (RunRequestException e)
        {
            return Error(ProblemStatus.Of(e.Kind), e.Message);
        }
        catch (BadHttpRequestException e)
        {
            return Error(400, e.Message);
        }
        catch (Exception e) when (e is InvalidOperationException or FormatException)
        {
            // A JSON field of the wrong type (JsonNode.GetValue): the caller's mistake, not the server's.
            return Error(400, $"a field of the body has the wrong type: {e.Message}");
        }
    }

    private static Task<IResult> OwnedAsync(HttpContext context, string id, Func<SandboxSession, SessionManager, Task<IResult>> handler) =>
        AsCallerAsync(context, (caller, sessions) =>
        {
            SandboxSession session;
            try
            {
                session = sessions.Get(id, caller.Name);
            }
            catch (RunRequestException)
            {
                return Task.FromResult(Error(404, $"sandbox \"{id}\" doesn't exist or you don't have access to it"));
            }
            return handler(session, sessions);
        });

    private static async Task<JsonObject> ReadBodyAsync(HttpContext context)
    {
        byte[] bytes;
        try
        {
            bytes = await E2bConnect.ReadBodyAsync(context.Request, E2bConnect.MaxRequestBytes, context.RequestAborted);
        }
        catch (ConnectException e)
        {
            throw new RunRequestException(ProblemCodes.MalformedJson, null, e.Message);
        }
        if (bytes.Length == 0)
        {
            return [];
        }
        try
        {
            return JsonNode.Parse(bytes) as JsonObject ?? throw new RunRequestException(ProblemCodes.MalformedJson, null, "the body is not a JSON object");
        }
        catch (System.Text.Json.JsonException e)
        {
            throw new RunRequestException(ProblemCodes.MalformedJson, null, $"the body is not JSON: {e.Message}");
        }
    }

    private static double? Seconds(JsonObject body, string field) => body[field] switch
    {
        null => null,
        JsonValue v when v.TryGetValue(out double d) => d,
        _ => throw new RunRequestException(ProblemCodes.MalformedJson, field, $"'{field}' must be a number of seconds"),
    };

    private static Task<IResult> CreateAsync(HttpContext context) => AsCallerAsync(context, async (caller, sessions) =>
    {
        var body = await ReadBodyAsync(context);
        string asked = body["templateID"]?.GetValue<string>() ?? "base";
        string template = s_interpreterIds.Contains(asked) ? DefaultTemplate : asked;
        double? timeout = Seconds(body, "timeout") ?? 300;
        var metadata = Strings(body["metadata"], "metadata");
        var envs = Strings(body["envVars"], "envVars");
        if (body["autoPause"]?.GetValue<bool>() == true)
        {
            return Error(400, "autoPause is not supported by SandboxVM's E2B API: a sandbox ends at its timeout");
        }
        // E2B has no idle end and its background processes run between calls: the whole timeout, never frozen.
        var session = await sessions.CreateAsync(new CreateSandboxRequest
        {
            Template = template,
            TimeoutS = timeout,
            IdleTimeoutS = context.RequestServices.GetRequiredService<SandboxVM.Core.SandboxVmOptions>().MaxSandboxTimeoutS,
            Metadata = metadata,
            KeepRunning = true,
            Env = envs,
        }, new SandboxOwner(caller.Name, caller.Limits.Sandboxes), context.RequestAborted);
        var state = context.RequestServices.GetRequiredService<E2bState>();
        state.KeepOnly(sessions.List().Select(s => s.Id));
        return Results.Json(Created(state, session, asked), statusCode: 201);
    });

    private static Dictionary<string, string>? Strings(JsonNode? node, string field)
    {
        if (node is null)
        {
            return null;
        }
        if (node is not JsonObject o || o.Any(p => p.Value is not JsonValue v || !v.TryGetValue(out string? _)))
        {
            throw new RunRequestException(ProblemCodes.MalformedJson, field, $"'{field}' must be an object of strings");
        }
        return o.ToDictionary(p => p.Key, p => p.Value!.GetValue<string>(), StringComparer.Ordinal);
    }

    private static JsonObject Created(E2bState state, SandboxSession s, string? templateId = null)
    {
        string token = state.TokenFor(s.Id);
        return new JsonObject
        {
            ["templateID"] = templateId ?? s.Template.Name,
            ["sandboxID"] = s.Id,
            ["clientID"] = "sandboxvm",
            ["envdVersion"] = E2bState.EnvdVersion,
            ["envdAccessToken"] = token,
            ["trafficAccessToken"] = token,
            ["domain"] = null,
        };
    }

    private static JsonObject Listed(HttpContext context, SandboxSession s)
    {
        var o = new JsonObject
        {
            ["templateID"] = s.Template.Name,
            ["sandboxID"] = s.Id,
            ["clientID"] = "sandboxvm",
            ["startedAt"] = s.CreatedAt.UtcDateTime.ToString("O"),
            ["endAt"] = s.ExpiresAt.UtcDateTime.ToString("O"),
            ["cpuCount"] = s.Template.Vcpus,
            ["memoryMB"] = s.Template.MemoryMib,
            ["diskSizeMB"] = 0,
            ["metadata"] = new JsonObject(s.Metadata.Select(p => KeyValuePair.Create(p.Key, (JsonNode?)p.Value))),
            ["state"] = s.State is SessionState.Paused or SessionState.Pausing ? "paused" : "running",
            ["envdVersion"] = E2bState.EnvdVersion,
            ["envdAccessToken"] = context.RequestServices.GetRequiredService<E2bState>().TokenFor(s.Id),
        };
        return o;
    }

    private static Task<IResult> ListAsync(HttpContext context) => AsCallerAsync(context, (caller, sessions) =>
    {
        var query = context.Request.Query;
        // metadata=k1%3Dv1%26k2%3Dv2 (a query string in one parameter): every pair must match.
        var wanted = Microsoft.AspNetCore.WebUtilities.QueryHelpers.ParseQuery(query["metadata"].ToString());
        var states = query["state"].ToString().Split(',', StringSplitOptions.RemoveEmptyEntries);
        var list = sessions.List().Where(s => s.Owner == caller.Name)
            .Select(s => Listed(context, s))
            .Where(o => states.Length == 0 || states.Contains(o["state"]!.GetValue<string>()))
            .Where(o => wanted.All(w => o["metadata"]![w.Key]?.GetValue<string>() == w.Value.ToString()))
            .ToList();
        if (int.TryParse(query["limit"], out int limit) && limit > 0)
        {
            list = [.. list.Take(limit)];
        }
        return Task.FromResult(Results.Json(new JsonArray([.. list])));
    });

    private static Task<IResult> ConnectAsync(HttpContext context, string id) => OwnedAsync(context, id, async (s, sessions) =>
    {
        var body = await ReadBodyAsync(context);
        int status = 200;
        if (s.State is SessionState.Paused or SessionState.Pausing)
        {
            s = await sessions.ResumeAsync(s.Id, context.RequestAborted);
            status = 201;
        }
        if (Seconds(body, "timeout") is { } timeout)
        {
            sessions.SetTimeout(s.Id, timeout);
        }
        return Results.Json(Created(context.RequestServices.GetRequiredService<E2bState>(), s), statusCode: status);
    });
}
