using System.Net;
using System.Net.Sockets;

namespace SandboxVM.Egress;

/// <summary>
/// Which destinations a sandbox may connect to, built from a template's <c>network.allow</c> and
/// <c>network.deny</c> lists plus the allowed ports. Order of evaluation (first that applies wins):
/// <list type="number">
/// <item>invalid host or port: <c>invalid_request</c>;</item>
/// <item>a deny rule matching the name or any resolved address (and the port, if it names one): <c>denied_by_rule</c>;</item>
/// <item>a cloud metadata name or address: <c>metadata_endpoint</c> (allow rules do not override this);</item>
/// <item>a port not in <see cref="AllowedPorts"/> unless a matching allow rule names that port: <c>port_not_allowed</c>;</item>
/// <item>an address or CIDR allow rule covering the address: allowed (even a non-public address);</item>
/// <item>a non-public address (<see cref="EgressAddressRanges"/>): <c>private_address</c> (a name allow rule does not override this);</item>
/// <item>an address of the host itself (<see cref="HostAddresses"/>, public ones included): <c>private_address</c> too;</item>
/// <item>a public address: allowed when the allow list is empty, otherwise only when a name allow rule matches, else <c>not_in_allow_list</c>.</item>
/// </list>
/// A name resolving to several addresses is allowed only when every address is; the connection then
/// goes to one of those checked addresses, never to a second resolution.
/// </summary>
public sealed class EgressPolicy
{
    /// <summary>Ports allowed when none are given: 80 and 443.</summary>
    public static IReadOnlyList<int> DefaultPorts { get; } = [80, 443];

    private readonly EgressRule[] _allow;
    private readonly EgressRule[] _deny;
    private readonly HashSet<int> _ports;

    private EgressPolicy(EgressRule[] allow, EgressRule[] deny, HashSet<int> ports, HostAddresses host)
    {
        _allow = allow;
        _deny = deny;
        _ports = ports;
        Host = host;
    }

    /// <summary>The host's own addresses, denied like private ones.</summary>
    public HostAddresses Host { get; }

    public IReadOnlyList<EgressRule> AllowRules => _allow;

    public IReadOnlyList<EgressRule> DenyRules => _deny;

    public IReadOnlySet<int> AllowedPorts => _ports;

    /// <summary>
    /// A policy from rule texts (the template's <c>network.allow</c>/<c>network.deny</c>) and the allowed ports
    /// (null: <see cref="DefaultPorts"/>; empty: only ports named by allow rules). Throws
    /// <see cref="FormatException"/> naming the first bad rule, <see cref="ArgumentOutOfRangeException"/> for a bad port.
    /// <paramref name="hostAddresses"/> are the host's own (default: <see cref="HostAddresses.System"/>).
    /// </summary>
    public static EgressPolicy Create(IEnumerable<string>? allow, IEnumerable<string>? deny, IEnumerable<int>? allowedPorts = null,
        HostAddresses? hostAddresses = null)
    {
        var ports = new HashSet<int>(allowedPorts ?? DefaultPorts);
        foreach (var p in ports)
            ArgumentOutOfRangeException.ThrowIfNotEqual(p is >= 1 and <= 65535, true, nameof(allowedPorts));
        return new EgressPolicy(
            (allow ?? []).Select(EgressRule.Parse).ToArray(),
            (deny ?? []).Select(EgressRule.Parse).ToArray(),
            ports,
            hostAddresses ?? HostAddresses.System);
    }

