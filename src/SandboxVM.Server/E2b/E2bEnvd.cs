using System.Text;
using System.Text.Json.Nodes;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Http.Features;
using Microsoft.AspNetCore.Routing;
using Microsoft.AspNetCore.WebUtilities;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Net.Http.Headers;
using SandboxVM.Core;
using SandboxVM.Core.Runs;
using SandboxVM.Core.Sessions;
using SandboxVM.Protocol;
using SandboxVM.Runtime.Agent;

namespace SandboxVM.Server.E2b;

/// <summary>
/// What envd (E2B's in-sandbox daemon, port 49983) answers, mapped onto the sandbox's agent: /health,
/// /files (download, multipart or octet-stream upload), and the Connect services process.Process and
/// filesystem.Filesystem. Each call names its sandbox in E2b-Sandbox-Id and presents its token.
/// </summary>
internal static class E2bEnvd
{
    /// <summary>
    /// How long one command_get of a streamed command waits for new output or its end. It answers at once on
    /// either; the bound only matters for an agent that predates <c>output_beyond</c>, whose output is this late.
    /// </summary>
    private static readonly TimeSpan s_follow = TimeSpan.FromSeconds(2);

    public static void Map(RouteGroupBuilder g)
    {
        g.MapGet("/health", (Delegate)((HttpContext c) => Sandboxed(c, false, (_, _) => Task.FromResult(Results.NoContent()))));
        g.MapGet("/files", (HttpContext c, string? path) => DownloadAsync(c, path));
        g.MapPost("/files", (HttpContext c, string? path) => UploadAsync(c, path));
        g.MapPost("/process.Process/{method}", (string method, HttpContext c) => RpcAsync(c, "process.Process", method));
        g.MapPost("/filesystem.Filesystem/{method}", (string method, HttpContext c) => RpcAsync(c, "filesystem.Filesystem", method));
    }

    /// <summary>
    /// The sandbox a sandbox-side call is for, when its token is right; otherwise the answer E2B's proxy
    /// gives (502 for a sandbox that is not running, which the SDK reads as "timed out or killed").
    /// </summary>
    public static (SandboxSession? Session, int Status, string Message) Resolve(HttpContext context)
    {
        string id = context.Request.Headers["E2b-Sandbox-Id"].ToString();
        if (id.Length == 0)
        {
            return (null, 400, "the E2b-Sandbox-Id header is missing: set E2B_SANDBOX_URL to this server's /e2b");
        }
        var state = context.RequestServices.GetRequiredService<E2bState>();
        var headers = context.Request.Headers;
        if (!state.TokenMatches(id, headers["X-Access-Token"].ToString()) && !state.TokenMatches(id, headers["E2B-Traffic-Access-Token"].ToString()))
        {
            return (null, 401, "the sandbox access token (X-Access-Token) is missing or wrong");
        }
        try
        {
            return (context.RequestServices.GetRequiredService<SessionManager>().Get(id), 200, "");
        }
        catch (RunRequestException)
        {
            return (null, 502, $"The sandbox {id} was not found: it ended or timed out");
        }
    }

    /// <summary>The caller a sandbox-side call acts for: the owner of the sandbox whose token it presents; null without one.</summary>
    public static Caller? OwnerOf(HttpContext context, CallerStore callers) =>
        context.Request.Headers.ContainsKey("E2b-Sandbox-Id") && Resolve(context).Session is { } session ? callers.Find(session.Owner) : null;

    /// <summary>
    /// The SDK's <c>uploadUrl()</c>/<c>downloadUrl()</c>: it builds <c>/files</c> on the origin of E2B_SANDBOX_URL (outside
    /// /e2b, where E2B has a host name per sandbox) with no sandbox header, signed for one path and operation with the
    /// sandbox's token: <c>v1_</c> + base64(SHA-256(<c>path:operation:user:token[:expiration]</c>)). So these routes find the
    /// sandbox whose token makes that signature (a handful of hashes: one per live sandbox) and serve /files for it.
    /// </summary>
    public static void MapSignedFiles(IEndpointRouteBuilder app)
    {
        app.MapGet(SignedFilesPath, (HttpContext c, string? path) => DownloadAsync(c, path, () => ResolveSigned(c, path)));
        app.MapPost(SignedFilesPath, (HttpContext c, string? path) => UploadAsync(c, path, () => ResolveSigned(c, path)));
    }

