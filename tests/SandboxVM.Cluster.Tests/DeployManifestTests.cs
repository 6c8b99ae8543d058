using System.Globalization;
using YamlDotNet.Core;
using YamlDotNet.Core.Events;
using YamlDotNet.Serialization;

namespace SandboxVM.Cluster.Tests;

/// <summary>
/// deploy/kubernetes parses, and the fields the deployment relies on agree with each other and with the
/// templates: the Service reaches the nodes' HTTP port, the nodes find Redis, /dev/kvm is a device-plugin
/// resource, the shared state is a ReadWriteMany claim mounted where --shared-state points, /dev/shm holds
/// every pooled template's RAM file, and the memory request covers that and full pools (docs/SIZING.md).
/// </summary>
[Trait("tier", "unit")]
public sealed class DeployManifestTests
{
    private static readonly string Root = FindRoot();

    private static readonly List<Dictionary<object, object>> Docs = Load(Path.Combine(Root, "deploy", "kubernetes"));

    private static Dictionary<object, object> Single(string kind, string name) =>
        Assert.Single(Docs, d => (string)d["kind"] == kind && (string)Map(d, "metadata")["name"] == name);

    private static Dictionary<object, object> NodeContainer =>
        Assert.Single(List(Map(Single("DaemonSet", "sandboxvm"), "spec", "template", "spec"), "containers")
            .Cast<Dictionary<object, object>>(), c => (string)c["name"] == "sandboxvm");

    private static List<string> Args => [.. List(NodeContainer, "args").Cast<string>()];

    private static string Arg(string name) =>
        Assert.Single(Args, a => a.StartsWith(name + "=", StringComparison.Ordinal))[(name.Length + 1)..];

    [Fact]
    public void Every_object_is_in_the_namespace_and_the_services_select_the_pods_they_serve()
    {
        Assert.All(Docs.Where(d => (string)d["kind"] != "Namespace"), d => Assert.Equal("sandboxvm", (string)Map(d, "metadata")["namespace"]));
        foreach (var (service, workload, kind) in new[] { ("sandboxvm", "sandboxvm", "DaemonSet"), ("sandboxvm-redis", "sandboxvm-redis", "Deployment") })
        {
            var selector = Map(Single("Service", service), "spec", "selector");
            var labels = Map(Single(kind, workload), "spec", "template", "metadata", "labels");
            Assert.All(selector, kv => Assert.Equal(kv.Value, labels.GetValueOrDefault(kv.Key)));
            // The Service's targetPort is a port the pod declares.
            var container = (Dictionary<object, object>)List(Map(Single(kind, workload), "spec", "template", "spec"), "containers")[0];
            var ports = List(container, "ports").Cast<Dictionary<object, object>>().Select(p => (string)p["name"]).ToList();
            Assert.All(List(Map(Single("Service", service), "spec"), "ports").Cast<Dictionary<object, object>>(), p => Assert.Contains((string)p["targetPort"], ports));
        }
    }

    [Fact]
    public void The_nodes_listen_on_their_declared_port_and_find_redis_through_its_service()
    {
        var http = List(NodeContainer, "ports").Cast<Dictionary<object, object>>().Single(p => (string)p["name"] == "http");
        Assert.Equal(new Uri(Arg("--url")).Port.ToString(CultureInfo.InvariantCulture), (string)http["containerPort"]);
        var redis = new Uri(Arg("--cluster"));
        var redisPort = List(Map(Single("Service", redis.Host), "spec"), "ports").Cast<Dictionary<object, object>>().Single();
        Assert.Equal(redis.Port.ToString(CultureInfo.InvariantCulture), (string)redisPort["port"]);
        var env = List(NodeContainer, "env").Cast<Dictionary<object, object>>().ToDictionary(e => (string)e["name"], e => e.GetValueOrDefault("value") as string);
        Assert.Equal("http://$(POD_IP):8000", env["SandboxVM__ClusterAdvertiseUrl"]);
        // The silo port Orleans listens on is the one the pod declares.
        var silo = List(NodeContainer, "ports").Cast<Dictionary<object, object>>().Single(p => (string)p["name"] == "silo");
        Assert.Equal(env["SandboxVM__ClusterSiloPort"], (string)silo["containerPort"]);
        // The preStop drain calls the node on loopback: loopback must stay an allowed host once AllowedHosts is set.
        Assert.Contains("127.0.0.1", env.Where(e => e.Key.StartsWith("SandboxVM__AllowedHosts__", StringComparison.Ordinal)).Select(e => e.Value));
        Assert.Contains("node drain --url http://127.0.0.1:8000", string.Join(' ', List(Map(NodeContainer, "lifecycle", "preStop", "exec"), "command").Cast<string>()));
    }