    /// <summary>
    /// Normalizes a requested host: trims, removes IPv6 brackets and one trailing dot, lower-cases; an IP
    /// literal comes back in <paramref name="literal"/>. False when it is neither a valid name nor an address.
    /// </summary>
    public static bool TryNormalizeHost(string? host, out string normalized, out IPAddress? literal)
    {
        literal = null;
        normalized = (host ?? "").Trim().ToLowerInvariant();
        if (normalized.Length > 2 && normalized[0] == '[' && normalized[^1] == ']')
        {
            normalized = normalized[1..^1];
            if (!normalized.Contains(':', StringComparison.Ordinal))
                return false;
        }

        if (normalized.EndsWith('.'))
            normalized = normalized[..^1];
        if (normalized.Length == 0)
            return false;
        if (normalized.Contains(':', StringComparison.Ordinal) || normalized.All(c => c is '.' or (>= '0' and <= '9') or 'x' or (>= 'a' and <= 'f')))
        {
            // Any form the system would read as a number (127.1, 0x7f.1, 2130706433) is taken as that address.
            if (IPAddress.TryParse(normalized, out literal) && !normalized.Contains(']', StringComparison.Ordinal))
            {
                normalized = literal.AddressFamily == AddressFamily.InterNetworkV6
                    ? EgressAddressRanges.StripScope(literal).ToString()
                    : literal.ToString();
                return true;
            }

            literal = null;
            if (normalized.Contains(':', StringComparison.Ordinal))
                return false;
        }

        return HostNames.IsValid(normalized);
    }

    /// <summary>
    /// The checks that need no resolution (validity, deny rules on the name, metadata names, the port).
    /// Null when the request may go on to resolution; otherwise the denial. Assumes a normalized host
    /// (<see cref="TryNormalizeHost"/>) unless <paramref name="literal"/> is given.
    /// </summary>
    public EgressDecision? CheckBeforeResolve(string host, int port, IPAddress? literal = null)
    {
        if (port is < 1 or > 65535)
            return Deny(EgressReason.InvalidRequest, host, port, null, [], $"port {port} is outside 1..65535");
        if (literal is null)
        {
            foreach (var rule in _deny)
            {
                if (rule.MatchesName(host, port))
                    return Deny(EgressReason.DeniedByRule, host, port, null, [], $"deny rule '{rule.Text}' matches");
            }

            if (EgressAddressRanges.IsMetadataName(host))
                return Deny(EgressReason.MetadataEndpoint, host, port, null, [], $"{host} is a cloud metadata endpoint");
        }

        if (!_ports.Contains(port) && !_allow.Any(r => r.Port == port && (!r.IsNameRule || (literal is null && r.MatchesName(host, port)))))
            return Deny(EgressReason.PortNotAllowed, host, port, null, [], $"port {port} is not allowed (allowed: {PortList()})");
        return null;
    }

    /// <summary>
    /// The verdict on <paramref name="addresses"/>, all of which <paramref name="host"/> resolved to (a
    /// literal address is its own single address). Allowed only when every address is; then
    /// <see cref="EgressDecision.Address"/> is the first. Includes <see cref="CheckBeforeResolve"/>.
    /// </summary>
    public EgressDecision CheckAddresses(string host, int port, IReadOnlyList<IPAddress> addresses, bool hostIsLiteral = false)
    {
        ArgumentNullException.ThrowIfNull(addresses);
        if (CheckBeforeResolve(host, port, hostIsLiteral && addresses.Count == 1 ? addresses[0] : null) is { } early)
            return early;
        if (addresses.Count == 0)
            return Deny(EgressReason.ResolveFailed, host, port, null, addresses, $"{host} resolved to no address");

        var nameAllowed = !hostIsLiteral && _allow.Any(r => r.MatchesName(host, port));
        var namePortAllowed = !hostIsLiteral && _allow.Any(r => r.Port == port && r.MatchesName(host, port));
        foreach (var address in addresses)
        {
            if (address.AddressFamily is not (AddressFamily.InterNetwork or AddressFamily.InterNetworkV6))
                return Deny(EgressReason.InvalidRequest, host, port, address, addresses, $"{address} is not an IP address");
            foreach (var rule in _deny)
            {
                if (rule.MatchesAddress(address, port))
                    return Deny(EgressReason.DeniedByRule, host, port, address, addresses, $"deny rule '{rule.Text}' matches {address}");
            }

            if (EgressAddressRanges.IsMetadataAddress(address))
                return Deny(EgressReason.MetadataEndpoint, host, port, address, addresses, $"{address} is a cloud metadata endpoint");

            var addressRule = _allow.FirstOrDefault(r => r.MatchesAddress(address, port));
            if (!_ports.Contains(port) && !namePortAllowed && addressRule?.Port != port)
                return Deny(EgressReason.PortNotAllowed, host, port, address, addresses, $"port {port} is not allowed (allowed: {PortList()})");
            if (addressRule is not null)
                continue;
            if (EgressAddressRanges.ClassifyNonPublic(address) is { } kind)
                return Deny(EgressReason.PrivateAddress, host, port, address, addresses, $"{address} is not a public address: {kind}");
            // The host's public addresses reach its own services as well as loopback does.
            if (Host.Contains(address))
                return Deny(EgressReason.PrivateAddress, host, port, address, addresses, $"{address} is not a public address: an address of this host");
            if (_allow.Length > 0 && !nameAllowed)
                return Deny(EgressReason.NotInAllowList, host, port, address, addresses, "no allow rule matches");
        }

        return new EgressDecision(true, EgressReason.Allowed, host, port, addresses[0], addresses,
            $"egress to {Describe(host, port, addresses[0])} allowed");
    }

