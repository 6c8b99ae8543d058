using System.Net;
using System.Net.Sockets;
using Microsoft.Extensions.Configuration;

namespace SandboxVM.Cluster;

/// <summary>
/// Configuration section "SandboxVM" read by the cluster: without <see cref="Cluster"/> the server is one
/// node on its own and nothing of Orleans starts.
/// </summary>
public sealed class ClusterSettings
{
    /// <summary>The Redis that keeps the membership: <c>redis://HOST:PORT</c> (or StackExchange.Redis' <c>HOST:PORT,options</c>).</summary>
    public string? Cluster { get; set; }

    /// <summary>This node's HTTP API as the other nodes reach it (default: the listen URL, unless that is a wildcard).</summary>
    public string? ClusterAdvertiseUrl { get; set; }

    /// <summary>Orleans' silo-to-silo port (TCP).</summary>
    public int ClusterSiloPort { get; set; } = 11111;

    /// <summary>Orleans' gateway port for external Orleans clients; 0 (the default) opens none: the nodes only talk silo to silo.</summary>
    public int ClusterGatewayPort { get; set; }

    /// <summary>Nodes with the same id (and Redis) form one cluster.</summary>
    public string ClusterId { get; set; } = "sandboxvm";

    /// <summary>
    /// The secret that authenticates a call forwarded from one node to another. Unset: one is made at the
    /// first node's start and kept in the cluster's Redis (whoever can write there controls the cluster anyway).
    /// </summary>
    public string? ClusterSecret { get; set; }

    /// <summary>Orleans' probe timeout; a node that misses <see cref="ClusterMissedProbes"/> probes in a row is declared dead.</summary>
    public double ClusterProbeTimeoutS { get; set; } = 5;

    /// <summary>Missed probes before a node is voted dead (Orleans' default 3).</summary>
    public int ClusterMissedProbes { get; set; } = 3;

    public static ClusterSettings Load(IConfiguration configuration)
    {
        var settings = new ClusterSettings();
        configuration.GetSection("SandboxVM").Bind(settings);
        return settings;
    }

    /// <summary><see cref="Cluster"/> as a StackExchange.Redis configuration string; a clear error for a malformed one.</summary>
    public string RedisConfiguration()
    {
        string value = Cluster ?? throw new InvalidOperationException("no cluster configured");
        if (!value.StartsWith("redis://", StringComparison.OrdinalIgnoreCase))
        {
            return value;
        }
        if (!Uri.TryCreate(value, UriKind.Absolute, out var uri) || uri.Port <= 0 || uri.AbsolutePath is not ("" or "/"))
        {
            throw new InvalidOperationException($"--cluster '{value}' is not redis://HOST:PORT");
        }
        string config = $"{uri.Host}:{uri.Port}";
        if (uri.UserInfo.Length > 0)
        {
            string[] parts = uri.UserInfo.Split(':', 2);
            config += parts.Length == 2
                ? $",user={Uri.UnescapeDataString(parts[0])},password={Uri.UnescapeDataString(parts[1])}"
                : $",password={Uri.UnescapeDataString(parts[0])}";
        }
        return config;
    }

    /// <summary>The advertised HTTP URL: configured, or the first listen URL naming a host.</summary>
    public Uri AdvertiseUrl(IReadOnlyList<string> listenUrls)
    {
        string? url = ClusterAdvertiseUrl ?? listenUrls.FirstOrDefault(u =>
            Uri.TryCreate(u, UriKind.Absolute, out var parsed) && parsed.Scheme is "http" or "https" && parsed.Host is not ("*" or "+" or "0.0.0.0" or "[::]"));
        if (url is null || !Uri.TryCreate(url, UriKind.Absolute, out var uri) || uri.Scheme is not ("http" or "https"))
        {
            throw new InvalidOperationException(
                "a cluster node needs the HTTP address other nodes reach it at: set SandboxVM:ClusterAdvertiseUrl (e.g. http://10.0.0.5:8000)");
        }
        return uri;
    }

    /// <summary>The address Orleans advertises for the silo: the advertised URL's host, resolved.</summary>
    public static IPAddress SiloAddress(Uri advertise)
    {
        if (IPAddress.TryParse(advertise.Host.Trim('[', ']'), out var ip))
        {
            return ip;
        }
        return Dns.GetHostAddresses(advertise.Host).FirstOrDefault(a => a.AddressFamily == AddressFamily.InterNetwork)
            ?? throw new InvalidOperationException($"the advertised host '{advertise.Host}' does not resolve to an IPv4 address");
    }
}