    [Fact]
    public void KVM_comes_from_a_device_plugin_and_the_shared_state_is_a_read_write_many_claim_mounted_at_shared_state()
    {
        var resources = Map(NodeContainer, "resources");
        Assert.Equal("1", (string)Map(resources, "limits")["devices.kubevirt.io/kvm"]);
        Assert.Equal("qemu", Arg("--runtime"));
        var mount = List(NodeContainer, "volumeMounts").Cast<Dictionary<object, object>>().Single(m => (string)m["mountPath"] == Arg("--shared-state"));
        var volume = List(Map(Single("DaemonSet", "sandboxvm"), "spec", "template", "spec"), "volumes").Cast<Dictionary<object, object>>()
            .Single(v => (string)v["name"] == (string)mount["name"]);
        var claim = Single("PersistentVolumeClaim", (string)Map(volume, "persistentVolumeClaim")["claimName"]);
        Assert.Equal(["ReadWriteMany"], List(Map(claim, "spec"), "accessModes").Cast<string>());
        // Long enough for the drain to pause the node's sandboxes.
        Assert.True(int.Parse((string)Map(Single("DaemonSet", "sandboxvm"), "spec", "template", "spec")["terminationGracePeriodSeconds"], CultureInfo.InvariantCulture) >= 300);
    }

    [Fact]
    public void Shm_holds_every_pooled_templates_ram_file_and_the_memory_request_covers_it_and_full_pools()
    {
        var pooled = Directory.GetFiles(Path.Combine(Root, "templates"), "*.yaml").Select(LoadOne)
            .Where(t => t.TryGetValue("warmup", out var w) && (string)((Dictionary<object, object>)w)["strategy"] == "pool")
            .Select(t => (Memory: Mib((string)t["memory_mib"] + "Mi"), Pool: PoolMax(Map(t, "warmup"))))
            .ToList();
        Assert.NotEmpty(pooled);
        var shm = List(Map(Single("DaemonSet", "sandboxvm"), "spec", "template", "spec"), "volumes").Cast<Dictionary<object, object>>()
            .Single(v => (string)v["name"] == "shm");
        Assert.Equal("Memory", (string)Map(shm, "emptyDir")["medium"]);
        Assert.Equal("/dev/shm", (string)List(NodeContainer, "volumeMounts").Cast<Dictionary<object, object>>().Single(m => (string)m["name"] == "shm")["mountPath"]);
        long shmMib = Mib((string)Map(shm, "emptyDir")["sizeLimit"]);
        long ramFiles = pooled.Sum(t => t.Memory);
        Assert.True(shmMib >= ramFiles, $"/dev/shm {shmMib} MiB < the pooled templates' RAM files {ramFiles} MiB");
        long request = Mib((string)Map(NodeContainer, "resources", "requests")["memory"]);
        long fullPools = pooled.Sum(t => t.Pool * t.Memory);
        Assert.True(request >= ramFiles + fullPools, $"memory request {request} MiB < RAM files {ramFiles} + full pools {fullPools} MiB");
    }

    // A full pool is one at its max: pool_max where the target follows demand, else pool_size.
    private static int PoolMax(Dictionary<object, object> warmup) =>
        int.Parse((string)(warmup.TryGetValue("pool_max", out var max) ? max : warmup["pool_size"]), CultureInfo.InvariantCulture);

    private static long Mib(string quantity) => quantity switch
    {
        _ when quantity.EndsWith("Gi", StringComparison.Ordinal) => long.Parse(quantity[..^2], CultureInfo.InvariantCulture) * 1024,
        _ when quantity.EndsWith("Mi", StringComparison.Ordinal) => long.Parse(quantity[..^2], CultureInfo.InvariantCulture),
        _ => throw new FormatException($"quantity '{quantity}' is not in Mi or Gi"),
    };

    private static Dictionary<object, object> Map(Dictionary<object, object> node, params string[] path)
    {
        foreach (string key in path)
        {
            Assert.True(node.TryGetValue(key, out var next) && next is Dictionary<object, object>, $"no mapping '{key}' in {string.Join(", ", node.Keys)}");
            node = (Dictionary<object, object>)next!;
        }
        return node;
    }

    private static List<object> List(Dictionary<object, object> node, string key)
    {
        Assert.True(node.TryGetValue(key, out var value) && value is List<object>, $"no list '{key}'");
        return (List<object>)value!;
    }

    private static Dictionary<object, object> LoadOne(string path) =>
        new DeserializerBuilder().Build().Deserialize<Dictionary<object, object>>(File.ReadAllText(path));

    private static List<Dictionary<object, object>> Load(string dir)
    {
        var docs = new List<Dictionary<object, object>>();
        var deserializer = new DeserializerBuilder().Build();
        foreach (string file in Directory.GetFiles(dir, "*.yaml").Order(StringComparer.Ordinal))
        {
            var parser = new Parser(new StringReader(File.ReadAllText(file)));
            parser.Consume<StreamStart>();
            while (parser.Accept<DocumentStart>(out _))
            {
                docs.Add(deserializer.Deserialize<Dictionary<object, object>>(parser));
            }
        }
        return docs;
    }

    private static string FindRoot()
    {
        for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir is not null; dir = dir.Parent)
        {
            if (File.Exists(Path.Combine(dir.FullName, "SandboxVM.slnx")))
            {
                return dir.FullName;
            }
        }
        throw new InvalidOperationException("the repository root (SandboxVM.slnx) is not above " + AppContext.BaseDirectory);
    }
}
