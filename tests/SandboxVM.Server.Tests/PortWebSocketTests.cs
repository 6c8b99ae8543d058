using System.Net;
using System.Net.WebSockets;
using System.Text;

namespace SandboxVM.Server.Tests;

/// <summary>A WebSocket server in the sandbox (python's stdlib, RFC 6455 by hand) reached through /v1/sandboxes/{id}/ports/{port}/.</summary>
[Trait("tier", "integration")]
public sealed class PortWebSocketTests(LocalAgentServer server) : IClassFixture<LocalAgentServer>
{
    private static CancellationToken Ct => TestContext.Current.CancellationToken;

    private readonly LocalAgentServer _server = server.OrSkip();

    /// <summary>Echoes each message as "echo:" + it, with its type; answers a close with a close.</summary>
    private const string EchoServer = """
        import base64, hashlib, socket, struct, sys, threading
        GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
        def exact(c, n):
            b = b""
            while len(b) < n:
                d = c.recv(n - len(b))
                if not d: raise EOFError
                b += d
            return b
        def serve(c):
            req = b""
            while b"\r\n\r\n" not in req:
                d = c.recv(4096)
                if not d: return
                req += d
            key = [l.split(b":", 1)[1].strip() for l in req.split(b"\r\n") if l.lower().startswith(b"sec-websocket-key:")][0]
            accept = base64.b64encode(hashlib.sha1(key + GUID).digest())
            path = req.split(b" ")[1]
            c.sendall(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: " + accept + b"\r\n\r\n")
            while True:
                h = exact(c, 2)
                op, n = h[0] & 0x0f, h[1] & 0x7f
                if n == 126: n = struct.unpack(">H", exact(c, 2))[0]
                elif n == 127: n = struct.unpack(">Q", exact(c, 8))[0]
                mask = exact(c, 4)
                data = bytes(b ^ mask[i % 4] for i, b in enumerate(exact(c, n)))
                if op == 8:
                    c.sendall(b"\x88\x02\x03\xe8")
                    return
                out = b"echo:" + path + b":" + data
                hdr = bytes([0x80 | op]) + (bytes([len(out)]) if len(out) < 126 else b"\x7e" + struct.pack(">H", len(out)))
                c.sendall(hdr + out)
        def run(c):
            try: serve(c)
            except EOFError: pass
            finally: c.close()
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", int(sys.argv[1])))
        s.listen()
        while True:
            c, _ = s.accept()
            threading.Thread(target=run, args=(c,), daemon=True).start()
        """;


    [Fact]
    public async Task AWebSocketServerInTheSandbox_EchoesThroughThePortUrl()
    {
        await using var sb = await _server.Client.CreateSandboxAsync(LocalAgentServer.Python, cancellationToken: Ct);
        await sb.Files.WriteAsync("ws_echo.py", EchoServer, Ct);
        int port = LocalAgentServer.FreePort();
        var server = await sb.Commands.StartAsync(["python3", "ws_echo.py", port.ToString(System.Globalization.CultureInfo.InvariantCulture)], cancellationToken: Ct);
        var url = new UriBuilder(new Uri(_server.Http.BaseAddress!, $"v1/sandboxes/{sb.Id}/ports/{port}/chat?room=1")) { Scheme = "ws" }.Uri;

        using var socket = await ConnectWhenUpAsync(url);
        await socket.SendAsync(Encoding.UTF8.GetBytes("hello"), WebSocketMessageType.Text, true, Ct);
        byte[] buffer = new byte[1024];
        var first = await socket.ReceiveAsync(buffer, Ct);
        Assert.Equal(WebSocketMessageType.Text, first.MessageType);
        Assert.Equal("echo:/chat?room=1:hello", Encoding.UTF8.GetString(buffer, 0, first.Count));

        byte[] binary = [0, 1, 2, 255];
        await socket.SendAsync(binary, WebSocketMessageType.Binary, true, Ct);
        var second = await socket.ReceiveAsync(buffer, Ct);
        Assert.Equal(WebSocketMessageType.Binary, second.MessageType);
        Assert.Equal([.. "echo:/chat?room=1:"u8.ToArray(), .. binary], buffer[..second.Count]);

        await socket.CloseAsync(WebSocketCloseStatus.NormalClosure, "bye", Ct);
        Assert.Equal(WebSocketCloseStatus.NormalClosure, socket.CloseStatus);
        await sb.Commands.KillAsync(server.Id, cancellationToken: Ct);
    }

    /// <summary>Connects once the server has bound its port (502 until then).</summary>
    private static async Task<ClientWebSocket> ConnectWhenUpAsync(Uri url)
    {
        var deadline = DateTime.UtcNow + TimeSpan.FromSeconds(60);
        while (true)
        {
            var socket = new ClientWebSocket();
            socket.Options.CollectHttpResponseDetails = true;
            try
            {
                await socket.ConnectAsync(url, Ct);
                return socket;
            }
            catch (WebSocketException) when (socket.HttpStatusCode == HttpStatusCode.BadGateway && DateTime.UtcNow < deadline)
            {
                socket.Dispose();
                await Task.Delay(200, Ct);
            }
        }
    }
}
