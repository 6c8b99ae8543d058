using System.Net;
using System.Net.NetworkInformation;
using System.Net.Sockets;

namespace SandboxVM.Egress;

/// <summary>
/// The addresses of the host the gateway runs on (every address on every interface, public ones
/// included). A sandbox must not reach the host's own services through them, whatever range they are
/// in: the policy denies them unless an address or CIDR allow rule covers them.
/// </summary>
public sealed class HostAddresses
{
    // Interfaces change rarely; a request costs a dictionary lookup, a refresh a netlink dump (well under 1 ms).
    private static readonly TimeSpan _maxAge = TimeSpan.FromSeconds(5);

    private readonly Func<IEnumerable<IPAddress>>? _read;
    private volatile Snapshot _snapshot;

    private HostAddresses(Func<IEnumerable<IPAddress>>? read, IEnumerable<IPAddress> initial)
    {
        _read = read;
        _snapshot = new Snapshot(Normalize(initial), Environment.TickCount64);
    }

    /// <summary>
    /// This machine's interface addresses, read again at most every 5 s and as soon as the system reports
    /// an address change.
    /// </summary>
    public static HostAddresses System { get; } = CreateSystem();

    /// <summary>A fixed set (tests, or a host whose addresses are known up front).</summary>
    public static HostAddresses Fixed(IEnumerable<IPAddress> addresses) => new(null, addresses);

    /// <summary>No host addresses: nothing is denied for being the host's.</summary>
    public static HostAddresses None { get; } = new(null, []);

    /// <summary>The addresses now (IPv6 without scope ids).</summary>
    public IReadOnlyCollection<IPAddress> Current => Fresh().Addresses;

    /// <summary>True when <paramref name="address"/> (also IPv4-mapped) is one of the host's.</summary>
    public bool Contains(IPAddress address)
    {
        ArgumentNullException.ThrowIfNull(address);
        return Fresh().Addresses.Contains(Normal(address));
    }

    private static HostAddresses CreateSystem()
    {
        var system = new HostAddresses(ReadInterfaces, ReadInterfaces());
        NetworkChange.NetworkAddressChanged += (_, _) => system._snapshot = system._snapshot with { Stale = true };
        return system;
    }

    private Snapshot Fresh()
    {
        var snapshot = _snapshot;
        if (_read is null || (!snapshot.Stale && Environment.TickCount64 - snapshot.ReadAt < _maxAge.TotalMilliseconds))
            return snapshot;
        try
        {
            snapshot = new Snapshot(Normalize(_read()), Environment.TickCount64);
        }
        catch (NetworkInformationException)
        {
            // Keep the last list rather than forget the host's addresses.
            snapshot = snapshot with { ReadAt = Environment.TickCount64, Stale = false };
        }
        _snapshot = snapshot;
        return snapshot;
    }

    private static IEnumerable<IPAddress> ReadInterfaces() =>
        NetworkInterface.GetAllNetworkInterfaces()
            .SelectMany(i => i.GetIPProperties().UnicastAddresses)
            .Select(u => u.Address)
            .ToList();

    private static HashSet<IPAddress> Normalize(IEnumerable<IPAddress> addresses) =>
        [.. addresses.Where(a => a.AddressFamily is AddressFamily.InterNetwork or AddressFamily.InterNetworkV6).Select(Normal)];

    private static IPAddress Normal(IPAddress a)
    {
        a = EgressAddressRanges.StripScope(a);
        return a.IsIPv4MappedToIPv6 ? a.MapToIPv4() : a;
    }

    private sealed record Snapshot(HashSet<IPAddress> Addresses, long ReadAt, bool Stale = false);
}
