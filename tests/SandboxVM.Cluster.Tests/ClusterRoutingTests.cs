using System.Diagnostics;
using System.Net;
using System.Net.Http.Headers;
using System.Net.Http.Json;
using System.Security.Cryptography;
using System.Text;
using System.Text.Json;

namespace SandboxVM.Cluster.Tests;

/// <summary>Three nodes and a Redis, started once for the tests of <see cref="ClusterRoutingTests"/>.</summary>
public sealed class ThreeNodes : IAsyncLifetime
{
    private TestCluster? _cluster;
    private Exception? _failed;

    internal TestCluster Cluster
    {
        get
        {
            if (TestCluster.UnavailableReason is { } why)
            {
                Assert.Skip(why);
            }
            if (_failed is Xunit.Sdk.SkipException)
            {
                Assert.Skip(_failed.Message);
            }
            return _cluster ?? throw new InvalidOperationException("the cluster did not start", _failed);
        }
    }

    public async ValueTask InitializeAsync()
    {
        if (TestCluster.UnavailableReason is not null)
        {
            return;
        }
        try
        {
            _cluster = await TestCluster.StartAsync(3);
        }
        catch (Exception e)
        {
            _failed = e;
        }
    }

    public async ValueTask DisposeAsync()
    {
        if (_cluster is not null)
        {
            await _cluster.DisposeAsync();
        }
    }
}

/// <summary>
/// A sandbox created through one node and used through the others: runs, a streamed run, a 50 MB file,
/// keys checked at the edge, another caller's sandbox and an unknown id answered as on one node.
/// </summary>
[Trait("tier", "cluster")]
public sealed class ClusterRoutingTests(ThreeNodes nodes) : IClassFixture<ThreeNodes>
{
    private static CancellationToken Ct => TestContext.Current.CancellationToken;

    internal static async Task<string> CreateAsync(HttpClient http)
    {
        using var response = await http.PostAsJsonAsync("v1/sandboxes", new { template = TestCluster.Template, timeout_s = 300 }, Ct);
        string body = await response.Content.ReadAsStringAsync(Ct);
        Assert.True(response.StatusCode == HttpStatusCode.Created, body);
        return JsonDocument.Parse(body).RootElement.GetProperty("id").GetString()!;
    }

    internal static async Task<JsonElement> RunAsync(HttpClient http, string id, string code)
    {
        using var response = await http.PostAsJsonAsync($"v1/sandboxes/{id}/run", new { code }, Ct);
        string body = await response.Content.ReadAsStringAsync(Ct);
        Assert.True(response.StatusCode == HttpStatusCode.OK, $"{(int)response.StatusCode}: {body}");
        return JsonDocument.Parse(body).RootElement;
    }

    [Fact]
    public async Task A_sandbox_created_on_one_node_keeps_its_state_across_runs_through_the_others()
    {
        var cluster = nodes.Cluster;
        using var alice = cluster.Clients(TestCluster.Alice);
        var (a, b, c) = alice;
        string id = await CreateAsync(a);

        var first = await RunAsync(b, id, "echo from-b > /tmp/mark; echo ran-on-$(hostname)-b");
        Assert.Equal("ok", first.GetProperty("status").GetString());
        var second = await RunAsync(c, id, "cat /tmp/mark");
        Assert.Equal("from-b\n", second.GetProperty("stdout").GetString());
        var info = await c.GetFromJsonAsync<JsonElement>($"v1/sandboxes/{id}", Ct);
        Assert.Equal(id, info.GetProperty("id").GetString());

        using (var deleted = await b.DeleteAsync($"v1/sandboxes/{id}", Ct))
        {
            Assert.Equal(HttpStatusCode.NoContent, deleted.StatusCode);
        }
        using var gone = await c.GetAsync($"v1/sandboxes/{id}", Ct);
        Assert.Equal(HttpStatusCode.NotFound, gone.StatusCode);
    }

