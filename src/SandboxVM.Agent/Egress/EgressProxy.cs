using System.Globalization;
using System.Net;
using System.Net.Sockets;
using System.Text;
using System.Text.Json;
using System.Text.Json.Serialization.Metadata;
using SandboxVM.Protocol;

namespace SandboxVM.Agent.Egress;

/// <summary>The connection to the host, as the proxy uses it (the current <see cref="AgentServer"/>).</summary>
internal interface IHostLink
{
    /// <summary>Opens an agent-initiated operation that becomes a stream; throws <see cref="AgentException"/> with the host's error code.</summary>
    Task<FrameStream> OpenAsync(AgentRequest request, CancellationToken cancellationToken);

    /// <summary>An agent-initiated request/response operation.</summary>
    Task<T> CallAsync<T>(AgentRequest request, JsonTypeInfo<T> replyType, CancellationToken cancellationToken);

    /// <summary>Frees the id of a stream from <see cref="OpenAsync"/> once its relay ended.</summary>
    void Release(uint id);
}

/// <summary>
/// The guest's only way out: an HTTP proxy on a loopback address. <c>CONNECT host:port</c> becomes an
/// egress stream (answer 200, or 403/502/504 with <c>X-SandboxVM-Egress-Reason</c>); an absolute-form
/// request (<c>GET http://host/path</c>) is forwarded in origin form over a stream to host:port with
/// <c>Connection: close</c> (one request per connection); <c>http://search.sandboxvm.internal/search?q=..&amp;max_results=N</c>
/// is answered from the host's search provider as JSON. The host decides every destination.
/// </summary>
internal sealed class EgressProxy
{
    public const string SearchHost = "search.sandboxvm.internal";
    public const string ReasonHeader = "X-SandboxVM-Egress-Reason";
    private const int MaxHeadBytes = 16 * 1024;
    private static readonly TimeSpan _headTimeout = TimeSpan.FromSeconds(30);

    private static readonly HashSet<string> _denials = new(StringComparer.Ordinal)
    {
        "invalid_request", "denied_by_rule", "metadata_endpoint", "private_address", "port_not_allowed", "not_in_allow_list",
        "too_many_connections", "rate_limited",
    };

    private readonly Lock _lock = new();
    private readonly SemaphoreSlim _connections = new(ProtocolInfo.MaxAgentOperations, ProtocolInfo.MaxAgentOperations);
    private TcpListener? _listener;
    private volatile IHostLink? _link;

    /// <summary>The host connection streams go over; null while no host is attached.</summary>
    public IHostLink? Link
    {
        get => _link;
        set => _link = value;
    }

    public void Detach(IHostLink link) => Interlocked.CompareExchange(ref _link, null, link);

    /// <summary>The port the proxy listens on, null before egress_enable.</summary>
    public int? ListeningPort
    {
        get { lock (_lock) { return (_listener?.LocalEndpoint as IPEndPoint)?.Port; } }
    }

    /// <summary>Listens on <paramref name="listen"/> (ADDRESS:PORT, loopback only) unless already listening; returns the bound address.</summary>
    public string Start(string listen)
    {
        lock (_lock)
        {
            if (_listener is not null)
            {
                return _listener.LocalEndpoint.ToString()!;
            }
            if (!IPEndPoint.TryParse(listen, out var endpoint) || !IPAddress.IsLoopback(endpoint.Address))
            {
                throw AgentException.BadRequest($"listen address '{listen}' is not a loopback ADDRESS:PORT");
            }
            var listener = new TcpListener(endpoint);
            try
            {
                listener.Start(128);
            }
            catch (SocketException e)
            {
                throw new AgentException(ErrorCodes.IoError, $"cannot listen on {listen}: {e.Message}");
            }
            _listener = listener;
            _ = Task.Run(() => AcceptLoopAsync(listener));
            AgentLog.Write($"egress proxy listening on {listener.LocalEndpoint}");
            return listener.LocalEndpoint.ToString()!;
        }
    }

