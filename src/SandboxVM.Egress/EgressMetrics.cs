using System.Diagnostics.Metrics;

namespace SandboxVM.Egress;

/// <summary>
/// Names of the egress meter and its instruments, for the server's exporter. Instrument names are short
/// because exporters prefix the meter name: <c>connections</c> is scraped as <c>sandboxvm_egress_connections</c>.
/// </summary>
public static class EgressMetrics
{
    /// <summary>The <see cref="Meter"/> name: <c>SandboxVM.Egress</c>.</summary>
    public const string MeterName = "SandboxVM.Egress";

    /// <summary>Counter of connection requests, tagged <see cref="DecisionTag"/> and <see cref="ReasonTag"/>.</summary>
    public const string Connections = "connections";

    /// <summary>Counter of bytes sent by sandboxes to remote hosts (added when a connection closes), unit <c>By</c>.</summary>
    public const string BytesUp = "bytes_up";

    /// <summary>Counter of bytes received from remote hosts (added when a connection closes), unit <c>By</c>.</summary>
    public const string BytesDown = "bytes_down";

    /// <summary>Up-down counter of open connections.</summary>
    public const string ActiveConnections = "active_connections";

    /// <summary>Tag: <c>allowed</c>, <c>denied</c> (by the policy) or <c>failed</c> (allowed, but resolving or connecting failed).</summary>
    public const string DecisionTag = "decision";

    /// <summary>Tag: the reason code (<see cref="EgressReasonCodes"/>).</summary>
    public const string ReasonTag = "reason";

    private static readonly Lazy<Meter> _shared = new(() => new Meter(MeterName));

    /// <summary>The meter gateways use unless given their own.</summary>
    public static Meter SharedMeter => _shared.Value;
}

/// <summary>The instruments of one meter.</summary>
internal sealed class EgressInstruments
{
    public EgressInstruments(Meter meter)
    {
        Connections = meter.CreateCounter<long>(EgressMetrics.Connections, unit: "{connection}", description: "Egress connection requests by decision and reason");
        BytesUp = meter.CreateCounter<long>(EgressMetrics.BytesUp, unit: "By", description: "Bytes sent from sandboxes to remote hosts");
        BytesDown = meter.CreateCounter<long>(EgressMetrics.BytesDown, unit: "By", description: "Bytes received by sandboxes from remote hosts");
        Active = meter.CreateUpDownCounter<long>(EgressMetrics.ActiveConnections, unit: "{connection}", description: "Open egress connections");
    }

    public Counter<long> Connections { get; }

    public Counter<long> BytesUp { get; }

    public Counter<long> BytesDown { get; }

    public UpDownCounter<long> Active { get; }
}
