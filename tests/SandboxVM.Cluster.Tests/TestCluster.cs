using System.Diagnostics;
using System.Net;
using System.Net.Http.Headers;
using System.Net.Sockets;
using System.Reflection;
using System.Security.Cryptography;
using System.Text;
using System.Text.Json;
using SandboxVM.Testing;

namespace SandboxVM.Cluster.Tests;

/// <summary>
/// A Redis and N nodes (tests/SandboxVM.Cluster.Node: the real server and cluster, sandboxes on the local
/// agent runtime) as processes on free loopback ports, each node with its own state directory. Keys:
/// <see cref="Alice"/>, <see cref="Bob"/> and the admin <see cref="Admin"/>, in one keys file all nodes read.
/// Failure detection is short (1 s probes, 2 missed). Everything is stopped on dispose, also after a failed start.
/// </summary>
internal sealed class TestCluster : IAsyncDisposable
{
    public const string Alice = "svmk_alice_k3y_0123456789abcdefghijklmnopqrstuvw";
    public const string Bob = "svmk_bob_k3y_0123456789abcdefghijklmnopqrstuvwxyz";
    public const string Admin = "svmk_admin_k3y_0123456789abcdefghijklmnopqrstuvw";
    public const string Template = "local-sh";

    private static readonly TimeSpan StartPatience = TimeSpan.FromSeconds(90);

    private readonly string _dir = Path.Combine(Path.GetTempPath(), "sandboxvm-cluster-" + Guid.NewGuid().ToString("N"));
    private readonly List<Node> _nodes = [];
    private Process? _redis;

    public IReadOnlyList<Node> Nodes => _nodes;

    /// <summary>The state directory all nodes share (SandboxVM:SharedStateDir): paused sandboxes live there.</summary>
    public string SharedDir => Path.Combine(_dir, "shared");
    public int RedisPort { get; private set; }

    /// <summary>Why the cluster tests cannot run here, or null.</summary>
    public static string? UnavailableReason =>
        File.Exists(RedisServer) ? null : $"{RedisServer} is absent (apt-get install redis-server)";

    private const string RedisServer = "/usr/bin/redis-server";

    /// <summary>Why nodes on the gVisor runtime cannot run here (no runsc, runsc cannot start a sandbox, no published agent), or null.</summary>
    public static string? GvisorUnavailableReason => s_gvisorUnavailable.Value;

    private static readonly Lazy<string?> s_gvisorUnavailable = new(() =>
    {
        if (SandboxVM.Host.HostPath.Find("runsc") is not { } runsc)
        {
            return "runsc is not installed (scripts/install-deps.sh installs it from bookworm-backports)";
        }
        if (!File.Exists(GvisorAgent))
        {
            return $"the guest agent is not published at {GvisorAgent}: run scripts/build.sh (or set SANDBOXVM_AGENT)";
        }
        var status = SandboxVM.Runtime.Gvisor.RunscProbe.Check(runsc, SandboxVM.Runtime.HostFacts.GvisorPlatform, TimeSpan.FromSeconds(30));
        return status.Works ? null : "gVisor cannot run a sandbox here: " + status.Detail;
    });

    /// <summary>The agent gVisor nodes put in their templates' images: SANDBOXVM_AGENT, else the repository's artifacts/agent.</summary>
    private static string GvisorAgent => Environment.GetEnvironmentVariable("SANDBOXVM_AGENT") ?? Path.Combine(RepoRoot(), "artifacts", "agent", "sandboxvm-agent");

