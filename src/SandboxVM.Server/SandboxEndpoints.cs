using System.Text.Json;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Http.Features;
using Microsoft.AspNetCore.Http.Json;
using Microsoft.AspNetCore.Routing;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Options;
using SandboxVM.Core;
using SandboxVM.Core.Runs;
using SandboxVM.Core.Sessions;
using SandboxVM.Protocol;
using SandboxVM.Runtime;

namespace SandboxVM.Server;

/// <summary>/v1/sandboxes: sessions, their runs, files and artifacts (see docs/API.md).</summary>
internal static class SandboxEndpoints
{
    public static void Map(IEndpointRouteBuilder app)
    {
        var g = app.MapGroup("/v1/sandboxes");
        g.MapPost("", CreateAsync);
        SandboxQueryEndpoints.Map(app, g);
        // Every call on one sandbox passes the owner check first: another caller's sandbox is a 404 like an unknown id.
        var one = g.MapGroup("/{id}").AddEndpointFilter(OwnerOnlyAsync);
        one.MapGet("", (string id, HttpContext context, SessionManager sessions, IVmRuntime runtime) =>
            Handle(context, () => Task.FromResult<IResult>(Results.Json(Describe(sessions.Get(id), runtime)))));
        one.MapDelete("", (string id, HttpContext context, SessionManager sessions) =>
            Handle(context, async () => await sessions.DeleteAsync(id)
                ? Results.NoContent()
                : throw new RunRequestException(ProblemCodes.SandboxNotFound, null, $"no live sandbox '{id}'", RefusalKind.NotFound)));
        one.MapPost("/keepalive", KeepAliveAsync);
        one.MapPost("/pause", (string id, HttpContext context, SessionManager sessions, IVmRuntime runtime) =>
            Handle(context, async () => Results.Json(Describe(await sessions.PauseAsync(id, context.RequestAborted), runtime))));
        one.MapPost("/resume", (string id, HttpContext context, SessionManager sessions, IVmRuntime runtime) =>
            Handle(context, async () => Results.Json(Describe(await sessions.ResumeAsync(id, context.RequestAborted), runtime))));
        one.MapPost("/fork", ForkAsync);
        one.MapPost("/run", RunAsync).CountsAsRun();
        one.MapPut("/files", UploadAsync);
        one.MapGet("/files", DownloadOrListAsync);
        one.MapDelete("/files", (string id, string? path, bool? recursive, HttpContext context, SessionManager sessions) =>
            Handle(context, async () =>
            {
                await sessions.UseAsync(id, path ?? "", async (agent, p) =>
                {
                    await agent.RemoveAsync(p, recursive ?? false, context.RequestAborted);
                    return true;
                }, mutates: true);
                return Results.NoContent();
            }));
        one.MapPost("/files/mkdir", (string id, string? path, HttpContext context, SessionManager sessions) =>
            Handle(context, async () => Results.Json(Describe(await sessions.UseAsync(id, path ?? "",
                (agent, p) => agent.MakeDirAsync(p, parents: true, context.RequestAborted), mutates: true)))));
        one.MapGet("/artifacts", (string id, HttpContext context, SessionManager sessions) =>
            Handle(context, async () =>
            {
                var list = await sessions.UseAsync(id, RunService.OutputsDir, (agent, _) => agent.ListArtifactsAsync(context.RequestAborted));
                return Results.Json(new
                {
                    artifacts = list.Artifacts.OrderBy(a => a.Path, StringComparer.Ordinal).Select(a =>
                    {
                        string rel = SessionManager.RelativeToOutputs(a.Path);
                        return new ArtifactInfoDto(rel, MimeTypes.For(rel), a.Size, a.Sha256);
                    }).ToList(),
                });
            }));
        one.MapGet("/artifacts/{**path}", (string id, string path, HttpContext context, SessionManager sessions) =>
            Handle(context, async () =>
            {
                await SendFileAsync(context, sessions, id, SessionManager.ArtifactPath(path), MimeTypes.For(path));
                return Results.Empty;
            }));
    }

    /// <summary>Answers the same 404 as for an unknown id unless the sandbox in the route belongs to the caller.</summary>
    internal static async ValueTask<object?> OwnerOnlyAsync(EndpointFilterInvocationContext invocation, EndpointFilterDelegate next)
    {
        var context = invocation.HttpContext;
        string id = context.GetRouteValue("id") as string ?? "";
        try
        {
            context.RequestServices.GetRequiredService<SessionManager>().Get(id, context.GetCaller().Name);
        }
        catch (RunRequestException e)
        {
            await Problems.Write(context, e);
            return Results.Empty;
        }
        return await next(invocation);
    }

