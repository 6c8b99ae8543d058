using System.Diagnostics.Metrics;
using System.Net;
using System.Net.Sockets;
using System.Text;
using Microsoft.Extensions.Time.Testing;
using SandboxVM.Testing;

namespace SandboxVM.Egress.Tests;

[Trait("tier", "unit")]
public sealed class EgressGatewayTests : IDisposable
{
    // Each test has its own meter instance (same name), so parallel tests do not see each other's measurements.
    private readonly Meter _meter = new(EgressMetrics.MeterName);
    private readonly MeterCapture _metrics;
    private readonly CapturingLogger _logger = new();

    public EgressGatewayTests()
    {
        _metrics = new MeterCapture(_meter);
    }

    public void Dispose()
    {
        _metrics.Dispose();
        _meter.Dispose();
    }

    private static CancellationToken Ct => TestContext.Current.CancellationToken;

    private EgressGateway Gateway(EgressPolicy policy, MapResolver? resolver = null, EgressGatewayOptions? options = null) =>
        new(policy, options, _logger, resolver ?? new MapResolver(), _meter);

    private static EgressPolicy AllowLoopback(params int[] ports) => EgressPolicy.Create(["127.0.0.1"], [], ports);

    private static async Task<string> RoundTripAsync(Stream s, string text)
    {
        var bytes = Encoding.ASCII.GetBytes(text);
        await s.WriteAsync(bytes, Ct);
        var got = new byte[bytes.Length];
        await s.ReadExactlyAsync(got, Ct);
        return Encoding.ASCII.GetString(got);
    }

    [Fact]
    public async Task An_allowed_connection_round_trips_bytes_and_counts_them()
    {
        await using var echo = new LoopbackTcpServer();
        var resolver = new MapResolver().Add("echo.test", "127.0.0.1");
        var gateway = Gateway(AllowLoopback(echo.Port), resolver);

        await using (var conn = await gateway.ConnectAsync(new EgressRequest("sb-1", "echo.test", echo.Port), Ct))
        {
            Assert.True(conn.IsConnected, conn.Decision.Message);
            Assert.True(conn.Decision.Allowed);
            Assert.Equal(IPAddress.Loopback, conn.Decision.Address);
            Assert.False(conn.ViaUpstreamProxy);
            Assert.Equal("hello", await RoundTripAsync(conn.Stream!, "hello"));
            Assert.Equal("0123456789", await RoundTripAsync(conn.Stream!, "0123456789"));
            Assert.Equal(15, conn.BytesUp);
            Assert.Equal(15, conn.BytesDown);
            Assert.Equal(1, _metrics.Sum(EgressMetrics.ActiveConnections));
        }

        Assert.Equal(1, echo.Accepted);
        Assert.Equal(1, _metrics.Sum(EgressMetrics.Connections, ("decision", "allowed"), ("reason", "allowed")));
        Assert.Equal(15, _metrics.Sum(EgressMetrics.BytesUp));
        Assert.Equal(15, _metrics.Sum(EgressMetrics.BytesDown));
        Assert.Equal(0, _metrics.Sum(EgressMetrics.ActiveConnections));

        var decision = Assert.Single(_logger.Entries, e => e.Message.Contains("allowed (allowed", StringComparison.Ordinal));
        Assert.Equal("sb-1", decision.Values["SandboxId"]);
        Assert.Equal("echo.test", decision.Values["Host"]);
        Assert.Equal(echo.Port, decision.Values["Port"]);
        Assert.Equal("127.0.0.1", decision.Values["Address"]);
        var closed = Assert.Single(_logger.Entries, e => e.Message.Contains("closed", StringComparison.Ordinal));
        Assert.Equal(15L, closed.Values["BytesUp"]);
        Assert.Equal(15L, closed.Values["BytesDown"]);
        Assert.Equal("sb-1", closed.Values["SandboxId"]);
    }

