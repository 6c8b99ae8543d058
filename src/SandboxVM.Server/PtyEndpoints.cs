using System.Globalization;
using System.IO.Pipelines;
using System.Net.WebSockets;
using System.Text.Json;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Routing;
using SandboxVM.Core.Runs;
using SandboxVM.Core.Sessions;
using SandboxVM.Protocol;
using SandboxVM.Runtime.Agent;

namespace SandboxVM.Server;

/// <summary>
/// <c>GET /v1/sandboxes/{id}/pty?cols=&amp;rows=&amp;cmd=</c>: a WebSocket carrying a pseudo-terminal in the sandbox
/// (the agent's pty_open). Binary frames are the terminal's bytes both ways; a text frame from the client is JSON
/// control (<c>{"resize":{"cols":C,"rows":R}}</c>); the server closes with 4000 + the program's exit code. Closing the
/// socket kills what runs on the terminal. See docs/API.md "Terminals".
/// </summary>
internal static class PtyEndpoints
{
    /// <summary>Close status of a terminal whose program ended: this plus its exit code (0..255), in the range RFC 6455 leaves to applications.</summary>
    public const int ExitCloseBase = 4000;

    /// <summary>Largest control (text) message read; a terminal's bytes come in binary frames of any size.</summary>
    private const int MaxControlBytes = 4096;

    /// <summary>The template's shell: bash where the image has it, else sh, as a login shell.</summary>
    private static readonly List<string> s_shell = ["/bin/sh", "-c", "if command -v bash >/dev/null 2>&1; then exec bash -l; else exec sh -l; fi"];

    public static void Map(IEndpointRouteBuilder app) =>
        app.MapGroup("/v1/sandboxes/{id}/pty").AddEndpointFilter(SandboxEndpoints.OwnerOnlyAsync).MapGet("", OpenAsync);

    private static async Task OpenAsync(string id, string? cols, string? rows, string? cmd, HttpContext context, SessionManager sessions)
    {
        if (!context.WebSockets.IsWebSocketRequest)
        {
            await Problems.Write(context, 400, PtyProblemCodes.WebSocketRequired, null,
                "this endpoint is a WebSocket: connect with a WebSocket client (Upgrade: websocket)");
            return;
        }
        int width, height;
        try
        {
            width = Size(cols, "cols", 80);
            height = Size(rows, "rows", 24);
        }
        catch (RunRequestException e)
        {
            await Problems.Write(context, e);
            return;
        }
        var request = new PtyRequest
        {
            Argv = string.IsNullOrEmpty(cmd) ? s_shell : ["/bin/sh", "-c", cmd],
            Cols = width,
            Rows = height,
        };
        await SandboxEndpoints.Handle(context, async () =>
        {
            // The sandbox is entered before the upgrade: an unknown or ended one is a problem, not a closed socket.
            await sessions.UseTerminalAsync(id, request.Argv, async (agent, argv) =>
            {
                request.Argv = argv;
                using var socket = await context.WebSockets.AcceptWebSocketAsync();
                await ServeAsync(socket, agent, request, context.RequestAborted);
                return true;
            });
            return Results.Empty;
        }).ExecuteAsync(context);
    }

    private static int Size(string? value, string name, int fallback)
    {
        if (value is null)
        {
            return fallback;
        }
        return int.TryParse(value, NumberStyles.None, CultureInfo.InvariantCulture, out int n) && n is >= 1 and <= PtyRequest.MaxCells
            ? n
            : throw new RunRequestException(PtyProblemCodes.InvalidTerminalSize, name, $"{name} must be a whole number 1..{PtyRequest.MaxCells}");
    }

    /// <summary>Bridges the socket and the terminal until the program ends (close 4000 + its code) or the client leaves (the terminal is killed).</summary>
    private static async Task ServeAsync(WebSocket socket, AgentClient agent, PtyRequest request, CancellationToken aborted)
    {
        Terminal terminal;
        try
        {
            terminal = await agent.OpenTerminalAsync(request, aborted);
        }
        catch (AgentException e)
        {
            await CloseAsync(socket, WebSocketCloseStatus.InternalServerError, e.Message);
            return;
        }
        using var stop = CancellationTokenSource.CreateLinkedTokenSource(aborted);
        // Keystrokes on their way to the guest: a client faster than the terminal waits at the pipe's threshold.
        var keys = new Pipe(new PipeOptions(pauseWriterThreshold: 64 * 1024, resumeWriterThreshold: 32 * 1024));
        var local = new SocketSide(socket, keys.Reader);
        // The terminal's output ended: its input ends too. Not by completing the pipe's writer: that is the
        // receive loop's, and a key it wrote after the writer completed failed the loop, which dropped the
        // socket without the exit close (a client typing as the program exited, seen under load).
        var relay = terminal.Stream.RelayAsync(local, local.EndInput, ReadOnlyMemory<byte>.Empty, stop.Token);
        var receive = ReceiveAsync(socket, terminal, keys.Writer, local, stop.Token);
        try
        {
            var first = await Task.WhenAny(relay, receive, terminal.Exit);
            if (first == receive)
            {
                // The client closed or broke the socket: the terminal goes.
                return;
            }
            PtyExit exit;
            try
            {
                await relay;
                exit = await terminal.Exit;
            }
            catch (AgentException e)
            {
                await CloseAsync(socket, WebSocketCloseStatus.InternalServerError, e.Message);
                await Task.WhenAny(receive, Task.Delay(TimeSpan.FromSeconds(5), aborted));
                return;
            }
            await CloseAsync(socket, (WebSocketCloseStatus)(ExitCloseBase + Math.Clamp(exit.ExitCode, 0, 255)),
                string.Create(CultureInfo.InvariantCulture, $"exit {exit.ExitCode}"));
            // The client's close completes the handshake; ending the request first would reset its connection.
            await Task.WhenAny(receive, Task.Delay(TimeSpan.FromSeconds(5), aborted));
        }
        finally
        {
            agent.CloseTerminal(terminal);
            await stop.CancelAsync();
            await Task.WhenAll(Quietly(relay), Quietly(receive), Quietly(terminal.Exit));
        }
    }