    private static async Task CreateAsync(HttpContext context, SessionManager sessions, IVmRuntime runtime, IOptions<JsonOptions> json)
    {
        var body = await Endpoints.ReadJsonAsync<CreateSandboxBody>(context, json.Value.SerializerOptions, "sandbox request");
        if (body is null)
        {
            return;
        }
        var request = body.ToCore();
        await Handle(context, async () =>
        {
            var caller = context.GetCaller();
            var session = await sessions.CreateAsync(request, new SandboxOwner(caller.Name, caller.Limits.Sandboxes), context.RequestAborted);
            return Results.Json(Describe(session, runtime), statusCode: 201);
        }).ExecuteAsync(context);
    }

    private static async Task ForkAsync(string id, HttpContext context, SessionManager sessions, IVmRuntime runtime, IOptions<JsonOptions> json)
    {
        ForkBody? body = new();
        if (context.Request.ContentLength is > 0 || context.Request.Headers.TransferEncoding.Count > 0)
        {
            body = await Endpoints.ReadJsonAsync<ForkBody>(context, json.Value.SerializerOptions, "fork request");
            if (body is null)
            {
                return;
            }
        }
        await Handle(context, async () =>
        {
            var caller = context.GetCaller();
            var forks = await sessions.ForkAsync(id, body.Count, new SandboxOwner(caller.Name, caller.Limits.Sandboxes), context.RequestAborted);
            return Results.Json(new { sandboxes = forks.Select(f => Describe(f, runtime)).ToList() }, statusCode: 201);
        }).ExecuteAsync(context);
    }

    private static async Task KeepAliveAsync(string id, HttpContext context, SessionManager sessions, IVmRuntime runtime, IOptions<JsonOptions> json)
    {
        KeepAliveRequest? request = new();
        if (context.Request.ContentLength is > 0 || context.Request.Headers.TransferEncoding.Count > 0)
        {
            request = await Endpoints.ReadJsonAsync<KeepAliveRequest>(context, json.Value.SerializerOptions, "keepalive request");
            if (request is null)
            {
                return;
            }
        }
        await Handle(context, () => Task.FromResult<IResult>(Results.Json(Describe(sessions.KeepAlive(id, request.TimeoutS), runtime)))).ExecuteAsync(context);
    }

    private static async Task RunAsync(string id, HttpContext context, SessionManager sessions, ServerMetrics metrics, IOptions<JsonOptions> json)
    {
        // The sandbox's template, looked up before the run: a run can end its sandbox.
        string? template = sessions.List().FirstOrDefault(s => s.Id == id)?.Template.Name;
        var body = await Endpoints.ReadJsonAsync<RunRequestBody>(context, json.Value.SerializerOptions, "run request");
        if (body is null)
        {
            return;
        }
        var request = body.ToCore();
        if (RunStreaming.Wanted(context))
        {
            await RunStreaming.WriteAsync(context, json.Value.SerializerOptions, (events, ct) =>
                metrics.TrackAsync(() => template, ServerMetrics.KindSandbox, sessions.RunAsync(id, request, events, ct)));
            return;
        }
        await Handle(context, async () =>
            Results.Json(RunResultBody.From(await metrics.TrackAsync(() => template, ServerMetrics.KindSandbox, sessions.RunAsync(id, request, null, context.RequestAborted))),
                json.Value.SerializerOptions)).ExecuteAsync(context);
    }

    private static async Task UploadAsync(string id, string? path, HttpContext context, SessionManager sessions, SandboxVmOptions options)
    {
        long limit = options.MaxUploadBytes;
        if (context.Request.ContentLength is long declared && declared > limit)
        {
            await Problems.Write(context, 413, ProblemCodes.FileTooLarge, null, $"the upload is {declared} bytes; the limit is {limit}");
            return;
        }
        // The server-wide body cap (30 MB by default) gives way to this endpoint's own limit; one byte
        // more is read to tell "exactly the limit" from "over it".
        if (context.Features.Get<IHttpMaxRequestBodySizeFeature>() is { IsReadOnly: false } bodySize)
        {
            bodySize.MaxRequestBodySize = limit + 1;
        }
        await Handle(context, async () =>
            Results.Json(Describe(await WriteUploadAsync(sessions, id, path ?? "", context.Request.Body, limit, context.RequestAborted)))).ExecuteAsync(context);
    }

