using System.Net;
using System.Net.Sockets;

namespace SandboxVM.Egress;

/// <summary>
/// The built-in view of which addresses are public. Anything that is not ordinary global unicast
/// (private, loopback, link-local, CGNAT, multicast, documentation, benchmarking, reserved, ...) is
/// non-public and denied unless an address allow rule covers it. Cloud metadata endpoints are listed
/// separately: they are denied always.
/// </summary>
public static class EgressAddressRanges
{
    /// <summary>A non-public range: its CIDR and what it is.</summary>
    public sealed record Range(IPNetwork Network, string Kind);

    private static Range R(string cidr, string kind) => new(IPNetwork.Parse(cidr), kind);

    /// <summary>Non-public IPv4 ranges (RFC 6890 and successors), most specific first where they nest.</summary>
    public static IReadOnlyList<Range> IPv4 { get; } =
    [
        R("0.0.0.0/8", "this-network"),
        R("10.0.0.0/8", "private"),
        R("100.64.0.0/10", "carrier-grade NAT"),
        R("127.0.0.0/8", "loopback"),
        R("169.254.0.0/16", "link-local"),
        R("172.16.0.0/12", "private"),
        R("192.0.0.0/24", "IETF protocol assignments"),
        R("192.0.2.0/24", "documentation"),
        R("192.88.99.0/24", "6to4 relay anycast"),
        R("192.168.0.0/16", "private"),
        R("198.18.0.0/15", "benchmarking"),
        R("198.51.100.0/24", "documentation"),
        R("203.0.113.0/24", "documentation"),
        R("224.0.0.0/4", "multicast"),
        R("240.0.0.0/4", "reserved"),
    ];

    /// <summary>
    /// Non-public IPv6 ranges. Besides these, everything outside 2000::/3 (global unicast) is reserved.
    /// IPv4-mapped (::ffff:0:0/96) and NAT64 (64:ff9b::/96) addresses are judged by the IPv4 address they carry.
    /// </summary>
    public static IReadOnlyList<Range> IPv6 { get; } =
    [
        R("::/128", "unspecified"),
        R("::1/128", "loopback"),
        R("::/96", "IPv4-compatible (deprecated)"),
        R("64:ff9b:1::/48", "local-use NAT64"),
        R("100::/64", "discard-only"),
        R("2001::/23", "IETF protocol assignments"),
        R("2001:db8::/32", "documentation"),
        R("2002::/16", "6to4"),
        R("3fff::/20", "documentation"),
        R("5f00::/16", "SRv6 SIDs"),
        R("fc00::/7", "unique-local"),
        R("fe80::/10", "link-local"),
        R("fec0::/10", "site-local (deprecated)"),
        R("ff00::/8", "multicast"),
    ];

    private static readonly IPNetwork _globalUnicast = IPNetwork.Parse("2000::/3");
    private static readonly IPNetwork _nat64 = IPNetwork.Parse("64:ff9b::/96");

    /// <summary>Cloud metadata addresses (GCP/AWS/Azure/OCI, AWS ECS task metadata, AWS IPv6 IMDS, Alibaba).</summary>
    public static IReadOnlyList<IPAddress> MetadataAddresses { get; } =
    [
        IPAddress.Parse("169.254.169.254"),
        IPAddress.Parse("169.254.170.2"),
        IPAddress.Parse("fd00:ec2::254"),
        IPAddress.Parse("100.100.100.200"),
    ];

    /// <summary>Cloud metadata host names (compared after lower-casing and removing a trailing dot).</summary>
    public static IReadOnlyList<string> MetadataNames { get; } =
    [
        "metadata.google.internal",
        "metadata.goog",
        "metadata",
        "instance-data",
        "instance-data.ec2.internal",
    ];

