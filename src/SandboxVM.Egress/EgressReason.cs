namespace SandboxVM.Egress;

/// <summary>Why an egress request was allowed, denied or failed. Each has a stable snake_case code (<see cref="EgressReasonCodes"/>).</summary>
public enum EgressReason
{
    /// <summary><c>allowed</c>: the policy allowed it (and, for a gateway connection, the connection is open).</summary>
    Allowed,

    /// <summary><c>invalid_request</c>: the host is not a valid name or address, or the port is outside 1..65535.</summary>
    InvalidRequest,

    /// <summary><c>denied_by_rule</c>: an explicit deny rule matched the name or a resolved address.</summary>
    DeniedByRule,

    /// <summary><c>metadata_endpoint</c>: a cloud metadata name or address; denied even over an allow rule.</summary>
    MetadataEndpoint,

    /// <summary><c>private_address</c>: a resolved address is not public (private, loopback, link-local, ...) or is the host's own, and no address allow rule covers it.</summary>
    PrivateAddress,

    /// <summary><c>port_not_allowed</c>: the port is not in the allowed ports and no allow rule names it.</summary>
    PortNotAllowed,

    /// <summary><c>not_in_allow_list</c>: the allow list is not empty and no allow rule matched.</summary>
    NotInAllowList,

    /// <summary><c>resolve_failed</c>: the name did not resolve (or resolved to nothing, or timed out).</summary>
    ResolveFailed,

    /// <summary><c>connect_failed</c>: the policy allowed it but the TCP connection failed (refused, unreachable, ...).</summary>
    ConnectFailed,

    /// <summary><c>connect_timeout</c>: the policy allowed it but connecting took longer than the connect timeout.</summary>
    ConnectTimeout,

    /// <summary><c>upstream_proxy_failed</c>: the upstream proxy could not be reached or refused the CONNECT.</summary>
    UpstreamProxyFailed,

    /// <summary><c>too_many_connections</c>: the sandbox already has as many open connections as the gateway allows one sandbox.</summary>
    TooManyConnections,

    /// <summary><c>rate_limited</c>: the sandbox opened more connections in the last minute than the gateway allows one sandbox.</summary>
    RateLimited,
}

/// <summary>The stable codes of <see cref="EgressReason"/>, as used in logs, metrics and answers to the guest.</summary>
public static class EgressReasonCodes
{
    public const string Allowed = "allowed";
    public const string InvalidRequest = "invalid_request";
    public const string DeniedByRule = "denied_by_rule";
    public const string MetadataEndpoint = "metadata_endpoint";
    public const string PrivateAddress = "private_address";
    public const string PortNotAllowed = "port_not_allowed";
    public const string NotInAllowList = "not_in_allow_list";
    public const string ResolveFailed = "resolve_failed";
    public const string ConnectFailed = "connect_failed";
    public const string ConnectTimeout = "connect_timeout";
    public const string UpstreamProxyFailed = "upstream_proxy_failed";
    public const string TooManyConnections = "too_many_connections";
    public const string RateLimited = "rate_limited";

    /// <summary>The code of <paramref name="reason"/>.</summary>
    public static string ToCode(this EgressReason reason) => reason switch
    {
        EgressReason.Allowed => Allowed,
        EgressReason.InvalidRequest => InvalidRequest,
        EgressReason.DeniedByRule => DeniedByRule,
        EgressReason.MetadataEndpoint => MetadataEndpoint,
        EgressReason.PrivateAddress => PrivateAddress,
        EgressReason.PortNotAllowed => PortNotAllowed,
        EgressReason.NotInAllowList => NotInAllowList,
        EgressReason.ResolveFailed => ResolveFailed,
        EgressReason.ConnectFailed => ConnectFailed,
        EgressReason.ConnectTimeout => ConnectTimeout,
        EgressReason.UpstreamProxyFailed => UpstreamProxyFailed,
        EgressReason.TooManyConnections => TooManyConnections,
        EgressReason.RateLimited => RateLimited,
        _ => throw new ArgumentOutOfRangeException(nameof(reason), reason, null),
    };

    /// <summary>
    /// True for the reasons the policy and the per-sandbox limits decide (the guest asked for something it may not have); false for
    /// <see cref="EgressReason.Allowed"/> and for failures of an allowed request (resolve, connect, upstream proxy).
    /// </summary>
    public static bool IsPolicyDenial(this EgressReason reason) => reason is EgressReason.InvalidRequest or EgressReason.DeniedByRule
        or EgressReason.MetadataEndpoint or EgressReason.PrivateAddress or EgressReason.PortNotAllowed or EgressReason.NotInAllowList
        or EgressReason.TooManyConnections or EgressReason.RateLimited;
}