    private async Task AcceptLoopAsync(TcpListener listener)
    {
        while (true)
        {
            // At most MaxAgentOperations connections at once; further clients wait in the backlog.
            await _connections.WaitAsync();
            Socket client;
            try
            {
                client = await listener.AcceptSocketAsync();
            }
            catch (Exception e) when (e is SocketException or ObjectDisposedException)
            {
                _connections.Release();
                AgentLog.Write($"egress proxy: accept failed: {e.Message}");
                await Task.Delay(100);
                continue;
            }
            _ = Task.Run(async () =>
            {
                try
                {
                    await ServeAsync(client);
                }
                catch (Exception e)
                {
                    AgentLog.Write($"egress proxy: connection failed: {e.Message}");
                }
                finally
                {
                    client.Dispose();
                    _connections.Release();
                }
            });
        }
    }

    private async Task ServeAsync(Socket client)
    {
        client.NoDelay = true;
        await using var stream = new NetworkStream(client, ownsSocket: false);
        using var headTimeout = new CancellationTokenSource(_headTimeout);
        byte[] buffer = new byte[MaxHeadBytes];
        int filled = 0;
        int headEnd;
        try
        {
            while ((headEnd = FindHeadEnd(buffer.AsSpan(0, filled))) < 0)
            {
                if (filled == buffer.Length)
                {
                    await WriteErrorAsync(stream, 431, "Request Header Fields Too Large", "bad_request", "request head over 16 KiB");
                    return;
                }
                int n = await stream.ReadAsync(buffer.AsMemory(filled), headTimeout.Token);
                if (n == 0)
                {
                    return;
                }
                filled += n;
            }
        }
        catch (OperationCanceledException)
        {
            return;
        }

        var request = ProxyRequest.Parse(buffer.AsSpan(0, headEnd));
        var leftover = buffer.AsMemory(headEnd + 4, filled - headEnd - 4);
        var link = _link;
        switch (request.Kind)
        {
            case ProxyRequestKind.Refused:
                await WriteErrorAsync(stream, request.Status, request.Status == 400 ? "Bad Request" : "Error", request.Code, request.Message);
                return;
            case ProxyRequestKind.Search:
                await SearchAsync(stream, link, request.Target!);
                return;
            case ProxyRequestKind.Connect:
            {
                var opened = await OpenAsync(stream, link, request.Host, request.Port);
                if (opened is null)
                {
                    return;
                }
                await stream.WriteAsync("HTTP/1.1 200 Connection established\r\n\r\n"u8.ToArray());
                await RelayAsync(link!, opened, stream, client, leftover);
                return;
            }
            default:
            {
                var opened = await OpenAsync(stream, link, request.Host, request.Port);
                if (opened is null)
                {
                    return;
                }
                byte[] headBytes = Encoding.Latin1.GetBytes(request.ForwardHead);
                byte[] initial = new byte[headBytes.Length + leftover.Length];
                headBytes.CopyTo(initial, 0);
                leftover.CopyTo(initial.AsMemory(headBytes.Length));
                await RelayAsync(link!, opened, stream, client, initial);
                return;
            }
        }
    }

    /// <summary>egress_open over the link; on refusal writes the error answer and returns null.</summary>
    private static async Task<FrameStream?> OpenAsync(NetworkStream client, IHostLink? link, string host, int port)
    {
        if (link is null)
        {
            await WriteErrorAsync(client, 502, "Bad Gateway", "egress_unavailable", "the sandbox is not connected to its host");
            return null;
        }
        try
        {
            return await link.OpenAsync(new AgentRequest { Op = Ops.EgressOpen, EgressOpen = new EgressOpenRequest { Host = host, Port = port } },
                CancellationToken.None);
        }
        catch (AgentException e)
        {
            var (status, phrase) = e.Code switch
            {
                _ when _denials.Contains(e.Code) => (403, "Forbidden"),
                "connect_timeout" => (504, "Gateway Timeout"),
                _ => (502, "Bad Gateway"),
            };
            await WriteErrorAsync(client, status, phrase, e.Code, e.Message);
            return null;
        }
    }

    private static async Task RelayAsync(IHostLink link, FrameStream remote, NetworkStream local, Socket socket, ReadOnlyMemory<byte> initial)
    {
        try
        {
            await remote.RelayAsync(local, () =>
            {
                try
                {
                    socket.Shutdown(SocketShutdown.Send);
                }
                catch (Exception e) when (e is SocketException or ObjectDisposedException)
                {
                }
            }, initial, CancellationToken.None);
        }
        finally
        {
            link.Release(remote.Id);
        }
    }