    [Fact]
    public async Task A_streamed_run_through_another_node_delivers_each_event_when_it_happens()
    {
        var cluster = nodes.Cluster;
        using var alice = cluster.Clients(TestCluster.Alice);
        var (a, b) = alice;
        string id = await CreateAsync(a);

        using var request = new HttpRequestMessage(HttpMethod.Post, $"v1/sandboxes/{id}/run")
        {
            Content = JsonContent.Create(new { code = "echo first; sleep 3; echo second" }),
        };
        request.Headers.Accept.Add(new MediaTypeWithQualityHeaderValue("text/event-stream"));
        using var response = await b.SendAsync(request, HttpCompletionOption.ResponseHeadersRead, Ct);
        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        Assert.Equal("text/event-stream", response.Content.Headers.ContentType?.MediaType);
        using var reader = new StreamReader(await response.Content.ReadAsStreamAsync(Ct));
        var events = new List<(string Data, TimeSpan At)>();
        var clock = Stopwatch.StartNew();
        while (await reader.ReadLineAsync(Ct) is { } line)
        {
            if (line.StartsWith("data: ", StringComparison.Ordinal))
            {
                events.Add((line["data: ".Length..], clock.Elapsed));
            }
        }
        int first = events.FindIndex(e => e.Data.Contains("first", StringComparison.Ordinal));
        int second = events.FindIndex(e => e.Data.Contains("second", StringComparison.Ordinal) && !e.Data.Contains("status", StringComparison.Ordinal));
        Assert.True(first >= 0 && second > first, string.Join("\n", events.Select(e => e.Data)));
        // The guest sleeps 3 s between the two lines: a hop that buffered would hand both over together.
        Assert.True(events[second].At - events[first].At > TimeSpan.FromSeconds(2),
            $"first at {events[first].At.TotalSeconds:F2} s, second at {events[second].At.TotalSeconds:F2} s");
    }

    [Fact]
    public async Task A_50_MB_file_uploaded_through_one_node_reads_back_whole_through_another()
    {
        var cluster = nodes.Cluster;
        using var alice = cluster.Clients(TestCluster.Alice);
        var (a, b, c) = alice;
        string id = await CreateAsync(a);
        byte[] data = RandomNumberGenerator.GetBytes(50 << 20);

        using (var put = await b.PutAsync($"v1/sandboxes/{id}/files?path=/tmp/big.bin", new ByteArrayContent(data), Ct))
        {
            Assert.True(put.IsSuccessStatusCode, await put.Content.ReadAsStringAsync(Ct));
        }
        using var get = await c.GetAsync($"v1/sandboxes/{id}/files?path=/tmp/big.bin", HttpCompletionOption.ResponseHeadersRead, Ct);
        Assert.Equal(HttpStatusCode.OK, get.StatusCode);
        Assert.Equal(data.Length, get.Content.Headers.ContentLength);
        byte[] back = await get.Content.ReadAsByteArrayAsync(Ct);
        Assert.Equal(SHA256.HashData(data), SHA256.HashData(back));
        // And the guest saw the same bytes.
        var sum = await RunAsync(a, id, "sha256sum /tmp/big.bin | cut -d' ' -f1");
        Assert.Equal(Convert.ToHexStringLower(SHA256.HashData(data)), sum.GetProperty("stdout").GetString()!.Trim());
    }

    [Fact]
    public async Task Another_callers_sandbox_and_an_unknown_id_answer_404_through_any_node()
    {
        var cluster = nodes.Cluster;
        using var aliceOnA = cluster.Nodes[0].Client(TestCluster.Alice);
        using var bobOnB = cluster.Nodes[1].Client(TestCluster.Bob);
        using var aliceOnC = cluster.Nodes[2].Client(TestCluster.Alice);
        string id = await CreateAsync(aliceOnA);

        using var bobs = await bobOnB.PostAsJsonAsync($"v1/sandboxes/{id}/run", new { code = "echo stolen" }, Ct);
        using var unknown = await aliceOnC.PostAsJsonAsync("v1/sandboxes/sbx_doesnotexist/run", new { code = "echo x" }, Ct);
        Assert.Equal(HttpStatusCode.NotFound, bobs.StatusCode);
        Assert.Equal(HttpStatusCode.NotFound, unknown.StatusCode);
        // Byte for byte like an unknown id (the id itself differs).
        Assert.Equal((await unknown.Content.ReadAsStringAsync(Ct)).Replace("sbx_doesnotexist", id, StringComparison.Ordinal),
            await bobs.Content.ReadAsStringAsync(Ct));
    }