    private static async Task Quietly(Task task)
    {
        try
        {
            await task;
        }
        catch (Exception)
        {
            // Ended with the terminal; nothing to tell.
        }
    }

    /// <summary>
    /// Client frames: binary into the pipe of keystrokes (dropped once the terminal's input ended), text as
    /// control; returns when the client closes.
    /// </summary>
    private static async Task ReceiveAsync(WebSocket socket, Terminal terminal, PipeWriter keys, SocketSide local, CancellationToken cancellationToken)
    {
        byte[] control = new byte[MaxControlBytes];
        while (true)
        {
            var memory = keys.GetMemory(16 * 1024);
            var result = await socket.ReceiveAsync(memory, cancellationToken);
            switch (result.MessageType)
            {
                case WebSocketMessageType.Close:
                    return;
                case WebSocketMessageType.Binary when !local.InputEnded:
                    keys.Advance(result.Count);
                    await keys.FlushAsync(cancellationToken);
                    break;
                case WebSocketMessageType.Text:
                    int length = Math.Min(result.Count, control.Length);
                    memory.Span[..length].CopyTo(control);
                    while (!result.EndOfMessage)
                    {
                        result = await socket.ReceiveAsync(memory, cancellationToken);
                        int room = Math.Min(result.Count, control.Length - length);
                        memory.Span[..room].CopyTo(control.AsSpan(length));
                        length += room;
                    }
                    if (ParseResize(control.AsSpan(0, length)) is { } size)
                    {
                        await terminal.Agent.ResizeTerminalAsync(terminal, size.Cols, size.Rows, cancellationToken);
                    }
                    break;
            }
        }
    }

    /// <summary><c>{"resize":{"cols":C,"rows":R}}</c> with sizes 1..<see cref="PtyRequest.MaxCells"/>; anything else is ignored.</summary>
    internal static (int Cols, int Rows)? ParseResize(ReadOnlySpan<byte> json)
    {
        try
        {
            using var doc = JsonDocument.Parse(json.ToArray());
            if (doc.RootElement.ValueKind == JsonValueKind.Object && doc.RootElement.TryGetProperty("resize", out var resize)
                && resize.ValueKind == JsonValueKind.Object
                && resize.TryGetProperty("cols", out var c) && c.TryGetInt32(out int cols) && cols is >= 1 and <= PtyRequest.MaxCells
                && resize.TryGetProperty("rows", out var r) && r.TryGetInt32(out int rows) && rows is >= 1 and <= PtyRequest.MaxCells)
            {
                return (cols, rows);
            }
        }
        catch (JsonException)
        {
        }
        return null;
    }

    private static async Task CloseAsync(WebSocket socket, WebSocketCloseStatus status, string reason)
    {
        if (socket.State is not (WebSocketState.Open or WebSocketState.CloseReceived))
        {
            return;
        }
        // A close reason is at most 123 bytes.
        string cut = reason.Length > 100 ? reason[..100] : reason;
        try
        {
            using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(5));
            await socket.CloseOutputAsync(status, cut, timeout.Token);
        }
        catch (Exception e) when (e is WebSocketException or OperationCanceledException or IOException)
        {
            // The client is gone.
        }
    }

    /// <summary>The relay's local end: reads the client's keystrokes, writes the terminal's output as binary frames.</summary>
    private sealed class SocketSide(WebSocket socket, PipeReader keys) : RelayStream
    {
        private readonly Stream _keys = keys.AsStream();
        private volatile bool _inputEnded;

        /// <summary>True once the terminal's input ended: keys are no longer read.</summary>
        public bool InputEnded => _inputEnded;

        /// <summary>Ends the relay's reads of keys (end of file), from any thread; the pipe's writer stays the receive loop's.</summary>
        public void EndInput()
        {
            _inputEnded = true;
            keys.CancelPendingRead();
        }

        public override async ValueTask<int> ReadAsync(Memory<byte> buffer, CancellationToken cancellationToken = default)
        {
            if (_inputEnded)
            {
                return 0;
            }
            try
            {
                return await _keys.ReadAsync(buffer, cancellationToken);
            }
            catch (OperationCanceledException) when (_inputEnded && !cancellationToken.IsCancellationRequested)
            {
                // EndInput cancelled the pending read.
                return 0;
            }
        }

        public override ValueTask WriteAsync(ReadOnlyMemory<byte> buffer, CancellationToken cancellationToken = default) =>
            socket.SendAsync(buffer, WebSocketMessageType.Binary, endOfMessage: true, cancellationToken);
    }
}

internal static class PtyProblemCodes
{
    /// <summary>400: /pty was asked for without a WebSocket upgrade.</summary>
    public const string WebSocketRequired = "websocket_required";
    /// <summary>400: cols or rows is not 1..1000.</summary>
    public const string InvalidTerminalSize = "invalid_terminal_size";
}