    [Fact]
    public async Task A_sandbox_gets_at_most_its_limit_of_open_connections_and_a_closed_one_frees_a_place()
    {
        await using var echo = new LoopbackTcpServer();
        var gateway = Gateway(AllowLoopback(echo.Port), options: new EgressGatewayOptions { MaxConnectionsPerSandbox = 2 });
        var request = new EgressRequest("sb-limit", "127.0.0.1", echo.Port);

        // A request the policy denies holds no place.
        await using (var denied = await gateway.ConnectAsync(new EgressRequest("sb-limit", "127.0.0.1", echo.Port + 1), Ct))
        {
            Assert.Equal(EgressReason.PortNotAllowed, denied.Decision.Reason);
        }
        var first = await gateway.ConnectAsync(request, Ct);
        await using var second = await gateway.ConnectAsync(request, Ct);
        Assert.True(first.IsConnected && second.IsConnected);

        await using (var third = await gateway.ConnectAsync(request, Ct))
        {
            Assert.False(third.IsConnected);
            Assert.Equal(EgressReason.TooManyConnections, third.Decision.Reason);
            Assert.Equal("too_many_connections", third.Decision.ReasonCode);
            Assert.Contains("2 connections open", third.Decision.Message);
        }
        // Another sandbox has its own limit.
        await using (var other = await gateway.ConnectAsync(new EgressRequest("sb-other", "127.0.0.1", echo.Port), Ct))
        {
            Assert.True(other.IsConnected, other.Decision.Message);
        }

        await first.DisposeAsync();
        await using var again = await gateway.ConnectAsync(request, Ct);
        Assert.True(again.IsConnected, again.Decision.Message);
        Assert.Equal(1, _metrics.Sum(EgressMetrics.Connections, ("decision", "denied"), ("reason", "too_many_connections")));
    }

    [Fact]
    public async Task A_sandbox_making_connections_faster_than_its_rate_is_denied_until_the_bucket_refills()
    {
        await using var echo = new LoopbackTcpServer();
        var time = new FakeTimeProvider();
        var gateway = Gateway(AllowLoopback(echo.Port), options: new EgressGatewayOptions { MaxConnectionsPerMinutePerSandbox = 3, TimeProvider = time });
        var request = new EgressRequest("sb-rate", "127.0.0.1", echo.Port);

        for (int i = 0; i < 3; i++)
        {
            await using var ok = await gateway.ConnectAsync(request, Ct);
            Assert.True(ok.IsConnected, ok.Decision.Message);
        }
        await using (var limited = await gateway.ConnectAsync(request, Ct))
        {
            Assert.Equal(EgressReason.RateLimited, limited.Decision.Reason);
            Assert.Contains("more than 3 connection requests in a minute", limited.Decision.Message);
        }

        // Three per minute: one more every 20 s.
        time.Advance(TimeSpan.FromSeconds(21));
        await using (var refilled = await gateway.ConnectAsync(request, Ct))
        {
            Assert.True(refilled.IsConnected, refilled.Decision.Message);
        }
        await using (var limited = await gateway.ConnectAsync(request, Ct))
        {
            Assert.Equal(EgressReason.RateLimited, limited.Decision.Reason);
        }
        Assert.Equal(2, _metrics.Sum(EgressMetrics.Connections, ("decision", "denied"), ("reason", "rate_limited")));
    }

    [Fact]
    public async Task A_sandbox_moving_more_than_its_bandwidth_is_paced_not_cut()
    {
        byte[] payload = System.Security.Cryptography.RandomNumberGenerator.GetBytes(192 * 1024);
        await using var server = new LoopbackTcpServer(async (client, ct) =>
        {
            await client.GetStream().WriteAsync(payload, ct);
            client.Client.Shutdown(SocketShutdown.Send);
        });
        // 64 KiB/s: the first second's worth may burst, the other 128 KiB take about two seconds.
        var gateway = Gateway(AllowLoopback(server.Port), options: new EgressGatewayOptions { MaxBytesPerSecondPerSandbox = 64 * 1024 });
        var clock = System.Diagnostics.Stopwatch.StartNew();

        await using var conn = await gateway.ConnectAsync(new EgressRequest("sb-bandwidth", "127.0.0.1", server.Port), Ct);
        var received = new MemoryStream();
        await conn.Stream!.CopyToAsync(received, Ct);

        Assert.True(payload.AsSpan().SequenceEqual(received.ToArray()), "the paced bytes differ");
        Assert.True(clock.Elapsed >= TimeSpan.FromSeconds(1.5), $"192 KiB at 64 KiB/s arrived in {clock.Elapsed.TotalSeconds:0.00} s");
    }

