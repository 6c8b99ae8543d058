using System.Net;

namespace SandboxVM.Egress;

/// <summary>The verdict on one destination: allowed, or not with a <see cref="Reason"/> and a message naming host, address and port.</summary>
public sealed class EgressDecision
{
    internal EgressDecision(bool allowed, EgressReason reason, string host, int port, IPAddress? address, IReadOnlyList<IPAddress> addresses, string message)
    {
        Allowed = allowed;
        Reason = reason;
        Host = host;
        Port = port;
        Address = address;
        Addresses = addresses;
        Message = message;
    }

    /// <summary>True when the destination may be (for a gateway: has been) connected to.</summary>
    public bool Allowed { get; }

    public EgressReason Reason { get; }

    /// <summary>Stable snake_case code of <see cref="Reason"/> (<c>allowed</c>, <c>private_address</c>, ...).</summary>
    public string ReasonCode => Reason.ToCode();

    /// <summary>The host as asked for (normalized: lower case, no trailing dot, no brackets).</summary>
    public string Host { get; }

    public int Port { get; }

    /// <summary>
    /// The address the decision is about: when allowed, the checked address to connect to (for a gateway
    /// connection, the one actually connected); when denied, the offending address; null when no address is
    /// known (denied by name, resolve failed, invalid request).
    /// </summary>
    public IPAddress? Address { get; }

    /// <summary>Every address the host resolved to (all of them were checked); empty when not resolved.</summary>
    public IReadOnlyList<IPAddress> Addresses { get; }

    /// <summary>One line for people, e.g. <c>egress to example.com:443 (10.1.2.3) denied: 10.1.2.3 is a private address (10.0.0.0/8)</c>.</summary>
    public string Message { get; }

    /// <summary>A request refused before the policy looked at it (a per-sandbox limit).</summary>
    internal static EgressDecision Refused(EgressReason reason, string host, int port, string why) =>
        new(false, reason, host, port, null, [], $"egress to {EgressPolicy.Describe(host, port, null)} denied ({reason.ToCode()}): {why}");

    /// <summary>The same decision with another outcome (a connection failure after the policy allowed it).</summary>
    internal EgressDecision WithOutcome(bool allowed, EgressReason reason, IPAddress? address, string message) =>
        new(allowed, reason, Host, Port, address, Addresses, message);

    public override string ToString() => Message;
}
