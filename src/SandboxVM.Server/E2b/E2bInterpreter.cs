using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using System.Text.RegularExpressions;
using System.Threading.Channels;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Routing;
using Microsoft.Extensions.DependencyInjection;
using SandboxVM.Core.Runs;
using SandboxVM.Core.Sessions;
using SandboxVM.Protocol;
using SandboxVM.Runtime.Agent;

namespace SandboxVM.Server.E2b;

/// <summary>
/// What E2B's code interpreter (port 49999) answers, on the sandbox's persistent Python states:
/// POST /execute streams JSON lines (stdout, stderr, result, error, end_of_execution); /contexts
/// creates, lists, restarts and removes code contexts, each an independent kernel of the agent
/// (<see cref="ForkServerRequest.Context"/>; "default" is the sandbox's own state, the one
/// SandboxVM's session runs use). Results carry the representations the kernel found
/// (<see cref="RunResult.ResultData"/>, <see cref="RunResult.Displays"/>) under E2B's names.
/// </summary>
internal static partial class E2bInterpreter
{
    public const string DefaultContext = "default";

    /// <summary>A cell's JSON; the run checks the code's own size against the template.</summary>
    private const int MaxBodyBytes = 16 << 20;

    public static void Map(RouteGroupBuilder g)
    {
        // A cell is a run: it counts against its sandbox owner's runs_per_minute and concurrent_runs as POST /v1/run does.
        g.MapPost("/execute", ExecuteAsync).CountsAsRun();
        g.MapGet("/contexts", (Delegate)((HttpContext c) => E2bEnvd.Sandboxed(c, false, (s, _) =>
            Task.FromResult(Results.Json(new JsonArray([.. ExtrasOf(c, s.Id).Contexts().Select(Context)]))))));
        g.MapPost("/contexts", (Delegate)((HttpContext c) => E2bEnvd.Sandboxed(c, false, (s, sessions) => CreateContextAsync(c, s, sessions))));
        g.MapPost("/contexts/{id}/restart", (string id, HttpContext c) => E2bEnvd.Sandboxed(c, false, async (s, sessions) =>
        {
            if (!ExtrasOf(c, s.Id).HasContext(id))
            {
                return E2bEndpoints.Error(404, $"context '{id}' not found");
            }
            // A fresh interpreter: the kernel ends now, the context's next run starts a new one.
            var stopped = await StopKernelAsync(sessions, s.Id, id, c.RequestAborted);
            return stopped ?? Results.NoContent();
        }));
        g.MapDelete("/contexts/{id}", (string id, HttpContext c) => E2bEnvd.Sandboxed(c, false, async (s, sessions) =>
        {
            var extras = ExtrasOf(c, s.Id);
            if (id == DefaultContext)
            {
                return E2bEndpoints.Error(400, "the default context cannot be removed (restart it to clear its state)");
            }
            if (!extras.HasContext(id))
            {
                return E2bEndpoints.Error(404, $"context '{id}' not found");
            }
            var stopped = await StopKernelAsync(sessions, s.Id, id, c.RequestAborted);
            if (stopped is null)
            {
                extras.RemoveContext(id);
            }
            return stopped ?? Results.NoContent();
        }));
    }

    private static SandboxExtras ExtrasOf(HttpContext context, string sandboxId) =>
        context.RequestServices.GetRequiredService<E2bState>().For(sandboxId);

    private static JsonObject Context(string id) => new() { ["id"] = id, ["language"] = "python", ["cwd"] = SandboxExtras.ContextCwd };

    /// <summary>POST /contexts {language, cwd}: a new Python state, its kernel started by its first run.</summary>
    private static async Task<IResult> CreateContextAsync(HttpContext context, SandboxSession session, SessionManager sessions)
    {
        string? language, cwd;
        try
        {
            var body = JsonNode.Parse(await E2bConnect.ReadBodyAsync(context.Request, 64 << 10, context.RequestAborted)) as JsonObject;
            language = body?["language"]?.GetValue<string>();
            cwd = body?["cwd"]?.GetValue<string>();
        }
        catch (Exception e) when (e is JsonException or ConnectException or InvalidOperationException or FormatException)
        {
            return E2bEndpoints.Error(400, $"the body must be a JSON object with optional strings 'language' and 'cwd': {e.Message}");
        }
        if (language is not (null or "python" or "py"))
        {
            return E2bEndpoints.Error(400, $"language '{language}' is not supported: SandboxVM's interpreter runs Python");
        }
        if (cwd is not (null or SandboxExtras.ContextCwd))
        {
            return E2bEndpoints.Error(400, $"cwd '{cwd}' is not supported: a context's code runs in {SandboxExtras.ContextCwd} (call os.chdir in it)");
        }
        if (session.Template.Language.ForkServer is null)
        {
            return E2bEndpoints.Error(400, $"template '{session.Template.Name}' has no persistent Python interpreter, so no code contexts");
        }
        var extras = ExtrasOf(context, session.Id);
        string? id = extras.AddContext();
        if (id is null)
        {
            return E2bEndpoints.Error(429, $"a sandbox has at most {KernelRequest.MaxContexts} code contexts (the default one included): remove one first");
        }
        // Also asks whether the agent has contexts at all: one without kernel_stop would run every context in one state.
        var refused = await StopKernelAsync(sessions, session.Id, id, context.RequestAborted);
        if (refused is not null)
        {
            extras.RemoveContext(id);
            return refused;
        }
        return Results.Json(Context(id));
    }