    [Fact]
    public async Task Disposing_the_stream_twice_reports_the_close_once()
    {
        await using var echo = new LoopbackTcpServer();
        var conn = await Gateway(AllowLoopback(echo.Port)).ConnectAsync(new EgressRequest("sb", "127.0.0.1", echo.Port), Ct);
        await RoundTripAsync(conn.Stream!, "x");
        conn.Stream!.Dispose();
        await conn.DisposeAsync();
        conn.Dispose();
        Assert.Single(_logger.Entries, e => e.Message.Contains("closed", StringComparison.Ordinal));
        Assert.Equal(1, _metrics.Sum(EgressMetrics.BytesUp));
    }

    [Fact]
    public async Task Half_close_sends_FIN_and_reading_goes_on()
    {
        await using var server = new LoopbackTcpServer(async (client, ct) =>
        {
            var s = client.GetStream();
            var total = 0;
            var buf = new byte[1024];
            int n;
            while ((n = await s.ReadAsync(buf, ct)) > 0)
                total += n;
            await s.WriteAsync(Encoding.ASCII.GetBytes($"got {total}"), ct);
        });
        await using var conn = await Gateway(AllowLoopback(server.Port)).ConnectAsync(new EgressRequest("sb", "127.0.0.1", server.Port), Ct);
        await conn.Stream!.WriteAsync("abcd"u8.ToArray(), Ct);
        conn.ShutdownWrite();
        using var reader = new StreamReader(conn.Stream!);
        Assert.Equal("got 4", await reader.ReadToEndAsync(Ct));
    }

    [Fact]
    public async Task A_denied_request_never_opens_a_socket()
    {
        var listener = new TcpListener(IPAddress.Loopback, 0);
        listener.Start();
        try
        {
            var port = ((IPEndPoint)listener.LocalEndpoint).Port;
            var resolver = new MapResolver().Add("private.test", "127.0.0.1").Add("blocked.test", "127.0.0.1");
            var gateway = Gateway(EgressPolicy.Create([], ["blocked.test"], [port]), resolver);

            // Each call returns only after any connection it made was established, so the backlog would hold it.
            var a = await gateway.ConnectAsync(new EgressRequest("sb-2", "private.test", port), Ct);
            var b = await gateway.ConnectAsync(new EgressRequest("sb-2", "127.0.0.1", port), Ct);
            var c = await gateway.ConnectAsync(new EgressRequest("sb-2", "blocked.test", port), Ct);
            var d = await gateway.ConnectAsync(new EgressRequest("sb-2", "127.0.0.1", port + 1 > 65535 ? 1 : port + 1), Ct);

            Assert.False(listener.Pending());
            Assert.All(new[] { a, b, c, d }, x => Assert.False(x.IsConnected));
            Assert.All(new[] { a, b, c, d }, x => Assert.Null(x.Stream));
            Assert.Equal(EgressReason.PrivateAddress, a.Decision.Reason);
            Assert.Equal(EgressReason.PrivateAddress, b.Decision.Reason);
            Assert.Equal(EgressReason.DeniedByRule, c.Decision.Reason);
            Assert.Equal(EgressReason.PortNotAllowed, d.Decision.Reason);
            Assert.Equal(1, resolver.Calls); // blocked.test was denied by name, before resolving
            Assert.Equal(2, _metrics.Sum(EgressMetrics.Connections, ("decision", "denied"), ("reason", "private_address")));
            Assert.Equal(1, _metrics.Sum(EgressMetrics.Connections, ("decision", "denied"), ("reason", "denied_by_rule")));
            Assert.Equal(1, _metrics.Sum(EgressMetrics.Connections, ("decision", "denied"), ("reason", "port_not_allowed")));
            var log = Assert.Single(_logger.Entries, e => Equals(e.Values.GetValueOrDefault("Host"), "private.test"));
            Assert.Equal("private_address", log.Values["Reason"]);
            Assert.Equal("denied", log.Values["Decision"]);
            Assert.Equal("127.0.0.1", log.Values["Address"]);
            Assert.Equal("sb-2", log.Values["SandboxId"]);
        }
        finally
        {
            listener.Stop();
            listener.Dispose();
        }
    }

