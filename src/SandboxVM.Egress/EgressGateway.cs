using System.Diagnostics;
using System.Diagnostics.Metrics;
using System.Globalization;
using System.Net;
using System.Net.Sockets;
using System.Text;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;

namespace SandboxVM.Egress;

/// <summary>Settings of an <see cref="EgressGateway"/>.</summary>
public sealed class EgressGatewayOptions
{
    /// <summary>Longest time for the TCP connection (and, through a proxy, its CONNECT answer), over all addresses tried.</summary>
    public TimeSpan ConnectTimeout { get; set; } = TimeSpan.FromSeconds(10);

    /// <summary>Longest time for resolving the host name.</summary>
    public TimeSpan ResolveTimeout { get; set; } = TimeSpan.FromSeconds(5);

    /// <summary>
    /// Proxy the host must use (<see cref="UpstreamProxy.FromEnvironment"/> reads <c>HTTPS_PROXY</c>/<c>NO_PROXY</c>);
    /// null connects directly. The gateway never reads the environment by itself.
    /// </summary>
    public UpstreamProxy? UpstreamProxy { get; set; }

    /// <summary>How many of the checked addresses are tried, in resolver order, before giving up (at least 1).</summary>
    public int MaxConnectAttempts { get; set; } = 3;

    /// <summary>Connections one sandbox may have open (or being opened) at once; more are denied <c>too_many_connections</c>.</summary>
    public int MaxConnectionsPerSandbox { get; set; } = 64;

    /// <summary>
    /// Connection requests one sandbox may make per minute (a token bucket that refills evenly over the
    /// minute, so a burst of this size is allowed); more are denied <c>rate_limited</c>. Denied requests
    /// count too: a sandbox cannot make the host resolve names without bound.
    /// </summary>
    public int MaxConnectionsPerMinutePerSandbox { get; set; } = 600;

    /// <summary>
    /// Bytes per second one sandbox may move through all its connections together, both directions
    /// counted; a burst of one second's worth is allowed, beyond that reads and writes are paced (the
    /// remote side meets TCP back-pressure). Zero: no limit.
    /// </summary>
    public long MaxBytesPerSecondPerSandbox { get; set; } = 16L << 20;

    /// <summary>The clock of the per-minute and per-second limits and of the resolve and connect timeouts (tests inject one).</summary>
    public TimeProvider TimeProvider { get; set; } = TimeProvider.System;
}

/// <summary>
/// The host side of a sandbox's way out: decides each request with an <see cref="EgressPolicy"/> (resolving
/// the name once), then connects to exactly a checked address, directly or through the upstream proxy. Every
/// decision is logged and counted (meter <see cref="EgressMetrics.MeterName"/>). Thread-safe.
/// </summary>
public sealed partial class EgressGateway
{
    private const int MaxProxyHeadBytes = 16 * 1024;

    private readonly EgressGatewayOptions _options;
    private readonly ILogger _logger;
    private readonly IEgressResolver _resolver;
    private readonly EgressInstruments _instruments;
    private readonly System.Collections.Concurrent.ConcurrentDictionary<string, SandboxBudget> _budgets = new(StringComparer.Ordinal);

    /// <param name="policy">What may be reached.</param>
    /// <param name="options">Timeouts and upstream proxy; defaults when null.</param>
    /// <param name="logger">Where decisions go; none when null.</param>
    /// <param name="resolver">Name resolution; the system resolver when null.</param>
    /// <param name="meter">Meter for the instruments; <see cref="EgressMetrics.SharedMeter"/> when null.</param>
    public EgressGateway(EgressPolicy policy, EgressGatewayOptions? options = null, ILogger? logger = null, IEgressResolver? resolver = null, Meter? meter = null)
    {
        ArgumentNullException.ThrowIfNull(policy);
        Policy = policy;
        _options = options ?? new EgressGatewayOptions();
        ArgumentOutOfRangeException.ThrowIfLessThanOrEqual(_options.ConnectTimeout, TimeSpan.Zero, nameof(options));
        ArgumentOutOfRangeException.ThrowIfLessThanOrEqual(_options.ResolveTimeout, TimeSpan.Zero, nameof(options));
        ArgumentOutOfRangeException.ThrowIfLessThan(_options.MaxConnectAttempts, 1, nameof(options));
        ArgumentOutOfRangeException.ThrowIfLessThan(_options.MaxConnectionsPerSandbox, 1, nameof(options));
        ArgumentOutOfRangeException.ThrowIfLessThan(_options.MaxConnectionsPerMinutePerSandbox, 1, nameof(options));
        ArgumentOutOfRangeException.ThrowIfNegative(_options.MaxBytesPerSecondPerSandbox, nameof(options));
        _logger = logger ?? NullLogger.Instance;
        _resolver = resolver ?? SystemDnsResolver.Instance;
        _instruments = new EgressInstruments(meter ?? EgressMetrics.SharedMeter);
    }

