using System.Net;
using System.Net.Sockets;
using System.Security.Cryptography;
using System.Text;
using System.Text.Json;
using SandboxVM.Protocol;

namespace SandboxVM.Agent.Tests;

/// <summary>
/// The agent's HTTP proxy over the real agent (stdio) with a fake host that answers egress_open with a
/// loopback connection and search with canned hits. Everything stays on 127.0.0.1.
/// </summary>
[Trait("tier", "integration")]
public sealed class EgressProxyTests : IAsyncLifetime
{
    private static CancellationToken Ct => TestContext.Current.CancellationToken;

    private AgentHarness _agent = null!;
    private IPEndPoint _proxy = null!;
    private readonly TcpListener _origin = new(IPAddress.Loopback, 0);
    private readonly List<string> _originHeads = [];
    private Task _originLoop = Task.CompletedTask;
    private long _echoed;
    private readonly CancellationTokenSource _stop = new();

    public async ValueTask InitializeAsync()
    {
        _agent = await AgentHarness.StartAsync();
        var reply = await _agent.RequestAsync(new AgentRequest { Op = Ops.EgressEnable, EgressEnable = new EgressEnableRequest { Listen = "127.0.0.1:0" } }, Ct);
        _proxy = IPEndPoint.Parse(reply.Response(ProtocolJson.Default.EgressEnableReply).Listen);
        _origin.Start();
        _agent.EgressTargets["origin.test"] = ((IPEndPoint)_origin.LocalEndpoint).Port;
    }

    public async ValueTask DisposeAsync()
    {
        await _stop.CancelAsync();
        _origin.Stop();
        await _originLoop.ContinueWith(_ => { }, TaskScheduler.Default);
        await _agent.DisposeAsync();
    }

    /// <summary>Origin that reads one request head and answers hello (HTTP), or echoes everything (raw).</summary>
    private void ServeOrigin(bool echo) => _originLoop = Task.Run(async () =>
    {
        while (!_stop.IsCancellationRequested)
        {
            using var client = await _origin.AcceptTcpClientAsync(_stop.Token);
            var stream = client.GetStream();
            if (echo)
            {
                byte[] buffer = new byte[64 * 1024];
                int n;
                while ((n = await stream.ReadAsync(buffer, _stop.Token)) > 0)
                {
                    await stream.WriteAsync(buffer.AsMemory(0, n), _stop.Token);
                    Interlocked.Add(ref _echoed, n);
                }
                client.Client.Shutdown(SocketShutdown.Send);
                continue;
            }
            var head = new StringBuilder();
            var one = new byte[1];
            while (!head.ToString().EndsWith("\r\n\r\n", StringComparison.Ordinal) && await stream.ReadAsync(one, _stop.Token) == 1)
            {
                head.Append((char)one[0]);
            }
            lock (_originHeads)
            {
                _originHeads.Add(head.ToString());
            }
            await stream.WriteAsync("HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello"u8.ToArray(), _stop.Token);
        }
    });

    private async Task<(TcpClient Client, NetworkStream Stream)> ConnectProxyAsync()
    {
        var client = new TcpClient();
        await client.ConnectAsync(_proxy, Ct);
        return (client, client.GetStream());
    }

    private static async Task<string> ReadToEndAsync(NetworkStream stream)
    {
        using var timeout = CancellationTokenSource.CreateLinkedTokenSource(Ct);
        timeout.CancelAfter(TimeSpan.FromSeconds(30));
        using var buffer = new MemoryStream();
        await stream.CopyToAsync(buffer, timeout.Token);
        return Encoding.UTF8.GetString(buffer.ToArray());
    }

    [Fact]
    public async Task AbsoluteFormGet_IsForwardedInOriginFormWithConnectionClose()
    {
        ServeOrigin(echo: false);
        var (client, stream) = await ConnectProxyAsync();
        using (client)
        {
            await stream.WriteAsync("GET http://origin.test/path?x=1 HTTP/1.1\r\nHost: origin.test\r\nProxy-Connection: keep-alive\r\nUser-Agent: t\r\n\r\n"u8.ToArray(), Ct);
            string answer = await ReadToEndAsync(stream);
            Assert.StartsWith("HTTP/1.1 200 OK", answer);
            Assert.EndsWith("hello", answer);
        }
        string head;
        lock (_originHeads)
        {
            head = Assert.Single(_originHeads);
        }
        Assert.StartsWith("GET /path?x=1 HTTP/1.1\r\n", head);
        Assert.Contains("Host: origin.test\r\n", head);
        Assert.Contains("Connection: close\r\n", head);
        Assert.DoesNotContain("Proxy-Connection", head);
        var open = Assert.Single(_agent.EgressOpens);
        Assert.Equal(("origin.test", 80), (open.Host, open.Port));
    }

