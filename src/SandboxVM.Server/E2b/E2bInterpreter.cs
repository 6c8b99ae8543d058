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

namespace SandboxVM.Server.E2b;

/// <summary>
/// What E2B's code interpreter (port 49999) answers, on the sandbox's own persistent Python state:
/// POST /execute streams JSON lines (stdout, stderr, result, error, end_of_execution) and /contexts
/// lists the one context there is. SandboxVM keeps one Python state per sandbox, so new contexts are
/// refused (501) rather than faked.
/// </summary>
internal static partial class E2bInterpreter
{
    public const string DefaultContext = "default";

    /// <summary>A cell's JSON; the run checks the code's own size against the template.</summary>
    private const int MaxBodyBytes = 16 << 20;

    public static void Map(RouteGroupBuilder g)
    {
        g.MapPost("/execute", ExecuteAsync);
        g.MapGet("/contexts", (Delegate)((HttpContext c) => E2bEnvd.Sandboxed(c, false, (_, _) =>
            Task.FromResult(Results.Json(new JsonArray(Context()))))));
        g.MapPost("/contexts", (Delegate)((HttpContext c) => E2bEnvd.Sandboxed(c, false, (_, _) =>
            Task.FromResult(E2bEndpoints.Error(501, "SandboxVM keeps one Python state per sandbox: use the default context (no context option)")))));
        g.MapPost("/contexts/{id}/restart", (string id, HttpContext c) => E2bEnvd.Sandboxed(c, false, (_, _) =>
            Task.FromResult(E2bEndpoints.Error(501, "restarting a context is not supported by SandboxVM's E2B API"))));
        g.MapDelete("/contexts/{id}", (string id, HttpContext c) => E2bEnvd.Sandboxed(c, false, (_, _) =>
            Task.FromResult(E2bEndpoints.Error(id == DefaultContext ? 400 : 404, id == DefaultContext ? "the default context cannot be removed" : $"context '{id}' not found"))));
    }

    private static JsonObject Context() => new() { ["id"] = DefaultContext, ["language"] = "python", ["cwd"] = "/home/sandbox" };

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
        if (language is not (null or "python" or "py") || contextId is not (null or DefaultContext))
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
        var run = RunAsync(sessions, session.Id, new RunRequest { Code = code, Env = env }, events, lines.Writer, ct);

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
            if (result.Result is { } repr)
            {
                lines.TryWrite(new JsonObject { ["type"] = "result", ["text"] = repr, ["is_main_result"] = true });
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