    [Fact]
    public async Task Every_node_lists_the_callers_sandboxes_of_all_nodes_and_no_one_elses()
    {
        var cluster = nodes.Cluster;
        using var aliceOnA = cluster.Nodes[0].Client(TestCluster.Alice);
        using var aliceOnB = cluster.Nodes[1].Client(TestCluster.Alice);
        using var bobOnC = cluster.Nodes[2].Client(TestCluster.Bob);
        string onA = await CreateAsync(aliceOnA);
        string onB = await CreateAsync(aliceOnB);
        string bobs = await CreateAsync(bobOnC);

        foreach (var node in cluster.Nodes)
        {
            using var alice = node.Client(TestCluster.Alice);
            var list = await alice.GetFromJsonAsync<JsonElement>("v1/sandboxes", Ct);
            var ids = list.GetProperty("sandboxes").EnumerateArray().Select(s => s.GetProperty("id").GetString()).ToList();
            Assert.Contains(onA, ids);
            Assert.Contains(onB, ids);
            Assert.DoesNotContain(bobs, ids);
            Assert.Equal(ids.Count, ids.Distinct().Count());
        }
    }

    [Fact]
    public async Task Keys_are_checked_at_the_edge_and_a_forged_hop_is_refused()
    {
        var cluster = nodes.Cluster;
        using var alice = cluster.Nodes[0].Client(TestCluster.Alice);
        string id = await CreateAsync(alice);
        using var noKey = new HttpClient { BaseAddress = cluster.Nodes[1].Url };

        using var anonymous = await noKey.PostAsJsonAsync($"v1/sandboxes/{id}/run", new { code = "echo x" }, Ct);
        Assert.Equal(HttpStatusCode.Unauthorized, anonymous.StatusCode);

        // Straight to the owner, posing as another node: without the cluster's secret it is a caller without a key.
        using var forged = new HttpRequestMessage(HttpMethod.Post, $"v1/sandboxes/{id}/run") { Content = JsonContent.Create(new { code = "echo x" }) };
        forged.Headers.Add("SandboxVM-Cluster-Hop", "guessed");
        forged.Headers.Add("SandboxVM-Cluster-Caller", "alice");
        using var owner = new HttpClient { BaseAddress = cluster.Nodes[0].Url };
        using var refused = await owner.SendAsync(forged, Ct);
        Assert.Equal(HttpStatusCode.Unauthorized, refused.StatusCode);
    }