    public const string SignedFilesPath = "/files";

    private static (SandboxSession? Session, int Status, string Message) ResolveSigned(HttpContext context, string? path)
    {
        var query = context.Request.Query;
        string signature = query["signature"].ToString();
        if (signature.Length == 0 || string.IsNullOrEmpty(path))
        {
            return (null, 401, "a signed URL of uploadUrl()/downloadUrl() needs its path and signature");
        }
        string? expiration = query["signature_expiration"].Count > 0 ? query["signature_expiration"].ToString() : null;
        if (expiration is not null && (!long.TryParse(expiration, System.Globalization.NumberStyles.None, System.Globalization.CultureInfo.InvariantCulture, out long until)
            || (context.RequestServices.GetService<TimeProvider>() ?? TimeProvider.System).GetUtcNow().ToUnixTimeSeconds() > until))
        {
            return (null, 401, "the signed URL has expired");
        }
        var live = context.RequestServices.GetRequiredService<SessionManager>().List();
        return SignerOf(context, live.Select(s => s.Id)) is { } id
            ? (live.First(s => s.Id == id), 200, "")
            : (null, 401, "the signature is wrong, or its sandbox has ended");
    }

    /// <summary>
    /// Which of <paramref name="candidates"/> (sandbox ids) signed this request to <see cref="SignedFilesPath"/>, or null
    /// (expiry is not checked here). The cluster asks it with every node's sandboxes, to send the request to the signer's node.
    /// </summary>
    public static string? SignerOf(HttpContext context, IEnumerable<string> candidates)
    {
        var query = context.Request.Query;
        string signature = query["signature"].ToString();
        string path = query["path"].ToString();
        if (signature.Length == 0 || path.Length == 0)
        {
            return null;
        }
        string operation = HttpMethods.IsPost(context.Request.Method) ? "write" : "read";
        string? expiration = query["signature_expiration"].Count > 0 ? query["signature_expiration"].ToString() : null;
        string user = query["username"].ToString();
        var state = context.RequestServices.GetRequiredService<E2bState>();
        return candidates.FirstOrDefault(id => state.Signs(id, signature, path, operation, user, expiration));
    }

    /// <summary>Runs an HTTP (not Connect) sandbox-side call; refusals answer {"code","message"} with their status.</summary>
    public static async Task<IResult> Sandboxed(HttpContext context, bool files, Func<SandboxSession, SessionManager, Task<IResult>> handler,
        Func<(SandboxSession? Session, int Status, string Message)>? resolve = null)
    {
        var (session, status, message) = resolve is null ? Resolve(context) : resolve();
        if (session is null)
        {
            return E2bEndpoints.Error(status, message);
        }
        try
        {
            return await handler(session, context.RequestServices.GetRequiredService<SessionManager>());
        }
        catch (RunRequestException e) when (!context.Response.HasStarted)
        {
            // envd answers a missing file 404 and a path that is not allowed 400; the SDK maps both.
            int code = e.Code == ProblemCodes.SandboxNotFound ? 502 : ProblemStatus.Of(e.Kind);
            return E2bEndpoints.Error(files && code == 403 ? 401 : code, e.Message);
        }
        catch (ConnectException e) when (!context.Response.HasStarted)
        {
            return E2bEndpoints.Error(E2bConnect.StatusOf(e.Code), e.Message);
        }
    }

    private static Task<IResult> DownloadAsync(HttpContext context, string? path, Func<(SandboxSession?, int, string)>? resolve = null) => Sandboxed(context, true, async (s, sessions) =>
    {
        ExactLengthStream? body = null;
        long expected = 0;
        await sessions.DownloadAsync(s.Id, path ?? "", info =>
        {
            if (info.Kind != FileKind.File)
            {
                throw new RunRequestException(ProblemCodes.InvalidPath, "path", $"'{info.Path}' is not a file");
            }
            context.Response.ContentType = "application/octet-stream";
            context.Response.ContentLength = expected = info.Size;
            SecurityHeadersMiddleware.SetAttachment(context.Response, info.Path);
            return body = new ExactLengthStream(context.Response.Body, info.Size, info.Path);
        }, context.RequestAborted);
        if (body is not null && body.Written < expected)
        {
            context.Abort();
        }
        return Results.Empty;
    }, resolve);