    [Fact]
    public async Task Connect_RelaysLargeDataBothWays_WithFlowControl()
    {
        ServeOrigin(echo: true);
        var (client, stream) = await ConnectProxyAsync();
        using (client)
        {
            await stream.WriteAsync("CONNECT origin.test:443 HTTP/1.1\r\nHost: origin.test:443\r\n\r\n"u8.ToArray(), Ct);
            byte[] status = new byte[39];
            await stream.ReadExactlyAsync(status, Ct);
            Assert.Equal("HTTP/1.1 200 Connection established\r\n\r\n", Encoding.ASCII.GetString(status));
            // Several windows' worth, written while nothing is read back yet: credit must throttle, not lose data.
            byte[] payload = RandomNumberGenerator.GetBytes(3 * 1024 * 1024);
            var send = Task.Run(async () =>
            {
                await stream.WriteAsync(payload, Ct);
                client.Client.Shutdown(SocketShutdown.Send);
            }, Ct);
            // Read nothing back until a whole window has come down: from then on it moves as credit returns.
            Assert.True(await ProcessTable.WaitUntilAsync(() => Interlocked.Read(ref _echoed) >= FrameStream.Window, TimeSpan.FromSeconds(60), Ct),
                $"the origin echoed {Interlocked.Read(ref _echoed)} bytes");
            byte[] back = new byte[payload.Length];
            await stream.ReadExactlyAsync(back, Ct).AsTask().WaitAsync(TimeSpan.FromSeconds(60), Ct);
            await send;
            Assert.True(payload.AsSpan().SequenceEqual(back));
            Assert.Equal(0, await stream.ReadAsync(new byte[1], Ct));
        }
        Assert.Equal(443, Assert.Single(_agent.EgressOpens).Port);
    }

    [Fact]
    public async Task Connect_Denied_Is403WithTheReason()
    {
        var (client, stream) = await ConnectProxyAsync();
        using (client)
        {
            await stream.WriteAsync("CONNECT 10.0.0.1:443 HTTP/1.1\r\n\r\n"u8.ToArray(), Ct);
            string answer = await ReadToEndAsync(stream);
            Assert.StartsWith("HTTP/1.1 403 Forbidden [private_address] egress to 10.0.0.1 denied", answer);
            Assert.Contains("\r\nX-SandboxVM-Egress-Reason: private_address\r\n", answer);
            Assert.EndsWith("denied by the fake host\n", answer);
        }
    }

    [Theory]
    [InlineData("rate_limited", "403 Forbidden")]
    [InlineData("too_many_connections", "403 Forbidden")]
    [InlineData("not_in_allow_list", "403 Forbidden")]
    [InlineData("connect_failed", "502 Bad Gateway")]
    [InlineData("connect_timeout", "504 Gateway Timeout")]
    public async Task Connect_Refused_AnswersTheStatusOfItsReason(string code, string status)
    {
        var (client, stream) = await ConnectProxyAsync();
        using (client)
        {
            await stream.WriteAsync(System.Text.Encoding.ASCII.GetBytes($"CONNECT {code}.refused.test:443 HTTP/1.1\r\n\r\n"), Ct);
            string answer = await ReadToEndAsync(stream);
            Assert.StartsWith($"HTTP/1.1 {status} [{code}]", answer);
            Assert.Contains($"\r\nX-SandboxVM-Egress-Reason: {code}\r\n", answer);
        }
    }

    [Fact]
    public async Task Search_IsAnsweredByTheHostAsJson()
    {
        var (client, stream) = await ConnectProxyAsync();
        using (client)
        {
            await stream.WriteAsync("GET http://search.sandboxvm.internal/search?q=big+cats&max_results=2 HTTP/1.1\r\nHost: search.sandboxvm.internal\r\n\r\n"u8.ToArray(), Ct);
            string answer = await ReadToEndAsync(stream);
            Assert.StartsWith("HTTP/1.1 200 OK", answer);
            var json = JsonDocument.Parse(answer[(answer.IndexOf("\r\n\r\n", StringComparison.Ordinal) + 4)..]).RootElement;
            var results = json.GetProperty("results").EnumerateArray().ToList();
            Assert.Equal(2, results.Count);
            Assert.Equal("big cats 1", results[0].GetProperty("title").GetString());
        }
        var q = Assert.Single(_agent.Searches);
        Assert.Equal(("big cats", 2), (q.Query, q.MaxResults));
    }

    [Fact]
    public async Task Search_NotConfigured_Is503WithTheCode()
    {
        var (client, stream) = await ConnectProxyAsync();
        using (client)
        {
            await stream.WriteAsync("GET http://search.sandboxvm.internal/search?q=unconfigured HTTP/1.1\r\n\r\n"u8.ToArray(), Ct);
            string answer = await ReadToEndAsync(stream);
            Assert.StartsWith("HTTP/1.1 503", answer);
            Assert.Contains("\"code\":\"search_not_configured\"", answer);
        }
    }

    [Fact]
    public async Task OriginFormRequest_IsRefused()
    {
        var (client, stream) = await ConnectProxyAsync();
        using (client)
        {
            await stream.WriteAsync("GET /x HTTP/1.1\r\nHost: origin.test\r\n\r\n"u8.ToArray(), Ct);
            Assert.StartsWith("HTTP/1.1 400", await ReadToEndAsync(stream));
        }
        Assert.Empty(_agent.EgressOpens);
    }
}
