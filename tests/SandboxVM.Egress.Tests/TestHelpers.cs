using System.Collections.Concurrent;
using System.Diagnostics.Metrics;
using System.Net;
using System.Net.Sockets;
using System.Text;
using Microsoft.Extensions.Logging;

namespace SandboxVM.Egress.Tests;

/// <summary>A resolver from a fixed table: no DNS ever. Unknown names fail like a DNS miss.</summary>
internal sealed class MapResolver : IEgressResolver
{
    private readonly Dictionary<string, IPAddress[]> _map = new(StringComparer.Ordinal);
    private int _calls;

    public MapResolver Add(string name, params string[] addresses)
    {
        _map[name] = addresses.Select(IPAddress.Parse).ToArray();
        return this;
    }

    /// <summary>Delay before answering (to test the resolve timeout); <see cref="Timeout.InfiniteTimeSpan"/> answers only a cancel.</summary>
    public TimeSpan Delay { get; set; }

    public int Calls => Volatile.Read(ref _calls);

    public async Task<IReadOnlyList<IPAddress>> ResolveAsync(string host, CancellationToken cancellationToken)
    {
        Interlocked.Increment(ref _calls);
        if (Delay != TimeSpan.Zero)
            await Task.Delay(Delay, cancellationToken);
        return _map.TryGetValue(host, out var a) ? a : throw new SocketException((int)SocketError.HostNotFound);
    }
}

/// <summary>Log lines with their structured values.</summary>
internal sealed class CapturingLogger : ILogger
{
    public ConcurrentQueue<(LogLevel Level, string Message, Dictionary<string, object?> Values)> Entries { get; } = new();

    public IDisposable? BeginScope<TState>(TState state) where TState : notnull => null;

    public bool IsEnabled(LogLevel logLevel) => true;

    public void Log<TState>(LogLevel logLevel, EventId eventId, TState state, Exception? exception, Func<TState, Exception?, string> formatter)
    {
        var values = new Dictionary<string, object?>(StringComparer.Ordinal);
        if (state is IEnumerable<KeyValuePair<string, object?>> kvs)
        {
            foreach (var kv in kvs)
                values[kv.Key] = kv.Value;
        }

        var message = formatter(state, exception);
        Entries.Enqueue((logLevel, message, values));
        try
        {
            TestContext.Current.TestOutputHelper?.WriteLine($"[{logLevel}] {message}");
        }
        catch (InvalidOperationException)
        {
        }
    }
}

/// <summary>Measurements of one <see cref="Meter"/> instance only (tests run in parallel, each with its own meter).</summary>
internal sealed class MeterCapture : IDisposable
{
    private readonly MeterListener _listener = new();

    public MeterCapture(Meter meter)
    {
        _listener.InstrumentPublished = (instrument, l) =>
        {
            if (ReferenceEquals(instrument.Meter, meter))
                l.EnableMeasurementEvents(instrument);
        };
        _listener.SetMeasurementEventCallback<long>((instrument, value, tags, _) =>
        {
            var t = new Dictionary<string, string?>(StringComparer.Ordinal);
            foreach (var tag in tags)
                t[tag.Key] = tag.Value?.ToString();
            Measurements.Enqueue((instrument.Name, value, t));
        });
        _listener.Start();
    }

    public ConcurrentQueue<(string Name, long Value, Dictionary<string, string?> Tags)> Measurements { get; } = new();

    public long Sum(string name, params (string Key, string Value)[] tags) =>
        Measurements.Where(m => m.Name == name && tags.All(t => m.Tags.TryGetValue(t.Key, out var v) && v == t.Value)).Sum(m => m.Value);

    public void Dispose() => _listener.Dispose();
}

/// <summary>
/// A TCP server on loopback. Each accepted connection runs <see cref="Handler"/> (default: echo until EOF).
/// Counts connections; stops everything on dispose.
/// </summary>
internal sealed class LoopbackTcpServer : IAsyncDisposable
{
    private readonly TcpListener _listener;
    private readonly CancellationTokenSource _stop = new();
    private readonly Task _loop;
    private readonly ConcurrentBag<Task> _connections = [];
    private int _accepted;

    public LoopbackTcpServer(Func<TcpClient, CancellationToken, Task>? handler = null, IPAddress? address = null)
    {
        Handler = handler ?? EchoAsync;
        _listener = new TcpListener(address ?? IPAddress.Loopback, 0);
        _listener.Start();
        Address = address ?? IPAddress.Loopback;
        Port = ((IPEndPoint)_listener.LocalEndpoint).Port;
        _loop = Task.Run(AcceptLoopAsync);
    }

    public IPAddress Address { get; }

    public int Port { get; }

    public int Accepted => Volatile.Read(ref _accepted);

    public Func<TcpClient, CancellationToken, Task> Handler { get; }

    public static async Task EchoAsync(TcpClient client, CancellationToken ct)
    {
        var s = client.GetStream();
        var buf = new byte[4096];
        int n;
        while ((n = await s.ReadAsync(buf, ct)) > 0)
            await s.WriteAsync(buf.AsMemory(0, n), ct);
    }

    private async Task AcceptLoopAsync()
    {
        while (!_stop.IsCancellationRequested)
        {
            TcpClient client;
            try
            {
                client = await _listener.AcceptTcpClientAsync(_stop.Token);
            }
            catch (Exception) when (_stop.IsCancellationRequested)
            {
                return;
            }
            catch (SocketException)
            {
                return;
            }

            Interlocked.Increment(ref _accepted);
            _connections.Add(Task.Run(async () =>
            {
                using (client)
                {
                    try
                    {
                        await Handler(client, _stop.Token);
                    }
                    catch (Exception e) when (e is IOException or SocketException or OperationCanceledException or ObjectDisposedException)
                    {
                    }
                }
            }));
        }
    }