    private static Task<IResult> UploadAsync(HttpContext context, string? path, Func<(SandboxSession?, int, string)>? resolve = null) => Sandboxed(context, true, async (s, sessions) =>
    {
        long limit = context.RequestServices.GetRequiredService<SandboxVmOptions>().MaxUploadBytes;
        if (context.Features.Get<IHttpMaxRequestBodySizeFeature>() is { IsReadOnly: false } bodySize)
        {
            bodySize.MaxRequestBodySize = limit + 1;
        }
        var written = new JsonArray();
        string? boundary = MediaTypeHeaderValue.TryParse(context.Request.ContentType, out var type) && type.MediaType.Equals("multipart/form-data", StringComparison.OrdinalIgnoreCase)
            ? HeaderUtilities.RemoveQuotes(type.Boundary).Value
            : null;
        if (boundary is null)
        {
            written.Add(await WriteOneAsync(context, sessions, s.Id, path, context.Request.Body, limit));
            return Results.Json(written);
        }
        var reader = new MultipartReader(boundary, context.Request.Body);
        int parts = 0;
        while (await reader.ReadNextSectionAsync(context.RequestAborted) is { } section)
        {
            if (++parts > 100)
            {
                throw new RunRequestException(ProblemCodes.InvalidPath, null, "at most 100 files per upload");
            }
            string? name = section.GetContentDispositionHeader()?.FileName.Value;
            // The SDK names each part by its path; with ?path= and one file the query wins.
            written.Add(await WriteOneAsync(context, sessions, s.Id, path ?? name, section.Body, limit));
        }
        return Results.Json(written);
    }, resolve);

    private static async Task<JsonObject> WriteOneAsync(HttpContext context, SessionManager sessions, string id, string? path, Stream content, long limit)
    {
        if (string.IsNullOrEmpty(path))
        {
            throw new RunRequestException(ProblemCodes.InvalidPath, "path", "the file's path is missing (?path= or the part's filename)");
        }
        var info = await SandboxEndpoints.WriteUploadAsync(sessions, id, path, content, limit, context.RequestAborted);
        return new JsonObject { ["name"] = info.Name, ["type"] = "file", ["path"] = info.Path };
    }