    [Fact]
    public async Task A_refused_connection_is_a_clean_failure()
    {
        var listener = new TcpListener(IPAddress.Loopback, 0);
        listener.Start();
        var port = ((IPEndPoint)listener.LocalEndpoint).Port;
        listener.Stop();
        listener.Dispose();

        await using var conn = await Gateway(AllowLoopback(port)).ConnectAsync(new EgressRequest("sb", "127.0.0.1", port), Ct);
        Assert.False(conn.IsConnected);
        Assert.False(conn.Decision.Allowed);
        Assert.Equal(EgressReason.ConnectFailed, conn.Decision.Reason);
        Assert.Contains("ConnectionRefused", conn.Decision.Message);
        Assert.Equal(1, _metrics.Sum(EgressMetrics.Connections, ("decision", "failed"), ("reason", "connect_failed")));
    }

    [Fact]
    public async Task Resolve_failure_is_a_clean_failure()
    {
        await using var conn = await Gateway(EgressPolicy.Create([], [])).ConnectAsync(new EgressRequest("sb", "nowhere.test", 443), Ct);
        Assert.Equal(EgressReason.ResolveFailed, conn.Decision.Reason);
        Assert.Equal(1, _metrics.Sum(EgressMetrics.Connections, ("decision", "failed"), ("reason", "resolve_failed")));
    }

    [Fact]
    public async Task A_connect_that_hangs_times_out_cleanly()
    {
        // A listener whose accept queue is full drops further SYNs, so a connect to it hangs (Linux).
        using var listener = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        listener.Bind(new IPEndPoint(IPAddress.Loopback, 0));
        listener.Listen(1);
        var port = ((IPEndPoint)listener.LocalEndPoint!).Port;
        var fillers = new List<Socket>();
        try
        {
            var hung = false;
            for (var i = 0; i < 8 && !hung; i++)
            {
                var s = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
                fillers.Add(s);
                using var cts = new CancellationTokenSource(TimeSpan.FromMilliseconds(300));
                try
                {
                    await s.ConnectAsync(new IPEndPoint(IPAddress.Loopback, port), cts.Token);
                }
                catch (OperationCanceledException)
                {
                    hung = true;
                }
            }

            if (!hung)
                Assert.Skip("this kernel completes connects to a full accept queue");

            var time = new FakeTimeProvider();
            var gateway = Gateway(AllowLoopback(port), options: new EgressGatewayOptions { ConnectTimeout = TimeSpan.FromSeconds(10), TimeProvider = time });
            // The timeout is armed before the connect starts (an IP literal resolves synchronously).
            var connecting = gateway.ConnectAsync(new EgressRequest("sb", "127.0.0.1", port), Ct);
            time.Advance(TimeSpan.FromSeconds(10));
            await using var conn = await connecting.WaitAsync(Eventually.Patience, Ct);
            Assert.Equal(EgressReason.ConnectTimeout, conn.Decision.Reason);
            Assert.Equal(1, _metrics.Sum(EgressMetrics.Connections, ("decision", "failed"), ("reason", "connect_timeout")));
        }
        finally
        {
            foreach (var s in fillers)
                s.Dispose();
        }
    }

    [Fact]
    public async Task Through_the_upstream_proxy_the_CONNECT_names_the_checked_address()
    {
        await using var echo = new LoopbackTcpServer();
        await using var proxy = new FakeConnectProxy();
        var resolver = new MapResolver().Add("echo.test", "127.0.0.1");
        var options = new EgressGatewayOptions { UpstreamProxy = UpstreamProxy.Parse($"http://user:p%40ss@127.0.0.1:{proxy.Port}") };
        var gateway = Gateway(AllowLoopback(echo.Port), resolver, options);

        await using (var conn = await gateway.ConnectAsync(new EgressRequest("sb-3", "echo.test", echo.Port), Ct))
        {
            Assert.True(conn.IsConnected, conn.Decision.Message);
            Assert.True(conn.ViaUpstreamProxy);
            Assert.Equal("through the proxy", await RoundTripAsync(conn.Stream!, "through the proxy"));
        }

        var request = Assert.Single(proxy.Requests);
        Assert.Equal($"CONNECT 127.0.0.1:{echo.Port} HTTP/1.1", request.RequestLine);
        Assert.Equal($"127.0.0.1:{echo.Port}", request.Header("Host"));
        Assert.Equal("Basic " + Convert.ToBase64String("user:p@ss"u8.ToArray()), request.Header("Proxy-Authorization"));
        Assert.Equal(1, echo.Accepted);
        Assert.Contains(_logger.Entries, e => Equals(e.Values.GetValueOrDefault("Route"), "proxy"));
        Assert.Equal(17, _metrics.Sum(EgressMetrics.BytesUp));
    }