    public async ValueTask DisposeAsync()
    {
        await _stop.CancelAsync();
        _listener.Stop();
        await Task.WhenAny(Task.WhenAll([_loop, .. _connections]), Task.Delay(TimeSpan.FromSeconds(5)));
        _stop.Dispose();
    }
}

internal sealed record FakeHttpRequest(string Method, string Target, string Version, IReadOnlyDictionary<string, string> Headers)
{
    public string RequestLine => $"{Method} {Target} {Version}";

    public string? Header(string name) => Headers.TryGetValue(name, out var v) ? v : null;
}

/// <summary>
/// A minimal HTTP/1.1 server on 127.0.0.1 (one request per connection): reads the request head, records it,
/// and lets the handler write the answer (or proxy a CONNECT).
/// </summary>
internal sealed class FakeHttpServer : IAsyncDisposable
{
    private readonly LoopbackTcpServer _tcp;

    public FakeHttpServer(Func<FakeHttpRequest, TcpClient, CancellationToken, Task> handler)
    {
        _tcp = new LoopbackTcpServer(async (client, ct) =>
        {
            var head = await ReadHeadAsync(client.GetStream(), ct);
            if (head is null)
                return;
            Requests.Enqueue(head);
            await handler(head, client, ct);
        });
    }

    public ConcurrentQueue<FakeHttpRequest> Requests { get; } = new();

    public int Port => _tcp.Port;

    public int Accepted => _tcp.Accepted;

    public string BaseUrl => $"http://127.0.0.1:{Port}";

    public static FakeHttpServer Responding(int status, string contentType, string body) =>
        new((_, client, ct) => RespondAsync(client, status, contentType, body, ct));

    public static async Task RespondAsync(TcpClient client, int status, string contentType, string body, CancellationToken ct)
    {
        var bytes = Encoding.UTF8.GetBytes(body);
        var head = $"HTTP/1.1 {status} {(status == 200 ? "OK" : "Error")}\r\nContent-Type: {contentType}\r\nContent-Length: {bytes.Length}\r\nConnection: close\r\n\r\n";
        var s = client.GetStream();
        await s.WriteAsync(Encoding.ASCII.GetBytes(head), ct);
        await s.WriteAsync(bytes, ct);
    }

    private static async Task<FakeHttpRequest?> ReadHeadAsync(NetworkStream s, CancellationToken ct)
    {
        var buf = new List<byte>();
        var one = new byte[1];
        while (buf.Count < 64 * 1024)
        {
            if (await s.ReadAsync(one, ct) == 0)
                return null;
            buf.Add(one[0]);
            if (buf.Count >= 4 && buf[^4] == '\r' && buf[^3] == '\n' && buf[^2] == '\r' && buf[^1] == '\n')
                break;
        }

        var lines = Encoding.ASCII.GetString(buf.ToArray()).Split("\r\n", StringSplitOptions.RemoveEmptyEntries);
        var parts = lines[0].Split(' ');
        var headers = new Dictionary<string, string>(StringComparer.OrdinalIgnoreCase);
        foreach (var line in lines.Skip(1))
        {
            var i = line.IndexOf(':', StringComparison.Ordinal);
            if (i > 0)
                headers[line[..i].Trim()] = line[(i + 1)..].Trim();
        }

        return new FakeHttpRequest(parts[0], parts.Length > 1 ? parts[1] : "", parts.Length > 2 ? parts[2] : "", headers);
    }

    public ValueTask DisposeAsync() => _tcp.DisposeAsync();
}

/// <summary>
/// An HTTP CONNECT proxy on 127.0.0.1 that only ever connects to loopback targets (anything else gets 403),
/// then pipes both ways. <see cref="Answer"/> can replace the 200 (to refuse, or to never answer).
/// </summary>
internal sealed class FakeConnectProxy : IAsyncDisposable
{
    private readonly FakeHttpServer _server;

    public FakeConnectProxy()
    {
        _server = new FakeHttpServer(HandleAsync);
    }

    /// <summary>Null: answer 200 and pipe. Otherwise the status line to send instead (then close); "" waits forever.</summary>
    public string? Answer { get; set; }

    public ConcurrentQueue<FakeHttpRequest> Requests => _server.Requests;

    public int Port => _server.Port;

    public int Accepted => _server.Accepted;

    private async Task HandleAsync(FakeHttpRequest request, TcpClient client, CancellationToken ct)
    {
        var s = client.GetStream();
        if (Answer == "")
        {
            await Task.Delay(Timeout.Infinite, ct);
            return;
        }

        if (Answer is not null)
        {
            await s.WriteAsync(Encoding.ASCII.GetBytes(Answer + "\r\nContent-Length: 0\r\n\r\n"), ct);
            return;
        }

        if (request.Method != "CONNECT" || !IPEndPoint.TryParse(request.Target, out var target) || !IPAddress.IsLoopback(target.Address))
        {
            await s.WriteAsync("HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n"u8.ToArray(), ct);
            return;
        }

        using var upstream = new TcpClient(target.AddressFamily);
        await upstream.ConnectAsync(target, ct);
        await s.WriteAsync("HTTP/1.1 200 Connection established\r\n\r\n"u8.ToArray(), ct);
        var u = upstream.GetStream();
        await Task.WhenAll(Pump(s, u, upstream.Client, ct), Pump(u, s, client.Client, ct));

        static async Task Pump(Stream from, Stream to, Socket toSocket, CancellationToken ct)
        {
            await from.CopyToAsync(to, ct);
            toSocket.Shutdown(SocketShutdown.Send);
        }
    }

    public ValueTask DisposeAsync() => _server.DisposeAsync();
}