    private static async Task RpcAsync(HttpContext context, string service, string method)
    {
        bool streaming = (service, method) is ("process.Process", "Start" or "Connect") or ("filesystem.Filesystem", "WatchDir");
        var (session, status, message) = Resolve(context);
        if (session is null)
        {
            string code = status switch { 401 => "unauthenticated", 400 => "invalid_argument", _ => "unavailable" };
            await E2bConnect.WriteUnaryErrorAsync(context, code, message);
            return;
        }
        var sessions = context.RequestServices.GetRequiredService<SessionManager>();
        var extras = context.RequestServices.GetRequiredService<E2bState>().For(session.Id);
        var ct = context.RequestAborted;
        try
        {
            if (streaming)
            {
                var request = await E2bConnect.ReadEnvelopedAsync(context.Request, ct);
                if (method == "WatchDir")
                {
                    await E2bWatch.StreamAsync(context, sessions, extras, session.Id, request, ct);
                    return;
                }
                var process = method == "Start"
                    ? await StartAsync(sessions, extras, session, request, ct)
                    : extras.Find(Selector(request).Pid, Selector(request).Tag) ?? throw new ConnectException("not_found", "no such process");
                if (process.Pty is { } pty)
                {
                    await StreamPtyAsync(context, process, pty, subscription: method == "Start" ? process.FirstSubscription : null);
                    return;
                }
                await StreamAsync(context, sessions, session.Id, process, fromStart: method == "Start");
                return;
            }
            var req = await E2bConnect.ReadUnaryAsync(context.Request, ct);
            JsonObject answer = (service, method) switch
            {
                ("process.Process", "List") => await ListAsync(sessions, extras, session.Id),
                ("process.Process", "SendSignal") => await SignalAsync(sessions, extras, session.Id, req, ct),
                ("process.Process", "SendInput") => await InputAsync(sessions, extras, session.Id, req, eof: false, ct),
                ("process.Process", "CloseStdin") => await InputAsync(sessions, extras, session.Id, req, eof: true, ct),
                ("process.Process", "Update") => await UpdateAsync(extras, req, ct),
                ("filesystem.Filesystem", "Stat") => new JsonObject { ["entry"] = Entry(await Use(sessions, session.Id, Path(req, "path"), (a, p) => a.StatAsync(p, ct))) },
                ("filesystem.Filesystem", "ListDir") => await ListDirAsync(sessions, session.Id, req, ct),
                ("filesystem.Filesystem", "MakeDir") => await MakeDirAsync(sessions, session.Id, req, ct),
                ("filesystem.Filesystem", "Remove") => await RemoveAsync(sessions, session.Id, req, ct),
                ("filesystem.Filesystem", "Move") => await MoveAsync(sessions, session.Id, req, ct),
                _ => throw new ConnectException("unimplemented", $"{service}/{method} is not supported by SandboxVM's E2B API"),
            };
            await E2bConnect.WriteUnaryAsync(context, answer);
        }
        catch (Exception e) when (e is ConnectException or RunRequestException or InvalidOperationException or FormatException && !context.Response.HasStarted)
        {
            var error = e switch
            {
                ConnectException c => c,
                RunRequestException r => ConnectException.From(r),
                // A JSON field of the wrong type (JsonNode.GetValue).
                _ => new ConnectException("invalid_argument", $"a field of the request has the wrong type: {e.Message}"),
            };
            if (streaming)
            {
                // A streaming call's error is the end of a 200 stream: the SDK reads no error from another status.
                await E2bConnect.StartStreamAsync(context);
                await E2bConnect.EndStreamAsync(context, error);
                return;
            }
            await E2bConnect.WriteUnaryErrorAsync(context, error.Code, error.Message);
        }
    }

    private static Task<T> Use<T>(SessionManager sessions, string id, string path, Func<SandboxVM.Runtime.Agent.AgentClient, string, Task<T>> call, bool mutates = false) =>
        sessions.UseAsync(id, path, call, mutates);

    private static string Path(JsonObject req, string field) =>
        req[field]?.GetValue<string>() is { Length: > 0 } p ? p : throw new ConnectException("invalid_argument", $"'{field}' is required");

    private static (uint? Pid, string? Tag) Selector(JsonObject req)
    {
        var selector = req["process"] as JsonObject ?? throw new ConnectException("invalid_argument", "'process' (a pid or tag) is required");
        return (selector["pid"]?.GetValue<uint>(), selector["tag"]?.GetValue<string>());
    }

    private static E2bProcess Process(SandboxExtras extras, JsonObject req)
    {
        var (pid, tag) = Selector(req);
        return extras.Find(pid, tag) ?? throw new ConnectException("not_found", $"process {(object?)pid ?? tag} not found");
    }

    private static async Task<E2bProcess> StartAsync(SessionManager sessions, SandboxExtras extras, SandboxSession session, JsonObject req, CancellationToken ct)
    {
        string id = session.Id;
        var config = req["process"] as JsonObject ?? throw new ConnectException("invalid_argument", "'process' is required");
        string cmd = config["cmd"]?.GetValue<string>() is { Length: > 0 } c ? c : throw new ConnectException("invalid_argument", "'process.cmd' is required");
        var args = (config["args"] as JsonArray)?.Select(a => a?.GetValue<string>() ?? "").ToList() ?? [];
        // The sandbox's envVars (kept with it through pauses and moves), then the command's own.
        var envs = new Dictionary<string, string>(session.Env, StringComparer.Ordinal);
        foreach (var (key, value) in config["envs"] as JsonObject ?? [])
        {
            envs[key] = value?.GetValue<string>() ?? "";
        }
        string? cwd = config["cwd"]?.GetValue<string>() is { Length: > 0 } d ? d : null;
        if (req["pty"] is JsonObject ptyConfig)
        {
            return await StartPtyAsync(sessions, extras, id, ptyConfig, cmd, args, envs, cwd, req["tag"]?.GetValue<string>(), ct);
        }
        var started = await sessions.RunCommandAsync(id, new CommandRunRequest
        {
            Argv = [cmd, .. args],
            Cwd = cwd,
            Env = envs,
            Background = true,
        }, null, ct);
        return extras.Add(started.Id, cmd, args, envs, cwd, req["tag"]?.GetValue<string>());
    }