    private static async Task SearchAsync(NetworkStream client, IHostLink? link, Uri uri)
    {
        if (link is null)
        {
            await WriteJsonErrorAsync(client, 502, "egress_unavailable", "the sandbox is not connected to its host");
            return;
        }
        var query = ParseQuery(uri.Query);
        if (uri.AbsolutePath != "/search" || !query.TryGetValue("q", out string? q) || string.IsNullOrWhiteSpace(q))
        {
            await WriteJsonErrorAsync(client, 400, "invalid_argument", "use GET /search?q=QUERY&max_results=N");
            return;
        }
        int max = 5;
        if (query.TryGetValue("max_results", out string? m) && !int.TryParse(m, NumberStyles.None, CultureInfo.InvariantCulture, out max))
        {
            await WriteJsonErrorAsync(client, 400, "invalid_argument", "max_results must be a positive integer");
            return;
        }
        try
        {
            var reply = await link.CallAsync(new AgentRequest { Op = Ops.Search, Search = new SearchRequest { Query = q, MaxResults = max } },
                ProtocolJson.Default.SearchReply, CancellationToken.None);
            await WriteAnswerAsync(client, 200, "OK", null, "application/json", JsonSerializer.SerializeToUtf8Bytes(reply, ProtocolJson.Default.SearchReply));
        }
        catch (AgentException e)
        {
            int status = e.Code switch
            {
                ErrorCodes.SearchNotConfigured => 503,
                ErrorCodes.BadRequest or "invalid_argument" => 400,
                _ => 502,
            };
            await WriteJsonErrorAsync(client, status, e.Code, e.Message);
        }
    }

    private static Dictionary<string, string> ParseQuery(string query)
    {
        var result = new Dictionary<string, string>(StringComparer.Ordinal);
        foreach (string pair in query.TrimStart('?').Split('&', StringSplitOptions.RemoveEmptyEntries))
        {
            int eq = pair.IndexOf('=', StringComparison.Ordinal);
            string key = Uri.UnescapeDataString((eq < 0 ? pair : pair[..eq]).Replace('+', ' '));
            string value = eq < 0 ? "" : Uri.UnescapeDataString(pair[(eq + 1)..].Replace('+', ' '));
            result.TryAdd(key, value);
        }
        return result;
    }

    /// <summary>
    /// An error answer. The status line's phrase carries <c>[code] message</c> too, because clients that
    /// fail a CONNECT (Python's http.client) show only the status line.
    /// </summary>
    private static Task WriteErrorAsync(NetworkStream client, int status, string phrase, string code, string message) =>
        WriteAnswerAsync(client, status, $"{phrase} [{code}] {message}", code, "text/plain; charset=utf-8", Encoding.UTF8.GetBytes(message + "\n"));

    private static Task WriteJsonErrorAsync(NetworkStream client, int status, string code, string message)
    {
        using var buffer = new MemoryStream();
        using (var w = new Utf8JsonWriter(buffer))
        {
            w.WriteStartObject();
            w.WriteStartObject("error");
            w.WriteString("code", code);
            w.WriteString("message", message);
            w.WriteEndObject();
            w.WriteEndObject();
        }
        return WriteAnswerAsync(client, status, status == 503 ? "Service Unavailable" : status == 400 ? "Bad Request" : "Bad Gateway", code,
            "application/json", buffer.ToArray());
    }

    private static async Task WriteAnswerAsync(NetworkStream client, int status, string phrase, string? reason, string contentType, byte[] body)
    {
        var head = new StringBuilder();
        head.Append(CultureInfo.InvariantCulture, $"HTTP/1.1 {status} {Printable(phrase)}\r\n");
        if (reason is not null)
        {
            head.Append(CultureInfo.InvariantCulture, $"{ReasonHeader}: {Printable(reason)}\r\n");
        }
        head.Append(CultureInfo.InvariantCulture, $"Content-Type: {contentType}\r\nContent-Length: {body.Length}\r\nConnection: close\r\n\r\n");
        try
        {
            await client.WriteAsync(Encoding.UTF8.GetBytes(head.ToString()));
            await client.WriteAsync(body);
        }
        catch (IOException)
        {
            // The client went away.
        }
    }

    private static int FindHeadEnd(ReadOnlySpan<byte> data) => data.IndexOf("\r\n\r\n"u8);

    internal static string Printable(string s) =>
        new(s.Take(300).Select(c => c is < ' ' or (char)127 ? ' ' : c).ToArray());
}