    [Fact]
    public async Task The_policy_is_applied_before_the_upstream_proxy()
    {
        await using var proxy = new FakeConnectProxy();
        var resolver = new MapResolver().Add("private.test", "10.0.0.1");
        var options = new EgressGatewayOptions { UpstreamProxy = UpstreamProxy.Parse($"127.0.0.1:{proxy.Port}") };
        await using var conn = await Gateway(EgressPolicy.Create([], []), resolver, options)
            .ConnectAsync(new EgressRequest("sb", "private.test", 443), Ct);
        Assert.Equal(EgressReason.PrivateAddress, conn.Decision.Reason);
        Assert.Equal(0, proxy.Accepted);
    }

    [Fact]
    public async Task A_refusing_upstream_proxy_is_upstream_proxy_failed()
    {
        await using var proxy = new FakeConnectProxy { Answer = "HTTP/1.1 403 Forbidden" };
        var options = new EgressGatewayOptions { UpstreamProxy = UpstreamProxy.Parse($"http://127.0.0.1:{proxy.Port}") };
        await using var conn = await Gateway(AllowLoopback(9), options: options).ConnectAsync(new EgressRequest("sb", "127.0.0.1", 9), Ct);
        Assert.Equal(EgressReason.UpstreamProxyFailed, conn.Decision.Reason);
        Assert.Contains("403 Forbidden", conn.Decision.Message);
        Assert.Equal(1, _metrics.Sum(EgressMetrics.Connections, ("decision", "failed"), ("reason", "upstream_proxy_failed")));
    }

    [Fact]
    public async Task An_unreachable_upstream_proxy_is_upstream_proxy_failed()
    {
        var listener = new TcpListener(IPAddress.Loopback, 0);
        listener.Start();
        var proxyPort = ((IPEndPoint)listener.LocalEndpoint).Port;
        listener.Stop();
        listener.Dispose();
        var options = new EgressGatewayOptions { UpstreamProxy = UpstreamProxy.Parse($"http://127.0.0.1:{proxyPort}") };
        await using var conn = await Gateway(AllowLoopback(9), options: options).ConnectAsync(new EgressRequest("sb", "127.0.0.1", 9), Ct);
        Assert.Equal(EgressReason.UpstreamProxyFailed, conn.Decision.Reason);
        Assert.Contains("upstream proxy", conn.Decision.Message);
    }

    [Fact]
    public async Task A_silent_upstream_proxy_hits_the_connect_timeout()
    {
        var time = new FakeTimeProvider();
        await using var proxy = new FakeConnectProxy { Answer = "" };
        var options = new EgressGatewayOptions
        {
            UpstreamProxy = UpstreamProxy.Parse($"http://127.0.0.1:{proxy.Port}"),
            ConnectTimeout = TimeSpan.FromMinutes(1),
            TimeProvider = time,
        };
        var connecting = Gateway(AllowLoopback(9), options: options).ConnectAsync(new EgressRequest("sb", "127.0.0.1", 9), Ct);
        await Eventually.TrueAsync(() => !proxy.Requests.IsEmpty, () => "the gateway never sent the proxy its CONNECT");
        Assert.False(connecting.IsCompleted, "the gateway gave up before its connect timeout");

        time.Advance(TimeSpan.FromMinutes(1));
        await using var conn = await connecting.WaitAsync(Eventually.Patience, Ct);
        Assert.Equal(EgressReason.ConnectTimeout, conn.Decision.Reason);
        Assert.Contains("no connection within 60 s (proxy)", conn.Decision.Message);
        Assert.Single(proxy.Requests);
    }

