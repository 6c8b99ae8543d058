using System.Globalization;
using System.Net.WebSockets;
using System.Text;

namespace SandboxVM.Client;

/// <summary>
/// An interactive terminal in a sandbox (<c>GET /v1/sandboxes/{id}/pty</c> over a WebSocket): a real pseudo-terminal
/// running the template's shell, or a command, as the sandbox user. Write keystrokes, read the terminal's output
/// (escape sequences and all), resize it; <see cref="ExitCode"/> is set once the program has ended.
/// Disposing closes the socket, which kills what still runs on the terminal.
/// </summary>
/// <example>
/// <code>
/// await using var term = await sb.OpenTerminalAsync(cols: 120, rows: 40);
/// await term.WriteAsync("ls -la; exit\n");
/// var buffer = new byte[4096];
/// int n;
/// while ((n = await term.ReadAsync(buffer)) > 0) Console.Out.Write(Encoding.UTF8.GetString(buffer, 0, n));
/// Console.WriteLine($"exit {term.ExitCode}");
/// </code>
/// </example>
public sealed class SandboxTerminal : IAsyncDisposable
{
    /// <summary>The server closes with this plus the program's exit code.</summary>
    public const int ExitCloseBase = 4000;

    private readonly ClientWebSocket _socket;
    private readonly SemaphoreSlim _send = new(1, 1);

    private SandboxTerminal(ClientWebSocket socket) => _socket = socket;

    /// <summary>The program's exit code once it ended (null while it runs, or when the terminal ended otherwise).</summary>
    public int? ExitCode { get; private set; }

    /// <summary>Why the server closed the terminal (e.g. "exit 0", or the agent's refusal).</summary>
    public string? CloseReason => _socket.CloseStatusDescription;

    internal static async Task<SandboxTerminal> ConnectAsync(Uri baseUri, string? apiKey, string sandboxId, int cols, int rows, string? command,
        HttpMessageInvoker? invoker, CancellationToken cancellationToken)
    {
        var query = new StringBuilder(string.Create(CultureInfo.InvariantCulture, $"cols={cols}&rows={rows}"));
        if (!string.IsNullOrEmpty(command))
        {
            query.Append("&cmd=").Append(Uri.EscapeDataString(command));
        }
        var http = new Uri(baseUri, $"v1/sandboxes/{Uri.EscapeDataString(sandboxId)}/pty?{query}");
        var ws = new UriBuilder(http) { Scheme = http.Scheme == "https" ? "wss" : "ws" }.Uri;
        var socket = new ClientWebSocket();
        if (apiKey is not null)
        {
            socket.Options.SetRequestHeader("Authorization", "Bearer " + apiKey);
        }
        socket.Options.CollectHttpResponseDetails = true;
        try
        {
            if (invoker is not null)
            {
                await socket.ConnectAsync(ws, invoker, cancellationToken).ConfigureAwait(false);
            }
            else
            {
                await socket.ConnectAsync(ws, cancellationToken).ConfigureAwait(false);
            }
        }
        catch (WebSocketException e)
        {
            int status = (int)socket.HttpStatusCode;
            socket.Dispose();
            throw new SandboxConnectionException(status == 0
                ? $"cannot open a terminal in sandbox {sandboxId}: {e.Message}"
                : $"the server refused a terminal in sandbox {sandboxId} (HTTP {status})", e);
        }
        return new SandboxTerminal(socket);
    }

    /// <summary>Sends keystrokes (UTF-8).</summary>
    public Task WriteAsync(string keys, CancellationToken cancellationToken = default) => WriteAsync(Encoding.UTF8.GetBytes(keys), cancellationToken);

    /// <summary>Sends raw bytes to the terminal.</summary>
    public async Task WriteAsync(ReadOnlyMemory<byte> bytes, CancellationToken cancellationToken = default)
    {
        await _send.WaitAsync(cancellationToken).ConfigureAwait(false);
        try
        {
            await _socket.SendAsync(bytes, WebSocketMessageType.Binary, true, cancellationToken).ConfigureAwait(false);
        }
        finally
        {
            _send.Release();
        }
    }

    /// <summary>Changes the terminal's size (the program gets SIGWINCH).</summary>
    public async Task ResizeAsync(int cols, int rows, CancellationToken cancellationToken = default)
    {
        byte[] json = Encoding.UTF8.GetBytes(string.Create(CultureInfo.InvariantCulture, $"{{\"resize\":{{\"cols\":{cols},\"rows\":{rows}}}}}"));
        await _send.WaitAsync(cancellationToken).ConfigureAwait(false);
        try
        {
            await _socket.SendAsync(json, WebSocketMessageType.Text, true, cancellationToken).ConfigureAwait(false);
        }
        finally
        {
            _send.Release();
        }
    }

    /// <summary>Reads the terminal's output; 0 once it has ended (then <see cref="ExitCode"/> says how).</summary>
    public async Task<int> ReadAsync(Memory<byte> buffer, CancellationToken cancellationToken = default)
    {
        while (true)
        {
            if (_socket.State is not (WebSocketState.Open or WebSocketState.CloseSent))
            {
                return 0;
            }
            var result = await _socket.ReceiveAsync(buffer, cancellationToken).ConfigureAwait(false);
            if (result.MessageType == WebSocketMessageType.Close)
            {
                if (_socket.CloseStatus is { } status && (int)status is >= ExitCloseBase and < ExitCloseBase + 256)
                {
                    ExitCode = (int)status - ExitCloseBase;
                }
                if (_socket.State == WebSocketState.CloseReceived)
                {
                    try
                    {
                        await _socket.CloseOutputAsync(WebSocketCloseStatus.NormalClosure, null, cancellationToken).ConfigureAwait(false);
                    }
                    catch (WebSocketException)
                    {
                        // The server went first; the terminal has ended either way.
                    }
                }
                return 0;
            }
            if (result.Count > 0)
            {
                return result.Count;
            }
        }
    }

    /// <summary>Closes the terminal (what runs on it is killed unless it ended).</summary>
    public async ValueTask DisposeAsync()
    {
        if (_socket.State == WebSocketState.Open)
        {
            try
            {
                using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(5));
                await _socket.CloseOutputAsync(WebSocketCloseStatus.NormalClosure, "closed by the client", timeout.Token).ConfigureAwait(false);
            }
            catch (Exception e) when (e is WebSocketException or OperationCanceledException)
            {
                // Gone already.
            }
        }
        _socket.Dispose();
        _send.Dispose();
    }
}