    public EgressPolicy Policy { get; }

    /// <summary>The policy's decision on a request (resolving the name), without connecting, logging or counting.</summary>
    public Task<EgressDecision> EvaluateAsync(EgressRequest request, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(request);
        return Policy.EvaluateAsync(request.Host, request.Port, _resolver, _options.ResolveTimeout, _options.TimeProvider, cancellationToken);
    }

    /// <summary>
    /// Decides and, when allowed, connects. Never throws for a denial or a failed connection (see
    /// <see cref="EgressConnection.Decision"/>); throws <see cref="OperationCanceledException"/> only when
    /// <paramref name="cancellationToken"/> is cancelled. The caller disposes the result.
    /// </summary>
    public async Task<EgressConnection> ConnectAsync(EgressRequest request, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(request);
        var budget = _budgets.GetOrAdd(request.SandboxId, _ => new SandboxBudget());
        if (budget.TryOpen(_options, out var refusal) is { } limited)
            return Finish(request, new EgressConnection(EgressDecision.Refused(limited, request.Host, request.Port, refusal!), null, null, false), "none");
        EgressConnection connection;
        try
        {
            connection = await ConnectWithinBudgetAsync(request, budget, cancellationToken);
        }
        catch
        {
            budget.Close();
            throw;
        }
        // An open connection gives its place back when it closes (its stream's close callback).
        if (connection.Stream is null)
            budget.Close();
        return connection;
    }

    /// <summary>
    /// Forgets a sandbox's limits (its VM has ended). Connections it still has open release nothing
    /// afterwards; a sandbox id is never reused.
    /// </summary>
    public void Forget(string sandboxId) => _budgets.TryRemove(sandboxId, out _);

    private async Task<EgressConnection> ConnectWithinBudgetAsync(EgressRequest request, SandboxBudget budget, CancellationToken cancellationToken)
    {
        var decision = await EvaluateAsync(request, cancellationToken);
        if (!decision.Allowed)
            return Finish(request, new EgressConnection(decision, null, null, false), "none");

        // The connect timeout runs on the options' clock, so a test drives it instead of waiting it out.
        using var timeout = new CancellationTokenSource(_options.ConnectTimeout, _options.TimeProvider);
        using var deadline = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken, timeout.Token);
        var proxy = _options.UpstreamProxy;
        EgressDecision failure = decision;
        var attempts = decision.Addresses.Take(_options.MaxConnectAttempts).ToArray();
        foreach (var address in attempts)
        {
            var viaProxy = proxy is not null && !proxy.Bypasses(decision.Host, address, decision.Port);
            var route = viaProxy ? "proxy" : "direct";
            Socket? socket = null;
            try
            {
                socket = viaProxy
                    ? await ConnectViaProxyAsync(proxy!, address, decision.Port, deadline.Token)
                    : await ConnectDirectAsync(address, decision.Port, deadline.Token);
                var connected = decision.WithOutcome(true, EgressReason.Allowed, address,
                    $"egress to {EgressPolicy.Describe(decision.Host, decision.Port, address)} allowed ({route})");
                var started = Stopwatch.GetTimestamp();
                var sock = socket;
                var stream = new CountingStream(new NetworkStream(socket, ownsSocket: true), (up, down) =>
                {
                    budget.Close();
                    Closed(request, connected, up, down, Stopwatch.GetElapsedTime(started));
                }, _options.MaxBytesPerSecondPerSandbox > 0 ? bytes => budget.Spend(bytes, _options) : null, _options.TimeProvider);
                socket = null;
                _instruments.Active.Add(1);
                return Finish(request, new EgressConnection(connected, stream, sock, viaProxy), route);
            }
            catch (OperationCanceledException) when (cancellationToken.IsCancellationRequested)
            {
                throw;
            }
            catch (OperationCanceledException)
            {
                failure = decision.WithOutcome(false, EgressReason.ConnectTimeout, address,
                    $"egress to {EgressPolicy.Describe(decision.Host, decision.Port, address)} failed (connect_timeout): no connection within {_options.ConnectTimeout.TotalSeconds:0.###} s ({route})");
                break;
            }
            catch (ProxyException e)
            {
                failure = decision.WithOutcome(false, EgressReason.UpstreamProxyFailed, address,
                    $"egress to {EgressPolicy.Describe(decision.Host, decision.Port, address)} failed (upstream_proxy_failed): {e.Message}");
            }
            catch (Exception e) when (e is SocketException or IOException)
            {
                var reason = viaProxy ? EgressReason.UpstreamProxyFailed : EgressReason.ConnectFailed;
                var what = e is SocketException se ? se.SocketErrorCode.ToString() : e.Message;
                failure = decision.WithOutcome(false, reason, address,
                    $"egress to {EgressPolicy.Describe(decision.Host, decision.Port, address)} failed ({reason.ToCode()}): "
                    + (viaProxy ? $"upstream proxy {proxy!.Host}:{proxy.Port}: {what}" : what));
            }
            finally
            {
                socket?.Dispose();
            }
        }