    /// <summary>Writes an upload of at most <paramref name="limit"/> bytes to the guest (also the E2B door's /files).</summary>
    internal static async Task<FileInfoBody> WriteUploadAsync(SessionManager sessions, string id, string path, Stream content, long limit, CancellationToken cancellationToken)
    {
        var body = new LimitedStream(content, limit);
        var info = await sessions.UseAsync(id, path, async (agent, p) =>
        {
            // Like writing to an object store: missing parent directories are created.
            int slash = p.TrimEnd('/').LastIndexOf('/');
            if (slash > 0)
            {
                await agent.MakeDirAsync(p[..slash], parents: true, cancellationToken);
            }
            return await agent.WriteFileAsync(p, body, cancellationToken);
        }, mutates: true);
        if (body.Exceeded)
        {
            // The guest got limit+1 bytes and a clean end; what it wrote is not what was sent.
            await sessions.UseAsync(id, info.Path, async (agent, p) =>
            {
                await agent.RemoveAsync(p, recursive: false, CancellationToken.None);
                return true;
            });
            throw new RunRequestException(ProblemCodes.FileTooLarge, null, $"the upload is over the limit of {limit} bytes", RefusalKind.TooLarge);
        }
        return info;
    }

    private static async Task DownloadOrListAsync(string id, string? path, bool? list, HttpContext context, SessionManager sessions)
    {
        await Handle(context, async () =>
        {
            if (list == true)
            {
                var listing = await sessions.UseAsync(id, path ?? ".", (agent, p) => agent.ListAsync(p, context.RequestAborted));
                return Results.Json(new { path = listing.Path, entries = listing.Entries.Select(Describe).ToList() });
            }
            await SendFileAsync(context, sessions, id, path ?? "", "application/octet-stream");
            return Results.Empty;
        }).ExecuteAsync(context);
    }

    /// <summary>
    /// Streams a guest file to the response (see <see cref="SessionManager.DownloadAsync"/>: stat first, at
    /// most its size). A file that shrank meanwhile is <c>file_changed</c> before the answer starts and a cut
    /// connection after.
    /// </summary>
    private static async Task SendFileAsync(HttpContext context, SessionManager sessions, string id, string path, string contentType)
    {
        ExactLengthStream? body = null;
        long expected = 0;
        try
        {
            await sessions.DownloadAsync(id, path, info =>
            {
                context.Response.ContentType = contentType;
                context.Response.ContentLength = expected = info.Size;
                SecurityHeadersMiddleware.SetAttachment(context.Response, info.Path);
                return body = new ExactLengthStream(context.Response.Body, info.Size, path);
            }, context.RequestAborted);
            if (body is not null && body.Written < expected)
            {
                throw body.Changed();
            }
        }
        catch (RunRequestException) when (!context.Response.HasStarted)
        {
            // Answered as a problem instead: without the file's length, type and name.
            context.Response.ContentLength = null;
            context.Response.ContentType = null;
            context.Response.Headers.ContentDisposition = default;
            throw;
        }
        catch (RunRequestException) when (context.Response.HasStarted)
        {
            // Part of the file is out: a cut connection is the only honest end.
            context.Abort();
        }
    }

    /// <summary>Runs a handler; a <see cref="RunRequestException"/> becomes its problem+json answer.</summary>
    internal static IResult Handle(HttpContext context, Func<Task<IResult>> handler) => new Handled(handler);

    private sealed class Handled(Func<Task<IResult>> handler) : IResult
    {
        public async Task ExecuteAsync(HttpContext httpContext)
        {
            IResult result;
            try
            {
                result = await handler();
            }
            catch (RunRequestException e) when (!httpContext.Response.HasStarted)
            {
                await Problems.Write(httpContext, e);
                return;
            }
            await result.ExecuteAsync(httpContext);
        }
    }

    private static FileInfoDto Describe(FileInfoBody f) =>
        new(f.Path, f.Name, f.Kind.ToString().ToLowerInvariant(), f.Size, DateTimeOffset.FromUnixTimeMilliseconds(f.MtimeMs).UtcDateTime);