    /// <summary>
    /// The events of a command: start, then its output as data events as it is printed (command_get answers
    /// as soon as the command wrote more than was sent), then end with its exit code. A client that goes away stops the
    /// stream, not the command, like envd.
    /// </summary>
    private static async Task StreamAsync(HttpContext context, SessionManager sessions, string id, E2bProcess process, bool fromStart)
    {
        var ct = context.RequestAborted;
        var first = await sessions.GetCommandAsync(id, process.CommandId, TimeSpan.Zero, ct);
        long sentOut = fromStart ? 0 : first.StdoutBytes, sentErr = fromStart ? 0 : first.StderrBytes;
        await E2bConnect.StartStreamAsync(context);
        await E2bConnect.WriteMessageAsync(context, Event("start", new JsonObject { ["pid"] = process.Pid }), ct);
        ConnectException? error = null;
        try
        {
            while (true)
            {
                var info = await sessions.GetCommandAsync(id, process.CommandId, s_follow, ct, outputBeyond: sentOut + sentErr);
                sentOut = await SendNewAsync(context, "stdout", info.Stdout, info.StdoutBytes, sentOut, ct);
                sentErr = await SendNewAsync(context, "stderr", info.Stderr, info.StderrBytes, sentErr, ct);
                if (!info.Running)
                {
                    int exit = info.ExitCode ?? -1;
                    string status = info.Signal is { } sig ? $"signal: {sig}" : info.Status == "exited" ? $"exit status {exit}" : info.Status;
                    await E2bConnect.WriteMessageAsync(context, Event("end", new JsonObject
                    {
                        ["exitCode"] = exit,
                        ["exited"] = info.ExitCode is not null,
                        ["status"] = status,
                        ["error"] = info.ExitCode is null ? status : null,
                    }), ct);
                    break;
                }
            }
        }
        catch (OperationCanceledException) when (ct.IsCancellationRequested)
        {
            return;
        }
        catch (RunRequestException e)
        {
            error = ConnectException.From(e);
        }
        await E2bConnect.EndStreamAsync(context, error);
    }

    /// <summary>Sends the part of a stream's kept tail the client has not had; what the agent dropped before the tail is lost.</summary>
    private static async Task<long> SendNewAsync(HttpContext context, string stream, string? tail, long total, long sent, CancellationToken ct)
    {
        if (total <= sent || tail is null)
        {
            return Math.Max(sent, total);
        }
        byte[] kept = Encoding.UTF8.GetBytes(tail);
        long keptFrom = total - kept.Length;
        int skip = (int)Math.Clamp(sent - keptFrom, 0, kept.Length);
        if (skip < kept.Length)
        {
            await E2bConnect.WriteMessageAsync(context, Event("data", new JsonObject { [stream] = Convert.ToBase64String(kept, skip, kept.Length - skip) }), ct);
        }
        return total;
    }