    /// <summary>kernel_stop for a context of the door; null when done, else the error to answer.</summary>
    private static async Task<IResult?> StopKernelAsync(SessionManager sessions, string sandboxId, string id, CancellationToken ct)
    {
        try
        {
            await sessions.StopKernelAsync(sandboxId, id == DefaultContext ? null : id, ct);
            return null;
        }
        catch (AgentException e) when (e.Code == ErrorCodes.UnknownOp)
        {
            return E2bEndpoints.Error(501, "this sandbox's guest agent predates code contexts: only the default context exists");
        }
        catch (AgentException e)
        {
            return E2bEndpoints.Error(500, $"the sandbox's agent refused: {e.Message}");
        }
    }

    private static async Task ExecuteAsync(HttpContext context)
    {
        var (session, status, message) = E2bEnvd.Resolve(context);
        if (session is null)
        {
            await E2bEndpoints.Error(status, message).ExecuteAsync(context);
            return;
        }
        JsonObject body;
        string? language, contextId, code;
        try
        {
            body = JsonNode.Parse(await E2bConnect.ReadBodyAsync(context.Request, MaxBodyBytes, context.RequestAborted)) as JsonObject
                ?? throw new JsonException("not an object");
            language = body["language"]?.GetValue<string>();
            contextId = body["context_id"]?.GetValue<string>();
            code = body["code"]?.GetValue<string>() ?? throw new JsonException("'code' is missing");
        }
        catch (Exception e) when (e is JsonException or ConnectException or InvalidOperationException or FormatException)
        {
            await E2bEndpoints.Error(400, $"the body must be a JSON object with a string 'code': {e.Message}").ExecuteAsync(context);
            return;
        }
        var extras = context.RequestServices.GetRequiredService<E2bState>().For(session.Id);
        if (language is not (null or "python" or "py") || (contextId is not null && !extras.HasContext(contextId)))
        {
            await E2bEndpoints.Error(contextId is null ? 400 : 404, contextId is null
                ? $"language '{language}' is not supported: SandboxVM's interpreter runs Python"
                : $"context '{contextId}' not found").ExecuteAsync(context);
            return;
        }
        Dictionary<string, string>? env = null;
        if (body["env_vars"] is JsonObject vars)
        {
            env = vars.ToDictionary(p => p.Key, p => p.Value?.ToString() ?? "", StringComparer.Ordinal);
        }
        var sessions = context.RequestServices.GetRequiredService<SessionManager>();
        var lines = Channel.CreateUnbounded<JsonObject>(new UnboundedChannelOptions { SingleReader = true });
        var events = new Events(lines.Writer);
        var ct = context.RequestAborted;
        var request = new RunRequest { Code = code, Env = env, Context = contextId is null or DefaultContext ? null : contextId, RichResults = true };
        var run = RunAsync(sessions, session.Id, request, events, lines.Writer, ct);

        context.Response.StatusCode = 200;
        context.Response.ContentType = "application/x-ndjson";
        await context.Response.StartAsync(ct);
        await foreach (var line in lines.Reader.ReadAllAsync(ct))
        {
            await context.Response.Body.WriteAsync(JsonSerializer.SerializeToUtf8Bytes(line), ct);
            await context.Response.Body.WriteAsync("\n"u8.ToArray(), ct);
            await context.Response.Body.FlushAsync(ct);
        }
        await run;
    }

    private static async Task RunAsync(SessionManager sessions, string id, RunRequest request, Events events, ChannelWriter<JsonObject> lines, CancellationToken ct)
    {
        try
        {
            var result = await sessions.RunAsync(id, request, events, ct);
            events.Flush();
            foreach (var shown in result.Displays ?? [])
            {
                lines.TryWrite(ResultOf(shown, null, isMain: false));
            }
            if (result.Result is { } repr)
            {
                lines.TryWrite(ResultOf(result.ResultData, repr, isMain: true));
            }
            if (result.Status != RunStatus.Ok)
            {
                lines.TryWrite(ErrorOf(result));
            }
        }
        catch (RunRequestException e)
        {
            lines.TryWrite(new JsonObject { ["type"] = "error", ["name"] = "SandboxError", ["value"] = e.Message, ["traceback"] = e.Message });
        }
        catch (OperationCanceledException) when (ct.IsCancellationRequested)
        {
        }
        finally
        {
            lines.TryWrite(new JsonObject { ["type"] = "end_of_execution" });
            lines.TryComplete();
        }
    }