    [Fact]
    public async Task Cancelling_the_caller_throws_instead_of_deciding()
    {
        await using var proxy = new FakeConnectProxy { Answer = "" };
        var options = new EgressGatewayOptions { UpstreamProxy = UpstreamProxy.Parse($"http://127.0.0.1:{proxy.Port}") };
        using var cts = CancellationTokenSource.CreateLinkedTokenSource(Ct);
        var connecting = Gateway(AllowLoopback(9), options: options).ConnectAsync(new EgressRequest("sb", "127.0.0.1", 9), cts.Token);
        // Cancelled while it waits on the proxy's answer (not on a timer that may fire before it asks).
        await Eventually.TrueAsync(() => !proxy.Requests.IsEmpty, () => "the gateway never sent the proxy its CONNECT");
        await cts.CancelAsync();
        await Assert.ThrowsAnyAsync<OperationCanceledException>(() => connecting.WaitAsync(Eventually.Patience, Ct));
    }

    [Theory]
    [InlineData("echo.test")]
    [InlineData(".test")]
    [InlineData("127.0.0.0/8")]
    [InlineData("127.0.0.1")]
    [InlineData("*")]
    public async Task NO_PROXY_entries_bypass_the_upstream_proxy(string noProxy)
    {
        await using var echo = new LoopbackTcpServer();
        await using var proxy = new FakeConnectProxy();
        var resolver = new MapResolver().Add("echo.test", "127.0.0.1");
        var options = new EgressGatewayOptions { UpstreamProxy = UpstreamProxy.Parse($"http://127.0.0.1:{proxy.Port}", "example.org, " + noProxy) };
        await using var conn = await Gateway(AllowLoopback(echo.Port), resolver, options).ConnectAsync(new EgressRequest("sb", "echo.test", echo.Port), Ct);
        Assert.True(conn.IsConnected, conn.Decision.Message);
        Assert.False(conn.ViaUpstreamProxy);
        Assert.Equal("direct", await RoundTripAsync(conn.Stream!, "direct"));
        Assert.Equal(0, proxy.Accepted);
    }

    [Fact]
    public async Task An_IPv4_mapped_address_connects_to_the_IPv4_address()
    {
        await using var echo = new LoopbackTcpServer();
        var resolver = new MapResolver().Add("mapped.test", "::ffff:127.0.0.1");
        await using var conn = await Gateway(AllowLoopback(echo.Port), resolver).ConnectAsync(new EgressRequest("sb", "mapped.test", echo.Port), Ct);
        Assert.True(conn.IsConnected, conn.Decision.Message);
        Assert.Equal("mapped", await RoundTripAsync(conn.Stream!, "mapped"));
    }

    [Fact]
    public async Task IPv6_loopback_works_when_the_host_has_it()
    {
        LoopbackTcpServer echo;
        try
        {
            echo = new LoopbackTcpServer(address: IPAddress.IPv6Loopback);
        }
        catch (SocketException)
        {
            Assert.Skip("no IPv6 loopback here");
            return;
        }

        await using (echo)
        {
            var policy = EgressPolicy.Create(["::1"], [], [echo.Port]);
            await using var conn = await Gateway(policy).ConnectAsync(new EgressRequest("sb", "[::1]", echo.Port), Ct);
            Assert.True(conn.IsConnected, conn.Decision.Message);
            Assert.Equal(IPAddress.IPv6Loopback, conn.Decision.Address);
            Assert.Equal("six", await RoundTripAsync(conn.Stream!, "six"));
        }
    }

    [Fact]
    public async Task A_later_checked_address_is_tried_when_the_first_refuses()
    {
        await using var echo = new LoopbackTcpServer();
        // 127.0.0.2 is loopback too, but nothing listens there on this port.
        var resolver = new MapResolver().Add("two.test", "127.0.0.2", "127.0.0.1");
        var policy = EgressPolicy.Create(["127.0.0.0/8"], [], [echo.Port]);
        await using var conn = await Gateway(policy, resolver).ConnectAsync(new EgressRequest("sb", "two.test", echo.Port), Ct);
        Assert.True(conn.IsConnected, conn.Decision.Message);
        Assert.Equal(IPAddress.Loopback, conn.Decision.Address);
    }

    [Fact]
    public void The_meter_name_is_stable() => Assert.Equal("SandboxVM.Egress", EgressMetrics.MeterName);
}