    /// <summary>
    /// A process on a terminal (the SDK's <c>pty.create</c>: <c>pty: {size: {cols, rows}}</c>): the agent's pty_open, kept by
    /// <see cref="E2bPty"/> past this call. Its first subscriber is made before the program starts, so the stream that
    /// started it sees everything it printed.
    /// </summary>
    private static async Task<E2bProcess> StartPtyAsync(SessionManager sessions, SandboxExtras extras, string id, JsonObject config,
        string cmd, List<string> args, Dictionary<string, string> envs, string? cwd, string? tag, CancellationToken ct)
    {
        var (cols, rows) = Size(config);
        if (extras.Terminals().Count >= MaxTerminals)
        {
            throw new ConnectException("resource_exhausted", $"at most {MaxTerminals} terminals per sandbox: kill one first");
        }
        var pty = new E2bPty();
        var first = pty.Subscribe();
        pty.Start(sessions, id, new PtyRequest { Argv = [cmd, .. args], Cwd = cwd ?? "", Env = envs, Cols = cols, Rows = rows });
        try
        {
            await pty.Opened.WaitAsync(ct);
        }
        catch (Exception e) when (e is RunRequestException or AgentException)
        {
            first.Dispose();
            throw e is RunRequestException r ? ConnectException.From(r)
                : new ConnectException(((AgentException)e).Code == ErrorCodes.CommandNotFound ? "not_found" : "failed_precondition", e.Message);
        }
        catch (OperationCanceledException)
        {
            first.Dispose();
            pty.Kill();
            throw;
        }
        return extras.Add("", cmd, args, envs, cwd, tag, pty, first);
    }

    /// <summary>Terminals one sandbox may have through the door (each is also one of the agent's streams).</summary>
    private const int MaxTerminals = 16;

    private static (int Cols, int Rows) Size(JsonObject pty)
    {
        var size = pty["size"] as JsonObject;
        uint cols = size?["cols"]?.GetValue<uint>() ?? 80, rows = size?["rows"]?.GetValue<uint>() ?? 24;
        return cols is >= 1 and <= PtyRequest.MaxCells && rows is >= 1 and <= PtyRequest.MaxCells
            ? ((int)cols, (int)rows)
            : throw new ConnectException("invalid_argument", $"pty.size: cols and rows must be 1..{PtyRequest.MaxCells} (got {cols}x{rows})");
    }

    /// <summary>
    /// A terminal's events: start, its bytes as <c>data.pty</c> events as they come, then end with its exit code (or an
    /// error end when it was killed or its sandbox went away). Leaving the stream leaves the terminal running, as envd does.
    /// </summary>
    private static async Task StreamPtyAsync(HttpContext context, E2bProcess process, E2bPty pty, E2bPty.Subscription? subscription)
    {
        var ct = context.RequestAborted;
        using var output = subscription ?? pty.Subscribe();
        await E2bConnect.StartStreamAsync(context);
        await E2bConnect.WriteMessageAsync(context, Event("start", new JsonObject { ["pid"] = process.Pid }), ct);
        try
        {
            await foreach (byte[] chunk in output.Output.ReadAllAsync(ct))
            {
                await E2bConnect.WriteMessageAsync(context, Event("data", new JsonObject { ["pty"] = Convert.ToBase64String(chunk) }), ct);
            }
            PtyExit exit;
            try
            {
                exit = await pty.Ended.WaitAsync(ct);
            }
            catch (Exception e) when (e is AgentException or RunRequestException or OperationCanceledException && !ct.IsCancellationRequested)
            {
                // Killed (the agent cancels the terminal) or the sandbox went: envd's end of a killed process.
                await E2bConnect.WriteMessageAsync(context, Event("end", new JsonObject
                {
                    ["exitCode"] = -1,
                    ["exited"] = false,
                    ["status"] = "signal: killed",
                    ["error"] = e.Message,
                }), ct);
                await E2bConnect.EndStreamAsync(context, null);
                return;
            }
            await E2bConnect.WriteMessageAsync(context, Event("end", new JsonObject
            {
                ["exitCode"] = exit.ExitCode,
                ["exited"] = exit.Signal is null,
                ["status"] = exit.Signal is { } sig ? $"signal: {sig}" : $"exit status {exit.ExitCode}",
            }), ct);
            await E2bConnect.EndStreamAsync(context, null);
        }
        catch (OperationCanceledException) when (ct.IsCancellationRequested)
        {
            // The client left; the terminal stays for pty.connect.
        }
    }

