using System.Runtime.CompilerServices;
using System.Security.Cryptography;
using System.Text;
using Microsoft.AspNetCore.Builder;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Orleans.Configuration;
using SandboxVM.Core;
using SandboxVM.Server;
using StackExchange.Redis;
using Yarp.ReverseProxy.Forwarder;

namespace SandboxVM.Cluster;

/// <summary>
/// Makes the server a node of an Orleans cluster when <see cref="ClusterSettings.Cluster"/> is set
/// (configuration <c>SandboxVM:Cluster</c> or <c>serve --cluster</c>); without it, nothing: no silo, no
/// middleware, and no Orleans type is touched.
/// </summary>
/// <param name="cluster">The Redis of the cluster, over the configuration's (the CLI's --cluster).</param>
public sealed class ClusterExtension(string? cluster = null) : IServerExtension
{
    /// <summary>The grain storage of the sandbox records (Redis).</summary>
    public const string StorageName = "sandboxes";

    private bool _enabled;

    public void AddServices(WebApplicationBuilder builder, SandboxVmOptions options, IReadOnlyList<string> urls)
    {
        var settings = ClusterSettings.Load(builder.Configuration);
        if (cluster is { Length: > 0 })
        {
            settings.Cluster = cluster;
        }
        if (string.IsNullOrEmpty(settings.Cluster))
        {
            return;
        }
        _enabled = true;
        AddNode(builder, settings, urls);
    }

    public void Use(WebApplication app)
    {
        if (_enabled)
        {
            app.UseMiddleware<ClusterRouter>();
        }
    }

    // Apart, so that single-node mode never loads Orleans' assemblies.
    [MethodImpl(MethodImplOptions.NoInlining)]
    private static void AddNode(WebApplicationBuilder builder, ClusterSettings settings, IReadOnlyList<string> urls)
    {
        string redis = settings.RedisConfiguration();
        var advertise = settings.AdvertiseUrl(urls);
        var siloIp = ClusterSettings.SiloAddress(advertise);
        string secret = settings.ClusterSecret is { Length: > 0 } configured ? configured : SharedSecret(redis, settings.ClusterId);
        builder.UseOrleans(silo =>
        {
            silo.UseRedisClustering(o => o.ConfigurationOptions = ConfigurationOptions.Parse(redis));
            silo.AddRedisGrainStorage(StorageName, o => o.ConfigurationOptions = ConfigurationOptions.Parse(redis));
            silo.Configure<ClusterOptions>(o =>
            {
                o.ClusterId = settings.ClusterId;
                o.ServiceId = settings.ClusterId;
            });
            // The node's name in the membership is its HTTP address: GET /v1/admin/cluster lists them.
            silo.Configure<SiloOptions>(o => o.SiloName = advertise.ToString());
            silo.ConfigureEndpoints(siloIp, settings.ClusterSiloPort, settings.ClusterGatewayPort, listenOnAnyHostAddress: false);
            silo.Configure<ClusterMembershipOptions>(o =>
            {
                o.ProbeTimeout = TimeSpan.FromSeconds(settings.ClusterProbeTimeoutS);
                o.NumMissedProbesLimit = settings.ClusterMissedProbes;
            });
        });
        var services = builder.Services;
        services.AddSingleton(new ClusterNode(advertise, settings));
        services.AddSingleton(new ClusterHop(secret));
        // Share links signed alike on every node (a key of its own, derived from the secret, not the secret itself).
        byte[] shareKey = HMACSHA256.HashData(Encoding.UTF8.GetBytes(secret), "sandboxvm share links"u8);
        services.AddSingleton(sp => new PortShares(sp.GetRequiredService<TimeProvider>(), shareKey));
        // E2B's sandbox tokens (and so its signed file URLs) alike on every node: they hold through any node and after a move.
        services.AddSingleton(new SandboxVM.Server.E2b.E2bState(HMACSHA256.HashData(Encoding.UTF8.GetBytes(secret), "sandboxvm e2b tokens"u8)));
        services.AddSingleton<ITrustedHop>(sp => sp.GetRequiredService<ClusterHop>());
        services.AddHttpForwarder();
        services.AddSingleton<SandboxRegistrar>();
        services.AddHostedService(sp => sp.GetRequiredService<SandboxRegistrar>());
        services.AddSingleton<NodeDrain>();
        services.AddSingleton<RunPlacement>();
        services.AddHostedService(sp => sp.GetRequiredService<RunPlacement>());
    }

    /// <summary>The cluster's hop secret: made by the first node (SET NX) and read by the others.</summary>
    private static string SharedSecret(string redis, string clusterId)
    {
        try
        {
            using var connection = ConnectionMultiplexer.Connect(redis);
            var db = connection.GetDatabase();
            string key = $"sandboxvm/{clusterId}/hop-secret";
            db.StringSet(key, Convert.ToHexString(RandomNumberGenerator.GetBytes(32)), when: When.NotExists);
            return db.StringGet(key).ToString();
        }
        catch (RedisException e)
        {
            throw new InvalidOperationException($"cannot reach the cluster's Redis ({redis}): {e.Message}", e);
        }
    }
}

/// <summary>This node: its advertised HTTP address and how calls are forwarded to the others.</summary>
internal sealed class ClusterNode(Uri url, ClusterSettings settings) : IDisposable
{
    public Uri Url { get; } = url;
    public ClusterSettings Settings { get; } = settings;

    /// <summary>Set by a drain: no new work here, every new call goes to another node.</summary>
    public bool Draining { get => _draining; set => _draining = value; }

    private volatile bool _draining;

    public HttpMessageInvoker Forwarding => field ??= new HttpMessageInvoker(Handler, disposeHandler: false);

    /// <summary>The connections to the other nodes, shared by forwarded calls and the node's own (lists).</summary>
    public SocketsHttpHandler Handler { get; } = new()
    {
        UseProxy = false,
        AllowAutoRedirect = false,
        AutomaticDecompression = System.Net.DecompressionMethods.None,
        UseCookies = false,
        // A dead node's port refuses at once; one that is gone from the network is given this long.
        ConnectTimeout = TimeSpan.FromSeconds(5),
        EnableMultipleHttp2Connections = true,
    };

    /// <summary>A streaming run may be silent for long: the run's own timeout ends it, not the hop.</summary>
    public ForwarderRequestConfig ForwardingConfig { get; } = new() { ActivityTimeout = TimeSpan.FromHours(1) };

    public void Dispose() => Handler.Dispose();
}