    internal static SandboxInfo Describe(SandboxSession s, IVmRuntime runtime) => new()
    {
        Id = s.Id,
        Template = s.Template.Name,
        State = s.State.ToString().ToLowerInvariant(),
        CreatedAt = s.CreatedAt.UtcDateTime,
        ExpiresAt = s.ExpiresAt.UtcDateTime,
        OnIdle = s.OnIdle == IdleAction.Pause ? "pause" : "kill",
        AutoResume = s.AutoResume,
        PausedAt = s.PausedAt?.UtcDateTime,
        PausedUntil = s.PausedUntil?.UtcDateTime,
        PausedBytes = s.PausedBytes,
        LastPauseMs = s.LastPauseMs,
        LastResumeMs = s.LastResumeMs,
        LastActivityAt = s.LastActivityAt.UtcDateTime,
        TimeoutS = s.TimeoutS,
        IdleTimeoutS = s.IdleTimeoutS,
        Metadata = new Dictionary<string, string>(s.Metadata),
        Runtime = runtime.Name,
        VmSource = s.VmSource ?? "restore", // paused: the next VM is restored
        StartupMs = s.StartupMs,
        KeepRunning = s.KeepRunning,
        Frozen = s.Frozen,
    };
}

internal sealed class KeepAliveRequest
{
    public double? TimeoutS { get; set; }
}

internal sealed class SandboxInfo
{
    public string Id { get; set; } = "";
    public string Template { get; set; } = "";
    public string State { get; set; } = "";
    public DateTime CreatedAt { get; set; }
    public DateTime ExpiresAt { get; set; }
    public DateTime LastActivityAt { get; set; }
    public double TimeoutS { get; set; }
    public double IdleTimeoutS { get; set; }
    public Dictionary<string, string> Metadata { get; set; } = [];
    public string Runtime { get; set; } = "";
    public string VmSource { get; set; } = "";
    public double StartupMs { get; set; }
    public bool KeepRunning { get; set; }
    /// <summary>The VM is frozen now (idle); the next call thaws it.</summary>
    public bool Frozen { get; set; }
    public string OnIdle { get; set; } = "kill";
    public bool AutoResume { get; set; } = true;
    public DateTime? PausedAt { get; set; }
    /// <summary>While paused: when it is removed unless resumed (paused_ttl).</summary>
    public DateTime? PausedUntil { get; set; }
    /// <summary>Size on disk of the saved image (while paused; after a resume, of the last one).</summary>
    public long? PausedBytes { get; set; }
    public double? LastPauseMs { get; set; }
    public double? LastResumeMs { get; set; }
}

/// <summary>Reads at most <c>limit + 1</c> bytes of a body; <see cref="Exceeded"/> tells that the body was longer than the limit.</summary>
internal sealed class LimitedStream(Stream inner, long limit) : Stream
{
    private long _read;
    private bool _refused;

    public bool Exceeded => _refused || _read > limit;

    public override async ValueTask<int> ReadAsync(Memory<byte> buffer, CancellationToken cancellationToken = default)
    {
        long room = limit + 1 - _read;
        if (room <= 0)
        {
            return 0;
        }
        int n;
        try
        {
            n = await inner.ReadAsync(buffer[..(int)Math.Min(buffer.Length, room)], cancellationToken);
        }
        catch (BadHttpRequestException e) when (e.StatusCode == StatusCodes.Status413PayloadTooLarge)
        {
            // The server's own body cap saw more coming: end the file cleanly and report the excess.
            _refused = true;
            return 0;
        }
        _read += n;
        return n;
    }

    public override Task<int> ReadAsync(byte[] buffer, int offset, int count, CancellationToken cancellationToken) =>
        ReadAsync(buffer.AsMemory(offset, count), cancellationToken).AsTask();

    public override int Read(byte[] buffer, int offset, int count) => throw new NotSupportedException("read asynchronously");
    public override bool CanRead => true;
    public override bool CanSeek => false;
    public override bool CanWrite => false;
    public override long Length => throw new NotSupportedException();
    public override long Position { get => _read; set => throw new NotSupportedException(); }
    public override void Flush() { }
    public override long Seek(long offset, SeekOrigin origin) => throw new NotSupportedException();
    public override void SetLength(long value) => throw new NotSupportedException();
    public override void Write(byte[] buffer, int offset, int count) => throw new NotSupportedException();
}