    [Fact]
    public async Task A_share_link_serves_its_port_through_every_node_without_a_key()
    {
        var cluster = nodes.Cluster;
        using var a = cluster.Nodes[0].Client(TestCluster.Alice);
        string id = await CreateAsync(a);
        int port = TestCluster.FreePort();
        using (var started = await a.PostAsJsonAsync($"v1/sandboxes/{id}/commands", new
        {
            cmd = $"mkdir -p site && echo shared > site/hello.txt && cd site && exec python3 -m http.server {port} --bind 127.0.0.1",
            background = true,
        }, Ct))
        {
            Assert.True(started.StatusCode == HttpStatusCode.Created, await started.Content.ReadAsStringAsync(Ct));
        }
        string link;
        using (var shared = await a.PostAsJsonAsync($"v1/sandboxes/{id}/shares", new { port, expires_in_s = 600 }, Ct))
        {
            string text = await shared.Content.ReadAsStringAsync(Ct);
            Assert.True(shared.StatusCode == HttpStatusCode.Created, text);
            link = new Uri(JsonDocument.Parse(text).RootElement.GetProperty("url").GetString()!).AbsolutePath;
        }

        foreach (var node in cluster.Nodes)
        {
            using var anyone = new HttpClient { BaseAddress = node.Url };
            var deadline = DateTime.UtcNow + TimeSpan.FromSeconds(60);
            HttpResponseMessage got;
            // 502 until the server in the sandbox listens.
            while ((got = await anyone.GetAsync(link.TrimStart('/') + "hello.txt", Ct)).StatusCode == HttpStatusCode.BadGateway && DateTime.UtcNow < deadline)
            {
                got.Dispose();
                await Task.Delay(200, Ct);
            }
            using (got)
            {
                Assert.True(got.StatusCode == HttpStatusCode.OK, $"{node.Url}: {(int)got.StatusCode} {await got.Content.ReadAsStringAsync(Ct)}");
                Assert.Equal("shared\n", await got.Content.ReadAsStringAsync(Ct));
            }
        }
        // A changed token is no node's link.
        string token = link.Split('/')[2];
        string changed = token[..5] + (token[5] == 'A' ? 'B' : 'A') + token[6..];
        using var other = new HttpClient { BaseAddress = cluster.Nodes[2].Url };
        using var tampered = await other.GetAsync($"shared/{changed}/hello.txt", Ct);
        Assert.Equal(HttpStatusCode.NotFound, tampered.StatusCode);
        Assert.Equal("share_not_found", (await tampered.Content.ReadFromJsonAsync<JsonElement>(Ct)).GetProperty("code").GetString());
    }

    [Fact]
    public async Task The_E2B_door_reaches_a_sandbox_through_every_node()
    {
        var cluster = nodes.Cluster;
        HttpClient E2b(int node)
        {
            var http = new HttpClient { BaseAddress = new Uri(cluster.Nodes[node].Url, "e2b/") };
            http.DefaultRequestHeaders.Add("X-API-KEY", TestCluster.Alice);
            return http;
        }
        using var a = E2b(0);
        using var b = E2b(1);
        using var c = E2b(2);
        JsonElement created;
        using (var response = await a.PostAsJsonAsync("sandboxes", new { templateID = TestCluster.Template, timeout = 300 }, Ct))
        {
            string text = await response.Content.ReadAsStringAsync(Ct);
            Assert.True(response.StatusCode == HttpStatusCode.Created, $"{(int)response.StatusCode}: {text}");
            created = JsonDocument.Parse(text).RootElement.Clone();
        }
        string id = created.GetProperty("sandboxID").GetString()!;
        string token = created.GetProperty("envdAccessToken").GetString()!;
        using (var alice = cluster.Nodes[0].Client(TestCluster.Alice))
        {
            Assert.Equal("ok", (await RunAsync(alice, id, "echo e2b > /tmp/door.txt")).GetProperty("status").GetString());
        }

        // The control API through another node.
        var info = await b.GetFromJsonAsync<JsonElement>($"sandboxes/{id}", Ct);
        Assert.Equal(id, info.GetProperty("sandboxID").GetString());
        // envd's side through a third: chosen by the header, checked with the sandbox's token where it lives.
        using (var read = new HttpRequestMessage(HttpMethod.Get, "files?path=/tmp/door.txt"))
        {
            read.Headers.Add("E2b-Sandbox-Id", id);
            read.Headers.Add("X-Access-Token", token);
            using var got = await c.SendAsync(read, Ct);
            Assert.True(got.StatusCode == HttpStatusCode.OK, $"{(int)got.StatusCode}: {await got.Content.ReadAsStringAsync(Ct)}");
            Assert.Equal("e2b\n", await got.Content.ReadAsStringAsync(Ct));
        }
        using (var wrong = new HttpRequestMessage(HttpMethod.Get, "files?path=/tmp/door.txt"))
        {
            wrong.Headers.Add("E2b-Sandbox-Id", id);
            wrong.Headers.Add("X-Access-Token", "not-the-token");
            using var refused = await c.SendAsync(wrong, Ct);
            Assert.Equal(HttpStatusCode.Unauthorized, refused.StatusCode);
        }

        using (var killed = await c.DeleteAsync($"sandboxes/{id}", Ct))
        {
            Assert.Equal(HttpStatusCode.NoContent, killed.StatusCode);
        }
        using var gone = await b.GetAsync($"sandboxes/{id}", Ct);
        Assert.Equal(HttpStatusCode.NotFound, gone.StatusCode);
    }