    /// <summary>Update: a terminal's new size (the SDK's <c>pty.resize</c>).</summary>
    private static async Task<JsonObject> UpdateAsync(SandboxExtras extras, JsonObject req, CancellationToken ct)
    {
        var process = Process(extras, req);
        if (req["pty"] is not JsonObject config)
        {
            return [];
        }
        if (process.Pty is not { } pty)
        {
            throw new ConnectException("failed_precondition", $"process {process.Pid} has no terminal to resize");
        }
        var (cols, rows) = Size(config);
        await pty.ResizeAsync(cols, rows, ct);
        return [];
    }

    private static JsonObject Event(string kind, JsonObject value) => new() { ["event"] = new JsonObject { [kind] = value } };

    private static async Task<JsonObject> ListAsync(SessionManager sessions, SandboxExtras extras, string id)
    {
        var list = new JsonArray();
        foreach (var c in await sessions.ListCommandsAsync(id))
        {
            if (c.Running && extras.FindCommand(c.Id) is { } p)
            {
                list.Add(Info(p));
            }
        }
        foreach (var p in extras.Terminals())
        {
            list.Add(Info(p));
        }
        return new JsonObject { ["processes"] = list };
    }

    private static JsonObject Info(E2bProcess p) => new()
    {
        ["config"] = new JsonObject
        {
            ["cmd"] = p.Cmd,
            ["args"] = new JsonArray([.. p.Args.Select(a => (JsonNode?)a)]),
            ["envs"] = new JsonObject(p.Envs.Select(e => KeyValuePair.Create(e.Key, (JsonNode?)e.Value))),
            ["cwd"] = p.Cwd,
        },
        ["pid"] = p.Pid,
        ["tag"] = p.Tag,
    };

    private static async Task<JsonObject> SignalAsync(SessionManager sessions, SandboxExtras extras, string id, JsonObject req, CancellationToken ct)
    {
        var process = Process(extras, req);
        string signal = req["signal"]?.ToString() switch
        {
            "SIGNAL_SIGKILL" or "9" => "SIGKILL",
            "SIGNAL_SIGTERM" or "15" => "SIGTERM",
            var other => throw new ConnectException("invalid_argument", $"signal '{other}' is not SIGNAL_SIGKILL or SIGNAL_SIGTERM"),
        };
        if (process.Pty is { } pty)
        {
            // The agent ends a terminal's whole process group on either signal.
            return pty.Kill() ? [] : throw new ConnectException("not_found", $"process {process.Pid} is not running");
        }
        var info = await sessions.GetCommandAsync(id, process.CommandId, TimeSpan.Zero, ct);
        if (!info.Running)
        {
            throw new ConnectException("not_found", $"process {process.Pid} is not running");
        }
        await sessions.KillCommandAsync(id, process.CommandId, signal, ct);
        return [];
    }

    private static async Task<JsonObject> InputAsync(SessionManager sessions, SandboxExtras extras, string id, JsonObject req, bool eof, CancellationToken ct)
    {
        var process = Process(extras, req);
        string data = "";
        if (!eof)
        {
            var input = req["input"] as JsonObject ?? throw new ConnectException("invalid_argument", "'input' is required");
            if (process.Pty is { } pty)
            {
                // envd writes either field of a terminal's process to the terminal.
                await pty.WriteInputAsync(Convert.FromBase64String((input["pty"] ?? input["stdin"])?.GetValue<string>() ?? ""), ct);
                return [];
            }
            if (input["pty"] is not null)
            {
                throw new ConnectException("failed_precondition", $"process {process.Pid} has no terminal: send it stdin");
            }
            data = Encoding.UTF8.GetString(Convert.FromBase64String(input["stdin"]?.GetValue<string>() ?? ""));
        }
        else if (process.Pty is not null)
        {
            throw new ConnectException("failed_precondition", $"process {process.Pid} runs on a terminal: it has no stdin to close (send Ctrl-D as input)");
        }
        await sessions.SendCommandStdinAsync(id, process.CommandId, data, eof, ct);
        return [];
    }