        return Finish(request, new EgressConnection(failure, null, null, false), proxy is null ? "direct" : "proxy");
    }

    private static async Task<Socket> ConnectDirectAsync(IPAddress address, int port, CancellationToken cancellationToken)
    {
        // The same destination either way; an IPv6 socket may be v6-only and refuse a mapped address.
        if (address.IsIPv4MappedToIPv6)
            address = address.MapToIPv4();
        var socket = new Socket(address.AddressFamily, SocketType.Stream, ProtocolType.Tcp) { NoDelay = true };
        try
        {
            await socket.ConnectAsync(new IPEndPoint(address, port), cancellationToken);
            return socket;
        }
        catch
        {
            socket.Dispose();
            throw;
        }
    }

    /// <summary>TCP to the proxy, then <c>CONNECT address:port</c> (the checked address, never the name) and a 2xx answer.</summary>
    private static async Task<Socket> ConnectViaProxyAsync(UpstreamProxy proxy, IPAddress address, int port, CancellationToken cancellationToken)
    {
        var socket = IPAddress.TryParse(proxy.Host, out var proxyAddress)
            ? new Socket(proxyAddress.AddressFamily, SocketType.Stream, ProtocolType.Tcp)
            : new Socket(SocketType.Stream, ProtocolType.Tcp);
        socket.NoDelay = true;
        try
        {
            if (proxyAddress is not null)
                await socket.ConnectAsync(new IPEndPoint(proxyAddress, proxy.Port), cancellationToken);
            else
                await socket.ConnectAsync(proxy.Host, proxy.Port, cancellationToken);

            var a = EgressAddressRanges.StripScope(address);
            if (a.IsIPv4MappedToIPv6)
                a = a.MapToIPv4();
            var target = a.AddressFamily == AddressFamily.InterNetworkV6 ? $"[{a}]:{port}" : $"{a}:{port}";
            var head = new StringBuilder()
                .Append(CultureInfo.InvariantCulture, $"CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n");
            if (proxy.ProxyAuthorization is { } auth)
                head.Append(CultureInfo.InvariantCulture, $"Proxy-Authorization: {auth}\r\n");
            head.Append("\r\n");

            await using var ns = new NetworkStream(socket, ownsSocket: false);
            await ns.WriteAsync(Encoding.ASCII.GetBytes(head.ToString()), cancellationToken);

            // Byte by byte up to the blank line, so nothing the remote side sends after it is consumed here.
            var response = new List<byte>(256);
            var one = new byte[1];
            while (!EndsWithBlankLine(response))
            {
                if (response.Count >= MaxProxyHeadBytes)
                    throw new ProxyException($"upstream proxy {proxy.Host}:{proxy.Port} sent more than {MaxProxyHeadBytes} bytes of headers");
                if (await ns.ReadAsync(one, cancellationToken) == 0)
                    throw new ProxyException($"upstream proxy {proxy.Host}:{proxy.Port} closed the connection before answering CONNECT");
                response.Add(one[0]);
            }

            var statusLine = Encoding.ASCII.GetString(response.ToArray()).Split("\r\n", 2)[0];
            var parts = statusLine.Split(' ', 3);
            if (parts.Length < 2 || !parts[0].StartsWith("HTTP/1.", StringComparison.Ordinal)
                || !int.TryParse(parts[1], NumberStyles.None, CultureInfo.InvariantCulture, out var status))
                throw new ProxyException($"upstream proxy {proxy.Host}:{proxy.Port} answered CONNECT with '{Printable(statusLine)}'");
            if (status is < 200 or > 299)
                throw new ProxyException($"upstream proxy {proxy.Host}:{proxy.Port} refused CONNECT {target}: {Printable(statusLine)}");
            return socket;
        }
        catch
        {
            socket.Dispose();
            throw;
        }

        static bool EndsWithBlankLine(List<byte> b) =>
            b.Count >= 4 && b[^4] == '\r' && b[^3] == '\n' && b[^2] == '\r' && b[^1] == '\n';

        static string Printable(string s) => new(s.Take(200).Select(c => c is < ' ' or > '~' ? '?' : c).ToArray());
    }

    private EgressConnection Finish(EgressRequest request, EgressConnection connection, string route)
    {
        var d = connection.Decision;
        var outcome = d.Allowed ? "allowed" : d.Reason.IsPolicyDenial() ? "denied" : "failed";
        _instruments.Connections.Add(1,
            new KeyValuePair<string, object?>(EgressMetrics.DecisionTag, outcome),
            new KeyValuePair<string, object?>(EgressMetrics.ReasonTag, d.ReasonCode));
        LogDecision(_logger, request.SandboxId, d.Host, d.Port, d.Address?.ToString() ?? "-", outcome, d.ReasonCode, route, d.Message);
        return connection;
    }

    private void Closed(EgressRequest request, EgressDecision decision, long up, long down, TimeSpan duration)
    {
        _instruments.Active.Add(-1);
        _instruments.BytesUp.Add(up);
        _instruments.BytesDown.Add(down);
        LogClosed(_logger, request.SandboxId, decision.Host, decision.Port, decision.Address?.ToString() ?? "-", up, down, (long)duration.TotalMilliseconds);
    }

    [LoggerMessage(Level = LogLevel.Information,
        Message = "egress sandbox {SandboxId} to {Host}:{Port} address {Address}: {Decision} ({Reason}, route {Route}): {Detail}")]
    private static partial void LogDecision(ILogger logger, string sandboxId, string host, int port, string address, string decision, string reason, string route, string detail);

    [LoggerMessage(Level = LogLevel.Information,
        Message = "egress sandbox {SandboxId} to {Host}:{Port} address {Address} closed: {BytesUp} bytes up, {BytesDown} bytes down, {DurationMs} ms")]
    private static partial void LogClosed(ILogger logger, string sandboxId, string host, int port, string address, long bytesUp, long bytesDown, long durationMs);

    private sealed class ProxyException(string message) : Exception(message);

    /// <summary>One sandbox's open connections, its per-minute connection bucket and its bandwidth bucket.</summary>
    private sealed class SandboxBudget
    {
        private readonly Lock _lock = new();
        private readonly TokenBucket _connections = new();
        private readonly TokenBucket _bytes = new();
        private int _open;

        /// <summary>Counts a new connection, or says which limit refuses it (and why, for the guest).</summary>
        public EgressReason? TryOpen(EgressGatewayOptions options, out string? why)
        {
            lock (_lock)
            {
                int perMinute = options.MaxConnectionsPerMinutePerSandbox;
                if (_connections.Refill(perMinute, perMinute / 60.0, options.TimeProvider) < 1)
                {
                    why = $"more than {perMinute} connection requests in a minute from this sandbox";
                    return EgressReason.RateLimited;
                }
                _connections.Tokens -= 1;
                if (_open >= options.MaxConnectionsPerSandbox)
                {
                    why = $"this sandbox already has {_open} connections open (at most {options.MaxConnectionsPerSandbox})";
                    return EgressReason.TooManyConnections;
                }
                _open++;
                why = null;
                return null;
            }
        }

        /// <summary>
        /// Takes <paramref name="bytes"/> from the sandbox's bandwidth bucket (one second's worth deep,
        /// refilled at the limit); returns how long the caller waits for the debt to be paid off.
        /// </summary>
        public TimeSpan Spend(long bytes, EgressGatewayOptions options)
        {
            lock (_lock)
            {
                double rate = options.MaxBytesPerSecondPerSandbox;
                double left = _bytes.Refill(rate, rate, options.TimeProvider) - bytes;
                _bytes.Tokens = left;
                return left >= 0 ? TimeSpan.Zero : TimeSpan.FromSeconds(-left / rate);
            }
        }

        public void Close()
        {
            lock (_lock)
            {
                _open--;
            }
        }
    }

    /// <summary>Tokens that refill evenly up to a capacity (full at first use); may go negative as a debt. Not thread-safe.</summary>
    private sealed class TokenBucket
    {
        private long _refilledAt;

        public double Tokens { get; set; } = double.NaN;

        /// <summary>Adds what <paramref name="perSecond"/> earned since the last call, up to <paramref name="capacity"/>; returns the tokens.</summary>
        public double Refill(double capacity, double perSecond, TimeProvider time)
        {
            long now = time.GetTimestamp();
            Tokens = double.IsNaN(Tokens) ? capacity : Math.Min(capacity, Tokens + time.GetElapsedTime(_refilledAt, now).TotalSeconds * perSecond);
            _refilledAt = now;
            return Tokens;
        }
    }
}