    /// <summary>The exception of a failed run from its traceback's last line ("Name: value"), or the run's verdict.</summary>
    private static JsonObject ErrorOf(RunResult result)
    {
        string traceback = result.Stderr;
        string? last = traceback.Split('\n', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries).LastOrDefault();
        var match = last is null ? null : ExceptionLine().Match(last);
        (string name, string value) = result.Status switch
        {
            RunStatus.Error when match is { Success: true } => (match.Groups[1].Value, match.Groups[2].Value),
            RunStatus.Timeout => ("TimeoutError", result.Error ?? "the execution timed out"),
            RunStatus.Oom => ("MemoryError", result.Error ?? "the execution ran out of memory"),
            RunStatus.OutputLimit => ("OutputLimitError", result.Error ?? "the execution wrote more output than the template allows"),
            _ => (result.Status.ToString(), result.Error ?? last ?? ""),
        };
        return new JsonObject { ["type"] = "error", ["name"] = name, ["value"] = value, ["traceback"] = traceback };
    }

    /// <summary>E2B's Result keys for the MIME types Jupyter uses.</summary>
    private static readonly Dictionary<string, string> _resultKeys = new(StringComparer.Ordinal)
    {
        ["text/plain"] = "text",
        ["text/html"] = "html",
        ["text/markdown"] = "markdown",
        ["image/svg+xml"] = "svg",
        ["image/png"] = "png",
        ["image/jpeg"] = "jpeg",
        ["application/pdf"] = "pdf",
        ["text/latex"] = "latex",
        ["application/json"] = "json",
        ["application/javascript"] = "javascript",
    };

    /// <summary>A "result" line: each representation under E2B's key (json as JSON, images base64); other MIME types are left out.</summary>
    internal static JsonObject ResultOf(IReadOnlyDictionary<string, string>? data, string? text, bool isMain)
    {
        var line = new JsonObject { ["type"] = "result" };
        foreach (var (mime, value) in data ?? new Dictionary<string, string>())
        {
            if (!_resultKeys.TryGetValue(mime, out string? key))
            {
                continue;
            }
            JsonNode? node = value;
            if (key == "json")
            {
                try
                {
                    node = JsonNode.Parse(value);
                }
                catch (JsonException)
                {
                }
            }
            line[key] = node;
        }
        if (text is not null)
        {
            line["text"] = text;
        }
        line["is_main_result"] = isMain;
        return line;
    }

    [GeneratedRegex(@"^([A-Za-z_][\w.]*)(?::\s?(.*))?$")]
    private static partial Regex ExceptionLine();

    /// <summary>Output chunks as stdout/stderr lines (UTF-8 decoded across chunk ends) and image artifacts as results.</summary>
    private sealed class Events(ChannelWriter<JsonObject> lines) : IRunEvents
    {
        private readonly Decoder _stdout = Encoding.UTF8.GetDecoder();
        private readonly Decoder _stderr = Encoding.UTF8.GetDecoder();
        private readonly Lock _lock = new();

        public void OnOutput(string stream, ReadOnlyMemory<byte> data)
        {
            lock (_lock)
            {
                var decoder = stream == "stderr" ? _stderr : _stdout;
                char[] chars = new char[decoder.GetCharCount(data.Span, flush: false)];
                int n = decoder.GetChars(data.Span, chars, flush: false);
                if (n > 0)
                {
                    lines.TryWrite(new JsonObject { ["type"] = stream == "stderr" ? "stderr" : "stdout", ["text"] = new string(chars, 0, n), ["timestamp"] = DateTimeOffset.UtcNow.ToUnixTimeMilliseconds() * 1000 });
                }
            }
        }

        public void OnArtifact(RunArtifact artifact)
        {
            string? key = artifact.Mime switch
            {
                "image/png" => "png",
                "image/jpeg" => "jpeg",
                "image/svg+xml" => "svg",
                _ => null,
            };
            if (key is null || artifact.ContentBase64 is null)
            {
                return;
            }
            string content = key == "svg" ? Encoding.UTF8.GetString(Convert.FromBase64String(artifact.ContentBase64)) : artifact.ContentBase64;
            lines.TryWrite(new JsonObject { ["type"] = "result", [key] = content, ["text"] = $"<{artifact.Path}>", ["is_main_result"] = false });
        }

        public void Flush()
        {
            lock (_lock)
            {
                foreach (var (decoder, name) in new[] { (_stdout, "stdout"), (_stderr, "stderr") })
                {
                    char[] rest = new char[4];
                    int n = decoder.GetChars([], rest, flush: true);
                    if (n > 0)
                    {
                        lines.TryWrite(new JsonObject { ["type"] = name, ["text"] = new string(rest, 0, n) });
                    }
                }
            }
        }
    }
}