    [Fact]
    public async Task The_E2B_list_through_a_node_that_holds_none_shows_the_callers_sandboxes_of_every_node()
    {
        var cluster = nodes.Cluster;
        using var a = E2bAcrossNodesTests.E2b(cluster, 0);
        using var b = E2bAcrossNodesTests.E2b(cluster, 1);
        using var c = E2bAcrossNodesTests.E2b(cluster, 2);
        // This test's own mark: the other tests' sandboxes on the shared nodes do not carry it.
        string run = Guid.NewGuid().ToString("N");
        async Task<string> CreateE2bAsync(HttpClient http, string role)
        {
            using var response = await http.PostAsJsonAsync("e2b/v2/sandboxes",
                new { templateID = TestCluster.Template, timeout = 300, metadata = new Dictionary<string, string> { ["run"] = run, ["role"] = role } }, Ct);
            string text = await response.Content.ReadAsStringAsync(Ct);
            Assert.True(response.StatusCode == HttpStatusCode.Created, $"{(int)response.StatusCode}: {text}");
            return JsonDocument.Parse(text).RootElement.GetProperty("sandboxID").GetString()!;
        }
        string onA = await CreateE2bAsync(a, "first");
        string onB = await CreateE2bAsync(b, "second");

        async Task<List<string>> ListAsync(HttpClient http, string metadata)
        {
            using var response = await http.GetAsync("e2b/v2/sandboxes?state=running,paused&metadata=" + Uri.EscapeDataString(metadata), Ct);
            string text = await response.Content.ReadAsStringAsync(Ct);
            Assert.True(response.StatusCode == HttpStatusCode.OK, $"{(int)response.StatusCode}: {text}");
            return [.. JsonDocument.Parse(text).RootElement.EnumerateArray().Select(e => e.GetProperty("sandboxID").GetString()!).Order(StringComparer.Ordinal)];
        }
        // Node C holds neither.
        Assert.Equal(new[] { onA, onB }.Order(StringComparer.Ordinal), await ListAsync(c, $"run={run}"));
        Assert.Equal([onB], await ListAsync(c, $"run={run}&role=second"));
        using (var limited = await c.GetAsync($"e2b/v2/sandboxes?limit=1&metadata={Uri.EscapeDataString($"run={run}")}", Ct))
        {
            Assert.Single((await limited.Content.ReadFromJsonAsync<JsonElement>(Ct)).EnumerateArray());
        }
        // Another caller sees none of them; a wrong key is E2B's 401.
        using (var bob = new HttpClient { BaseAddress = cluster.Nodes[2].Url })
        {
            bob.DefaultRequestHeaders.Add("X-API-KEY", TestCluster.Bob);
            Assert.Empty(await ListAsync(bob, $"run={run}"));
            bob.DefaultRequestHeaders.Remove("X-API-KEY");
            bob.DefaultRequestHeaders.Add("X-API-KEY", "svmk_wrong");
            using var refused = await bob.GetAsync("e2b/v2/sandboxes", Ct);
            Assert.Equal(HttpStatusCode.Unauthorized, refused.StatusCode);
            Assert.Equal(401, (await refused.Content.ReadFromJsonAsync<JsonElement>(Ct)).GetProperty("code").GetInt32());
        }
        foreach (string id in (string[])[onA, onB])
        {
            using var killed = await c.DeleteAsync($"e2b/sandboxes/{id}", Ct);
            Assert.Equal(HttpStatusCode.NoContent, killed.StatusCode);
        }
        Assert.Empty(await ListAsync(c, $"run={run}"));
    }
}