    /// <summary>
    /// Null when <paramref name="address"/> is public; otherwise what it is and the range, e.g.
    /// <c>private (10.0.0.0/8)</c> or <c>loopback (127.0.0.0/8, IPv4-mapped)</c>.
    /// </summary>
    public static string? ClassifyNonPublic(IPAddress address)
    {
        ArgumentNullException.ThrowIfNull(address);
        var a = StripScope(address);
        if (a.AddressFamily == AddressFamily.InterNetwork)
            return ClassifyV4(a);
        if (a.AddressFamily != AddressFamily.InterNetworkV6)
            return "not an IP address";

        if (a.IsIPv4MappedToIPv6)
            return ClassifyV4(a.MapToIPv4()) is { } kind ? kind[..^1] + ", IPv4-mapped)" : null;
        if (_nat64.ContainsBits(a))
            return ClassifyV4(EmbeddedV4(a)) is { } kind ? kind[..^1] + ", NAT64)" : null;
        foreach (var r in IPv6)
        {
            if (r.Network.ContainsBits(a))
                return $"{r.Kind} ({r.Network})";
        }

        return _globalUnicast.ContainsBits(a) ? null : "reserved (outside 2000::/3)";
    }

    /// <summary>True when the address is public (see <see cref="ClassifyNonPublic"/>).</summary>
    public static bool IsPublic(IPAddress address) => ClassifyNonPublic(address) is null;

    /// <summary>True for a cloud metadata address, also IPv4-mapped or NAT64-embedded.</summary>
    public static bool IsMetadataAddress(IPAddress address)
    {
        ArgumentNullException.ThrowIfNull(address);
        var a = StripScope(address);
        if (a.IsIPv4MappedToIPv6)
            a = a.MapToIPv4();
        else if (a.AddressFamily == AddressFamily.InterNetworkV6 && _nat64.ContainsBits(a))
            a = EmbeddedV4(a);
        foreach (var m in MetadataAddresses)
        {
            if (m.Equals(a))
                return true;
        }

        return false;
    }

    /// <summary>True for a cloud metadata host name.</summary>
    public static bool IsMetadataName(string host)
    {
        var h = host.TrimEnd('.').ToLowerInvariant();
        foreach (var n in MetadataNames)
        {
            if (h == n)
                return true;
        }

        return false;
    }

    /// <summary>The address without an IPv6 scope id (so comparisons and range checks see only the bits).</summary>
    internal static IPAddress StripScope(IPAddress a) =>
        a.AddressFamily == AddressFamily.InterNetworkV6 && a.ScopeId != 0 ? new IPAddress(a.GetAddressBytes()) : a;

    private static IPAddress EmbeddedV4(IPAddress v6) => new(v6.GetAddressBytes().AsSpan(12, 4));

    private static string? ClassifyV4(IPAddress a)
    {
        foreach (var r in IPv4)
        {
            if (r.Network.ContainsBits(a))
                return $"{r.Kind} ({r.Network})";
        }

        return null;
    }
}

internal static class NetworkExtensions
{
    /// <summary>
    /// Prefix match on the raw bytes, same family only. (<see cref="IPNetwork.Contains"/> does not match
    /// IPv4-mapped IPv6 addresses against <c>::ffff:0:0/96</c>, which the template's deny list relies on.)
    /// </summary>
    public static bool ContainsBits(this IPNetwork network, IPAddress address)
    {
        if (network.BaseAddress.AddressFamily != address.AddressFamily)
            return false;
        Span<byte> n = stackalloc byte[16];
        Span<byte> a = stackalloc byte[16];
        network.BaseAddress.TryWriteBytes(n, out var len);
        address.TryWriteBytes(a, out _);
        var bits = network.PrefixLength;
        for (var i = 0; i < len && bits > 0; i++, bits -= 8)
        {
            var mask = bits >= 8 ? (byte)0xff : (byte)(0xff << (8 - bits));
            if ((n[i] & mask) != (a[i] & mask))
                return false;
        }

        return true;
    }
}
