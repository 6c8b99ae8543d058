using System.Text.Json;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Http.Json;
using Microsoft.AspNetCore.Routing;
using Microsoft.Extensions.Options;
using SandboxVM.Core.Runs;
using SandboxVM.Core.Sessions;

namespace SandboxVM.Server;

/// <summary>/v1/sandboxes/{id}/commands: shell commands and background processes in a sandbox (see docs/API.md "Commands").</summary>
internal static class CommandEndpoints
{
    public static void Map(IEndpointRouteBuilder app)
    {
        var g = app.MapGroup("/v1/sandboxes/{id}/commands").AddEndpointFilter(SandboxEndpoints.OwnerOnlyAsync);
        g.MapPost("", RunAsync).CountsAsRun();
        g.MapGet("", (string id, HttpContext context, SessionManager sessions) =>
            SandboxEndpoints.Handle(context, async () =>
                Results.Json(new CommandListBody([.. (await sessions.ListCommandsAsync(id)).Select(CommandBody.From)]))));
        g.MapGet("/{cid}", (string id, string cid, bool? wait, double? timeout_s, HttpContext context, SessionManager sessions) =>
            SandboxEndpoints.Handle(context, async () =>
            {
                var waitFor = wait == true ? (timeout_s is { } t && t > 0 ? TimeSpan.FromSeconds(Math.Min(t, SessionManager.MaxCommandWait.TotalSeconds)) : SessionManager.MaxCommandWait) : TimeSpan.Zero;
                return Results.Json(CommandBody.From(await sessions.GetCommandAsync(id, cid, waitFor, context.RequestAborted)));
            }));
        g.MapPost("/{cid}/stdin", StdinAsync);
        g.MapDelete("/{cid}", (string id, string cid, string? signal, HttpContext context, SessionManager sessions) =>
            SandboxEndpoints.Handle(context, async () =>
                Results.Json(CommandBody.From(await sessions.KillCommandAsync(id, cid, signal, context.RequestAborted)))));
    }

    private static async Task RunAsync(string id, HttpContext context, SessionManager sessions, IOptions<JsonOptions> json)
    {
        var body = await Endpoints.ReadJsonAsync<CommandRequestBody>(context, json.Value.SerializerOptions, "command request");
        if (body is null)
        {
            return;
        }
        CommandRunRequest request;
        try
        {
            request = body.ToCore();
        }
        catch (RunRequestException e)
        {
            await Problems.Write(context, e);
            return;
        }
        if (!request.Background && RunStreaming.Wanted(context))
        {
            await RunStreaming.WriteAsync(context, json.Value.SerializerOptions,
                (events, ct) => sessions.RunCommandAsync(id, request, events, ct), CommandBody.From);
            return;
        }
        await SandboxEndpoints.Handle(context, async () =>
        {
            var result = CommandBody.From(await sessions.RunCommandAsync(id, request, null, context.RequestAborted));
            return request.Background
                ? Results.Json(result, json.Value.SerializerOptions, statusCode: StatusCodes.Status201Created)
                : Results.Json(result, json.Value.SerializerOptions);
        }).ExecuteAsync(context);
    }

    private static async Task StdinAsync(string id, string cid, HttpContext context, SessionManager sessions, IOptions<JsonOptions> json)
    {
        var body = await Endpoints.ReadJsonAsync<StdinBody>(context, json.Value.SerializerOptions, "stdin request");
        if (body is null)
        {
            return;
        }
        await SandboxEndpoints.Handle(context, async () =>
            Results.Json(CommandBody.From(await sessions.SendCommandStdinAsync(id, cid, body.Data ?? "", body.Eof ?? false, context.RequestAborted))))
            .ExecuteAsync(context);
    }

    /// <summary>Body of <c>POST .../commands</c>: <c>cmd</c> is an argv array or a shell line.</summary>
    internal sealed class CommandRequestBody
    {
        public JsonElement? Cmd { get; set; }
        public string? Cwd { get; set; }
        public Dictionary<string, string>? Env { get; set; }
        public double? TimeoutS { get; set; }
        public bool? Background { get; set; }
        public string? Stdin { get; set; }

        public CommandRunRequest ToCore()
        {
            var request = new CommandRunRequest { Cwd = Cwd, Env = Env, TimeoutS = TimeoutS, Background = Background ?? false, Stdin = Stdin };
            switch (Cmd)
            {
                case { ValueKind: JsonValueKind.String } line:
                    request.Shell = line.GetString();
                    break;
                case { ValueKind: JsonValueKind.Array } array when array.EnumerateArray().All(e => e.ValueKind == JsonValueKind.String):
                    request.Argv = [.. array.EnumerateArray().Select(e => e.GetString()!)];
                    break;
                case null or { ValueKind: JsonValueKind.Null or JsonValueKind.Undefined }:
                    throw new RunRequestException(ProblemCodes.MissingField, "cmd", "field 'cmd' is required: an argv array of strings or a shell line");
                default:
                    throw new RunRequestException(ProblemCodes.InvalidCommand, "cmd", "cmd must be an array of strings or a string");
            }
            return request;
        }
    }

    /// <summary>Body of <c>POST .../commands/{cid}/stdin</c>.</summary>
    internal sealed class StdinBody
    {
        public string? Data { get; set; }
        public bool? Eof { get; set; }
    }

    internal sealed record CommandListBody(List<CommandBody> Commands);

    /// <summary>A command on the wire (see docs/API.md "Commands"); stdout/stderr are null in listings.</summary>
    internal sealed record CommandBody(
        string Id,
        List<string> Cmd,
        string Status,
        bool Running,
        int? ExitCode,
        int? Signal,
        DateTime StartedAt,
        long DurationMs,
        string? Stdout,
        string? Stderr,
        long StdoutBytes,
        long StderrBytes,
        bool Truncated,
        bool StdinOpen)
    {
        public static CommandBody From(CommandResult r) => new(r.Id, r.Argv, r.Status, r.Running, r.ExitCode, r.Signal, r.StartedAt.UtcDateTime,
            r.DurationMs, r.Stdout, r.Stderr, r.StdoutBytes, r.StderrBytes, r.Truncated, r.StdinOpen);
    }
}
