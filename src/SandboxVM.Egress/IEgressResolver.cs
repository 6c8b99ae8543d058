using System.Net;

namespace SandboxVM.Egress;

/// <summary>Turns a host name into addresses. The gateway asks once per request; tests map names without DNS.</summary>
public interface IEgressResolver
{
    /// <summary>The addresses of <paramref name="host"/>; throws (any exception) or returns none when it does not resolve.</summary>
    Task<IReadOnlyList<IPAddress>> ResolveAsync(string host, CancellationToken cancellationToken);
}

/// <summary>The operating system's resolver (<see cref="Dns.GetHostAddressesAsync(string, CancellationToken)"/>).</summary>
public sealed class SystemDnsResolver : IEgressResolver
{
    public static SystemDnsResolver Instance { get; } = new();

    public async Task<IReadOnlyList<IPAddress>> ResolveAsync(string host, CancellationToken cancellationToken) =>
        await Dns.GetHostAddressesAsync(host, cancellationToken);
}