    private static JsonObject Entry(FileInfoBody f) => new()
    {
        ["name"] = f.Name,
        ["type"] = f.Kind switch
        {
            FileKind.File => "FILE_TYPE_FILE",
            FileKind.Directory => "FILE_TYPE_DIRECTORY",
            FileKind.Symlink => "FILE_TYPE_SYMLINK",
            _ => "FILE_TYPE_UNSPECIFIED",
        },
        ["path"] = f.Path,
        ["size"] = f.Size.ToString(System.Globalization.CultureInfo.InvariantCulture),
        ["modifiedTime"] = DateTimeOffset.FromUnixTimeMilliseconds(f.MtimeMs).UtcDateTime.ToString("yyyy-MM-ddTHH:mm:ss.fffZ", System.Globalization.CultureInfo.InvariantCulture),
    };

    /// <summary>Entries past this many end a deep listing with an error rather than an answer of unbounded size.</summary>
    private const int MaxListEntries = 10_000;

    private static async Task<JsonObject> ListDirAsync(SessionManager sessions, string id, JsonObject req, CancellationToken ct)
    {
        string path = Path(req, "path");
        int depth = Math.Max(1, req["depth"]?.GetValue<int>() ?? 1);
        var entries = new JsonArray();
        var pending = new Queue<(string Path, int Level)>([(path, 1)]);
        while (pending.TryDequeue(out var dir))
        {
            var listing = await Use(sessions, id, dir.Path, (a, p) => a.ListAsync(p, ct));
            foreach (var e in listing.Entries.OrderBy(e => e.Name, StringComparer.Ordinal))
            {
                if (entries.Count >= MaxListEntries)
                {
                    throw new ConnectException("resource_exhausted", $"more than {MaxListEntries} entries: list with a smaller depth");
                }
                entries.Add(Entry(e));
                if (e.Kind == FileKind.Directory && dir.Level < depth)
                {
                    pending.Enqueue((e.Path, dir.Level + 1));
                }
            }
        }
        return new JsonObject { ["entries"] = entries };
    }

    private static async Task<FileInfoBody?> StatOrNullAsync(SessionManager sessions, string id, string path, CancellationToken ct)
    {
        try
        {
            return await Use(sessions, id, path, (a, p) => a.StatAsync(p, ct));
        }
        catch (RunRequestException e) when (e.Kind == RefusalKind.NotFound && e.Code != ProblemCodes.SandboxNotFound)
        {
            return null;
        }
    }

    private static async Task<JsonObject> MakeDirAsync(SessionManager sessions, string id, JsonObject req, CancellationToken ct)
    {
        string path = Path(req, "path");
        if (await StatOrNullAsync(sessions, id, path, ct) is { } existing)
        {
            throw new ConnectException("already_exists", $"'{existing.Path}' already exists");
        }
        var made = await Use(sessions, id, path, (a, p) => a.MakeDirAsync(p, parents: true, ct), mutates: true);
        return new JsonObject { ["entry"] = Entry(made) };
    }

    private static async Task<JsonObject> RemoveAsync(SessionManager sessions, string id, JsonObject req, CancellationToken ct)
    {
        await Use(sessions, id, Path(req, "path"), async (a, p) =>
        {
            await a.RemoveAsync(p, recursive: true, ct);
            return true;
        }, mutates: true);
        return [];
    }

    /// <summary>The agent has no rename: mv runs as the sandbox's user, so it moves only what user code could.</summary>
    private static async Task<JsonObject> MoveAsync(SessionManager sessions, string id, JsonObject req, CancellationToken ct)
    {
        string source = Path(req, "source"), destination = Path(req, "destination");
        if (await StatOrNullAsync(sessions, id, source, ct) is null)
        {
            throw new ConnectException("not_found", $"'{source}' does not exist");
        }
        var moved = await sessions.RunCommandAsync(id, new CommandRunRequest { Argv = ["mv", "-T", "--", source, destination] }, null, ct);
        if (moved.ExitCode != 0)
        {
            throw new ConnectException("invalid_argument", $"moving '{source}' to '{destination}' failed: {moved.Stderr?.Trim()}");
        }
        var entry = await Use(sessions, id, destination, (a, p) => a.StatAsync(p, ct));
        return new JsonObject { ["entry"] = Entry(entry) };
    }
}
