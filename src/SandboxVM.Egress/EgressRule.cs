using System.Globalization;
using System.Net;
using System.Net.Sockets;

namespace SandboxVM.Egress;

/// <summary>What an <see cref="EgressRule"/> matches.</summary>
public enum EgressRuleKind
{
    /// <summary>Exactly one host name: <c>example.com</c>.</summary>
    Host,

    /// <summary>Every name below a domain (not the domain itself): <c>*.example.com</c>.</summary>
    Wildcard,

    /// <summary>One IP address: <c>93.184.216.34</c>, <c>2001:db8::1</c>.</summary>
    Address,

    /// <summary>A CIDR range: <c>10.0.0.0/8</c>, <c>fc00::/7</c>.</summary>
    Network,
}

/// <summary>
/// One allow or deny entry. Text forms: <c>example.com</c>, <c>*.example.com</c>, an IP address, a CIDR
/// range, each optionally with <c>:port</c> (IPv6 with a port in brackets: <c>[2001:db8::1]:443</c>,
/// <c>[fc00::/7]:443</c>). Without a port the rule matches every port.
/// </summary>
public sealed class EgressRule
{
    private EgressRule(string text, EgressRuleKind kind, string? name, IPAddress? address, IPNetwork? network, int? port)
    {
        Text = text;
        Kind = kind;
        Name = name;
        Address = address;
        Network = network;
        Port = port;
    }

    /// <summary>The rule as written.</summary>
    public string Text { get; }

    public EgressRuleKind Kind { get; }

    /// <summary>The host name (<see cref="EgressRuleKind.Host"/>) or the domain without <c>*.</c> (<see cref="EgressRuleKind.Wildcard"/>).</summary>
    public string? Name { get; }

    public IPAddress? Address { get; }

    public IPNetwork? Network { get; }

    /// <summary>The only port this rule applies to; null for all ports.</summary>
    public int? Port { get; }

    /// <summary>True for <see cref="EgressRuleKind.Host"/> and <see cref="EgressRuleKind.Wildcard"/>.</summary>
    public bool IsNameRule => Kind is EgressRuleKind.Host or EgressRuleKind.Wildcard;

    /// <summary>Parses one rule; throws <see cref="FormatException"/> naming the rule when it is none of the forms.</summary>
    public static EgressRule Parse(string text) =>
        TryParse(text, out var rule, out var error) ? rule : throw new FormatException(error);

    /// <summary>Parses one rule; on failure <paramref name="error"/> says why.</summary>
    public static bool TryParse(string? text, [System.Diagnostics.CodeAnalysis.NotNullWhen(true)] out EgressRule? rule, out string error)
    {
        rule = null;
        error = "";
        var t = (text ?? "").Trim().ToLowerInvariant();
        string body;
        int? port = null;
        if (t.StartsWith('['))
        {
            var close = t.IndexOf(']', StringComparison.Ordinal);
            if (close < 0)
                return Fail(text, "has '[' without ']'", out error);
            body = t[1..close];
            var rest = t[(close + 1)..];
            if (rest.Length > 0)
            {
                if (!rest.StartsWith(':') || !TryParsePort(rest[1..], out var p))
                    return Fail(text, "has something other than ':port' after ']'", out error);
                port = p;
            }

            if (!body.Contains(':', StringComparison.Ordinal))
                return Fail(text, "brackets are only for IPv6 addresses and ranges", out error);
        }
        else
        {
            var colons = t.Count(c => c == ':');
            if (colons == 1)
            {
                var i = t.IndexOf(':', StringComparison.Ordinal);
                if (!TryParsePort(t[(i + 1)..], out var p))
                    return Fail(text, "has a port that is not a number in 1..65535", out error);
                body = t[..i];
                port = p;
            }
            else
            {
                body = t;
            }
        }

        if (body.Length == 0)
            return Fail(text, "is empty", out error);

        if (body.Contains('/', StringComparison.Ordinal))
        {
            if (!IPNetwork.TryParse(body, out var network))
                return Fail(text, "is not a CIDR range (address/prefix with no bits set after the prefix)", out error);
            rule = new EgressRule(text!.Trim(), EgressRuleKind.Network, null, null, network, port);
            return true;
        }

        if (IPAddress.TryParse(body, out var address))
        {
            if (address.AddressFamily == AddressFamily.InterNetworkV6 && address.ScopeId != 0)
                return Fail(text, "has an IPv6 zone id", out error);
            rule = new EgressRule(text!.Trim(), EgressRuleKind.Address, null, address, null, port);
            return true;
        }

        var wildcard = body.StartsWith("*.", StringComparison.Ordinal);
        var name = wildcard ? body[2..] : body;
        if (!HostNames.IsValid(name))
            return Fail(text, "is neither a host name (example.com, *.example.com), an IP address nor a CIDR range", out error);
        rule = new EgressRule(text!.Trim(), wildcard ? EgressRuleKind.Wildcard : EgressRuleKind.Host, name, null, null, port);
        return true;
    }

    /// <summary>True when this rule matches the normalized host name and port (name rules only).</summary>
    public bool MatchesName(string host, int port)
    {
        if (Port is { } p && p != port)
            return false;
        return Kind switch
        {
            EgressRuleKind.Host => string.Equals(host, Name, StringComparison.Ordinal),
            EgressRuleKind.Wildcard => host.Length > Name!.Length + 1 && host.EndsWith("." + Name, StringComparison.Ordinal),
            _ => false,
        };
    }

    /// <summary>
    /// True when this rule matches the address and port (address and range rules only). An IPv4-mapped IPv6
    /// address matches both as written and as the IPv4 address it carries.
    /// </summary>
    public bool MatchesAddress(IPAddress address, int port)
    {
        if (Port is { } p && p != port)
            return false;
        if (IsNameRule)
            return false;
        var a = EgressAddressRanges.StripScope(address);
        if (MatchesExactly(a))
            return true;
        // Not the other way round: ::ffff:0:0/96 must not match every IPv4 address.
        return a.IsIPv4MappedToIPv6 && MatchesExactly(a.MapToIPv4());
    }

    private bool MatchesExactly(IPAddress a) => Kind == EgressRuleKind.Address ? Address!.Equals(a) : Network!.Value.ContainsBits(a);

    public override string ToString() => Text;

    private static bool TryParsePort(string s, out int port) =>
        int.TryParse(s, NumberStyles.None, CultureInfo.InvariantCulture, out port) && port is >= 1 and <= 65535;

    private static bool Fail(string? text, string why, out string error)
    {
        error = $"egress rule '{text}' {why}";
        return false;
    }
}

internal static class HostNames
{
    /// <summary>LDH labels (underscore tolerated), 1..63 each, at most 253 in all; not all digits and dots.</summary>
    public static bool IsValid(string name)
    {
        if (name.Length is 0 or > 253)
            return false;
        var allDigits = true;
        foreach (var label in name.Split('.'))
        {
            if (label.Length is 0 or > 63 || label[0] == '-' || label[^1] == '-')
                return false;
            foreach (var c in label)
            {
                if (!(c is >= 'a' and <= 'z' or >= '0' and <= '9' or '-' or '_'))
                    return false;
                if (c is < '0' or > '9')
                    allDigits = false;
            }
        }

        return !allDigits;
    }
}
