using System.Security.Cryptography;
using System.Text;
using Microsoft.AspNetCore.Http;
using SandboxVM.Server;

namespace SandboxVM.Cluster;

/// <summary>
/// A call one node forwards to another carries the cluster secret and the caller the first node
/// authenticated, never the caller's key: keys are checked once, at the edge.
/// </summary>
internal sealed class ClusterHop(string secret) : ITrustedHop
{
    private readonly byte[] _hash = SHA256.HashData(Encoding.UTF8.GetBytes(secret));

    public const string SecretHeader = "SandboxVM-Cluster-Hop";
    public const string CallerHeader = "SandboxVM-Cluster-Caller";
    public const string AdminHeader = "SandboxVM-Cluster-Admin";
    public const string MaxSandboxesHeader = "SandboxVM-Cluster-Max-Sandboxes";

    /// <summary>Sent by a draining node with new work it hands on: route it as if it had arrived here (once; it is never relayed again).</summary>
    public const string RelayHeader = "SandboxVM-Cluster-Relay";

    /// <summary>The request came from another node (set once <see cref="CallerOf"/> accepted it).</summary>
    public static bool IsHop(HttpContext context) => context.Items.ContainsKey(typeof(ClusterHop));

    /// <summary>A hop to serve here, never forwarded again; a relay from a draining node is routed like a caller's request.</summary>
    public static bool ServeHere(HttpContext context) => IsHop(context) && context.Request.Headers[RelayHeader] != "1";

    public Caller? CallerOf(HttpContext context)
    {
        var headers = context.Request.Headers;
        if (!headers.TryGetValue(SecretHeader, out var presented))
        {
            return null;
        }
        // Hashes compared, so the comparison is fixed-time whatever the length presented.
        byte[] given = SHA256.HashData(Encoding.UTF8.GetBytes(presented.ToString()));
        if (!CryptographicOperations.FixedTimeEquals(given, _hash) || headers[CallerHeader].ToString() is not { Length: > 0 } name)
        {
            return null;
        }
        int? max = int.TryParse(headers[MaxSandboxesHeader], out int n) ? n : null;
        context.Items[typeof(ClusterHop)] = true;
        // Run limits were taken at the edge; the sandbox count is per node, so it goes along.
        return new Caller(name, headers[AdminHeader] == "1", new CallerLimits(max, null, null, null));
    }

    /// <summary>Replaces whatever identity the request had with the hop's.</summary>
    public void Stamp(HttpRequestMessage request, Caller caller, bool relay = false)
    {
        request.Headers.Authorization = null;
        request.Headers.Remove(RelayHeader);
        if (relay)
        {
            request.Headers.TryAddWithoutValidation(RelayHeader, "1");
        }
        request.Headers.Remove(SecretHeader);
        request.Headers.Remove(CallerHeader);
        request.Headers.Remove(AdminHeader);
        request.Headers.Remove(MaxSandboxesHeader);
        request.Headers.TryAddWithoutValidation(SecretHeader, secret);
        request.Headers.TryAddWithoutValidation(CallerHeader, caller.Name);
        if (caller.Admin)
        {
            request.Headers.TryAddWithoutValidation(AdminHeader, "1");
        }
        if (caller.Limits.Sandboxes is int max)
        {
            request.Headers.TryAddWithoutValidation(MaxSandboxesHeader, max.ToString(System.Globalization.CultureInfo.InvariantCulture));
        }
    }
}