    /// <summary>
    /// The whole decision for a request: normalize, the checks before resolution, one resolution (skipped for
    /// an IP literal; failures and timeouts become <c>resolve_failed</c>), then every address. Throws only
    /// <see cref="OperationCanceledException"/> when <paramref name="cancellationToken"/> is cancelled.
    /// </summary>
    public Task<EgressDecision> EvaluateAsync(string host, int port, IEgressResolver resolver, TimeSpan resolveTimeout, CancellationToken cancellationToken) =>
        EvaluateAsync(host, port, resolver, resolveTimeout, TimeProvider.System, cancellationToken);

    /// <summary>As the overload above, with the resolve timeout on <paramref name="time"/>'s clock (tests drive a fake one).</summary>
    public async Task<EgressDecision> EvaluateAsync(string host, int port, IEgressResolver resolver, TimeSpan resolveTimeout, TimeProvider time,
        CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(time);
        ArgumentNullException.ThrowIfNull(resolver);
        if (!TryNormalizeHost(host, out var name, out var literal))
            return Deny(EgressReason.InvalidRequest, Printable(host), port, null, [], "the host is neither a valid name nor an IP address");
        if (CheckBeforeResolve(name, port, literal) is { } early)
            return early;
        if (literal is not null)
            return CheckAddresses(name, port, [literal], hostIsLiteral: true);

        IReadOnlyList<IPAddress> addresses;
        using var timer = new CancellationTokenSource(resolveTimeout, time);
        using var timeout = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken, timer.Token);
        try
        {
            addresses = (await resolver.ResolveAsync(name, timeout.Token)).Distinct().ToArray();
        }
        catch (OperationCanceledException) when (cancellationToken.IsCancellationRequested)
        {
            throw;
        }
        catch (OperationCanceledException)
        {
            return Deny(EgressReason.ResolveFailed, name, port, null, [], $"resolving {name} took longer than {resolveTimeout.TotalSeconds:0.###} s");
        }
#pragma warning disable CA1031 // Any resolver failure is a resolve_failed decision, not an exception for the guest's request.
        catch (Exception e)
#pragma warning restore CA1031
        {
            return Deny(EgressReason.ResolveFailed, name, port, null, [], $"resolving {name} failed: {e.Message}");
        }

        return CheckAddresses(name, port, addresses);
    }

    internal static string Describe(string host, int port, IPAddress? address)
    {
        var hostPort = host.Contains(':', StringComparison.Ordinal) ? $"[{host}]:{port}" : $"{host}:{port}";
        return address is null || address.ToString() == host ? hostPort : $"{hostPort} ({address})";
    }

    private static EgressDecision Deny(EgressReason reason, string host, int port, IPAddress? address, IReadOnlyList<IPAddress> addresses, string why) =>
        new(false, reason, host, port, address, addresses, $"egress to {Describe(host, port, address)} denied ({reason.ToCode()}): {why}");

    private static string Printable(string? host)
    {
        var h = host ?? "";
        h = new string(h.Take(100).Select(c => char.IsControl(c) ? '?' : c).ToArray());
        return h;
    }

    private string PortList() => _ports.Count == 0 ? "none" : string.Join(", ", _ports.Order());
}