    private static string RepoRoot()
    {
        for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir is not null; dir = dir.Parent)
        {
            if (File.Exists(Path.Combine(dir.FullName, "SandboxVM.slnx")))
            {
                return dir.FullName;
            }
        }
        throw new InvalidOperationException("repository root (SandboxVM.slnx) not found above " + AppContext.BaseDirectory);
    }

    /// <summary><see cref="StartAsync"/>, or the test skipped with <see cref="UnavailableReason"/>.</summary>
    public static Task<TestCluster> StartOrSkipAsync(int nodes)
    {
        if (UnavailableReason is { } why)
        {
            Assert.Skip(why);
        }
        return StartAsync(nodes);
    }

    /// <summary>A client of every node with <paramref name="key"/>, in node order, disposed together.</summary>
    public NodeClients Clients(string key) => new([.. _nodes.Select(n => n.Client(key))]);

    /// <param name="nodes">How many nodes.</param>
    /// <param name="gvisor">Nodes on the gVisor runtime with the repository's templates (<see cref="GvisorUnavailableReason"/>), not the local agent.</param>
    public static async Task<TestCluster> StartAsync(int nodes, bool gvisor = false)
    {
        var cluster = new TestCluster();
        try
        {
            await cluster.StartRedisAsync();
            Directory.CreateDirectory(cluster._dir);
            string keys = Path.Combine(cluster._dir, "keys.json");
            await File.WriteAllTextAsync(keys, JsonSerializer.Serialize(new
            {
                keys = new object[]
                {
                    new { name = "alice", sha256 = Hash(Alice), admin = false, limits = new { sandboxes = 100, runs_per_minute = 100000, concurrent_runs = 64 } },
                    new { name = "bob", sha256 = Hash(Bob), admin = false },
                    new { name = "ops", sha256 = Hash(Admin), admin = true },
                },
            }));
            for (int i = 0; i < nodes; i++)
            {
                cluster._nodes.Add(Node.Start(cluster._dir, (char)('a' + i), cluster.RedisPort, keys, cluster.SharedDir, gvisor));
            }
            await cluster.WaitForMembersAsync(nodes);
            return cluster;
        }
        catch
        {
            await cluster.DisposeAsync();
            throw;
        }
    }

    private static string Hash(string key) => Convert.ToHexStringLower(SHA256.HashData(Encoding.UTF8.GetBytes(key)));

    private async Task StartRedisAsync()
    {
        RedisPort = FreePort();
        _redis = Process.Start(new ProcessStartInfo(RedisServer,
            ["--port", RedisPort.ToString(System.Globalization.CultureInfo.InvariantCulture), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
        })!;
        _redis.OutputDataReceived += (_, _) => { };
        _redis.ErrorDataReceived += (_, _) => { };
        _redis.BeginOutputReadLine();
        _redis.BeginErrorReadLine();
        await Eventually.TrueAsync(() => Accepts(RedisPort) || _redis.HasExited, () => "redis-server does not accept connections");
        Assert.False(_redis.HasExited, "redis-server exited at start");
    }

    /// <summary>Waits until every live node sees <paramref name="count"/> active members.</summary>
    public async Task WaitForMembersAsync(int count)
    {
        long start = Stopwatch.GetTimestamp();
        foreach (var node in _nodes.Where(n => !n.Killed))
        {
            using var http = node.Client(Admin);
            while (true)
            {
                if (node.Process.HasExited)
                {
                    if (node.Process.ExitCode == 3)
                    {
                        Assert.Skip("the local agent runtime cannot run here: " + node.Log);
                    }
                    Assert.Fail($"node {node.Name} exited ({node.Process.ExitCode}) at start:\n{node.Log}");
                }
                int active = await ActiveMembersAsync(http);
                if (active == count)
                {
                    break;
                }
                Assert.True(Stopwatch.GetElapsedTime(start) < StartPatience,
                    $"node {node.Name} sees {active} active nodes of {count} after {StartPatience.TotalSeconds} s:\n{node.Log}");
                await Task.Delay(100, TestContext.Current.CancellationToken);
            }
        }
    }

    public static async Task<int> ActiveMembersAsync(HttpClient http)
    {
        try
        {
            using var response = await http.GetAsync("v1/admin/cluster", TestContext.Current.CancellationToken);
            if (!response.IsSuccessStatusCode)
            {
                return -1;
            }
            using var doc = JsonDocument.Parse(await response.Content.ReadAsStringAsync(TestContext.Current.CancellationToken));
            return doc.RootElement.GetProperty("nodes").EnumerateArray().Count(n => n.GetProperty("status").GetString() == "active");
        }
        catch (HttpRequestException)
        {
            return -1;
        }
    }

    public static int FreePort()
    {
        using var listener = new TcpListener(IPAddress.Loopback, 0);
        listener.Start();
        return ((IPEndPoint)listener.LocalEndpoint).Port;
    }

    private static bool Accepts(int port)
    {
        try
        {
            using var client = new TcpClient();
            client.Connect(IPAddress.Loopback, port);
            return true;
        }
        catch (SocketException)
        {
            return false;
        }
    }

    public async ValueTask DisposeAsync()
    {
        foreach (var node in _nodes)
        {
            await node.StopAsync();
        }
        if (_redis is { HasExited: false })
        {
            _redis.Kill();
            await _redis.WaitForExitAsync(CancellationToken.None);
        }
        _redis?.Dispose();
        if (Directory.Exists(_dir))
        {
            Directory.Delete(_dir, recursive: true);
        }
    }

    /// <summary>One node process.</summary>
    internal sealed class Node
    {
        private readonly StringBuilder _log = new();

        private Node(string name, Process process, Uri url)
        {
            Name = name;
            Process = process;
            Url = url;
        }

        public string Name { get; }
        public Process Process { get; }
        public Uri Url { get; }
        public bool Killed { get; private set; }

        public string Log
        {
            get
            {
                lock (_log)
                {
                    string text = _log.ToString();
                    return text.Length > 6000 ? text[^6000..] : text;
                }
            }
        }

        public static Node Start(string dir, char name, int redisPort, string keysFile, string sharedDir, bool gvisor)
        {
            string path = typeof(TestCluster).Assembly.GetCustomAttributes<AssemblyMetadataAttribute>()
                .First(a => a.Key == "SandboxVM.ClusterNodePath").Value!;
            int http = FreePort();
            int silo = FreePort();
            var url = new Uri($"http://127.0.0.1:{http}/");
            var start = new ProcessStartInfo("dotnet")
            {
                RedirectStandardOutput = true,
                RedirectStandardError = true,
                UseShellExecute = false,
            };
            foreach (string arg in (string[])[path, Path.Combine(dir, "node-" + name),
                "--urls", url.ToString().TrimEnd('/'),
                "--SandboxVM:Cluster", $"redis://127.0.0.1:{redisPort}",
                "--SandboxVM:ClusterSiloPort", silo.ToString(System.Globalization.CultureInfo.InvariantCulture),
                "--SandboxVM:ClusterProbeTimeoutS", "1",
                "--SandboxVM:ClusterMissedProbes", "2",
                "--SandboxVM:ApiKeysFile", keysFile,
                "--SandboxVM:SharedStateDir", sharedDir])
            {
                start.ArgumentList.Add(arg);
            }
            start.Environment["Logging__LogLevel__Orleans"] = "Warning";
            if (gvisor)
            {
                start.Environment["SANDBOXVM_CLUSTER_NODE_RUNTIME"] = "gvisor";
                start.Environment["SANDBOXVM_AGENT"] = GvisorAgent;
                start.Environment["SANDBOXVM_CLUSTER_NODE_TEMPLATES"] = Path.Combine(RepoRoot(), "templates");
            }
            var process = Process.Start(start)!;
            var node = new Node(name.ToString(), process, url);
            process.OutputDataReceived += (_, e) => node.Append(e.Data);
            process.ErrorDataReceived += (_, e) => node.Append(e.Data);
            process.BeginOutputReadLine();
            process.BeginErrorReadLine();
            return node;
        }

        private void Append(string? line)
        {
            if (line is null)
            {
                return;
            }
            lock (_log)
            {
                _log.AppendLine(line);
            }
        }

        /// <summary>An HTTP client of this node with <paramref name="key"/>.</summary>
        public HttpClient Client(string key) => new()
        {
            BaseAddress = Url,
            Timeout = TimeSpan.FromSeconds(60),
            DefaultRequestHeaders = { Authorization = new AuthenticationHeaderValue("Bearer", key) },
        };

        /// <summary>kill -9: no goodbye to the cluster, its sandboxes' agents orphaned with it.</summary>
        public void Kill()
        {
            Killed = true;
            Process.Kill(entireProcessTree: true);
        }

        /// <summary>SIGTERM (the server stops its sandboxes and leaves), SIGKILL after 20 s.</summary>
        public async Task StopAsync()
        {
            if (Process.HasExited)
            {
                Process.Dispose();
                return;
            }
            using (var term = Process.Start("/bin/kill", ["-TERM", Process.Id.ToString(System.Globalization.CultureInfo.InvariantCulture)]))
            {
                await term.WaitForExitAsync(CancellationToken.None);
            }
            using var patience = new CancellationTokenSource(TimeSpan.FromSeconds(20));
            try
            {
                await Process.WaitForExitAsync(patience.Token);
            }
            catch (OperationCanceledException)
            {
                Process.Kill(entireProcessTree: true);
                await Process.WaitForExitAsync(CancellationToken.None);
            }
            Process.Dispose();
        }
    }
}

/// <summary>One HTTP client per node (<see cref="TestCluster.Clients"/>): <c>var (a, b, c) = clients;</c>.</summary>
internal sealed class NodeClients(HttpClient[] clients) : IDisposable
{
    public HttpClient this[int node] => clients[node];

    public void Deconstruct(out HttpClient a, out HttpClient b)
    {
        a = clients[0];
        b = clients[1];
    }

    public void Deconstruct(out HttpClient a, out HttpClient b, out HttpClient c)
    {
        (a, b) = this;
        c = clients[2];
    }

    public void Dispose()
    {
        foreach (var client in clients)
        {
            client.Dispose();
        }
    }
}
