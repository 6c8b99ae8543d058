using System.Diagnostics;
using System.Net;
using System.Net.Http.Json;
using System.Text.Json;

namespace SandboxVM.Cluster.Tests;

/// <summary>
/// A drain with a real runtime's pause: nodes on gVisor, whose pause is <c>runsc checkpoint</c> (processes and
/// memory), so a Python variable moves with its sandbox, not only files (the other cluster tests' nodes save
/// files only). One test: each gVisor node costs tens of seconds.
/// </summary>
[Trait("tier", "cluster")]
public sealed class GvisorDrainTests
{
    private static CancellationToken Ct => TestContext.Current.CancellationToken;

    private const string Python = "python-data-analysis";

    [Fact]
    public async Task A_drained_gvisor_nodes_sandbox_resumes_on_the_other_node_with_its_python_state()
    {
        Assert.SkipWhen(TestCluster.UnavailableReason is not null, TestCluster.UnavailableReason ?? "");
        Assert.SkipWhen(TestCluster.GvisorUnavailableReason is not null, TestCluster.GvisorUnavailableReason ?? "");
        await using var cluster = await TestCluster.StartAsync(2, gvisor: true);
        var nodeA = cluster.Nodes[0];
        using var alice = cluster.Clients(TestCluster.Alice);
        var (a, b) = alice;
        // The first sandbox of a template may build its image and warm-up snapshot on this host.
        a.Timeout = TimeSpan.FromMinutes(15);
        b.Timeout = TimeSpan.FromMinutes(5);

        string id;
        using (var created = await a.PostAsJsonAsync("v1/sandboxes", new { template = Python, timeout_s = 1800 }, Ct))
        {
            string text = await created.Content.ReadAsStringAsync(Ct);
            Assert.True(created.StatusCode == HttpStatusCode.Created, $"{(int)created.StatusCode}: {text}\n{nodeA.Log}");
            id = JsonDocument.Parse(text).RootElement.GetProperty("id").GetString()!;
        }
        Assert.Equal("ok", (await ClusterRoutingTests.RunAsync(a, id, "x = 41")).GetProperty("status").GetString());

        using (var admin = nodeA.Client(TestCluster.Admin))
        {
            admin.Timeout = TimeSpan.FromMinutes(5);
            using var drained = await admin.PostAsync("v1/admin/drain", null, Ct);
            string body = await drained.Content.ReadAsStringAsync(Ct);
            Assert.True(drained.StatusCode == HttpStatusCode.OK, $"{body}\n{nodeA.Log}");
            Assert.Equal([id], JsonDocument.Parse(body).RootElement.GetProperty("moved").EnumerateArray().Select(e => e.GetString()));
        }
        using (var exit = new CancellationTokenSource(TimeSpan.FromSeconds(90)))
        {
            await nodeA.Process.WaitForExitAsync(exit.Token);
        }
        Assert.True(File.Exists(Path.Combine(cluster.SharedDir, "paused", id, "sandbox.json")), nodeA.Log);

        // Through B: B adopts it from the shared directory and restores the checkpoint, the interpreter's memory with it.
        var clock = Stopwatch.StartNew();
        while (true)
        {
            using var response = await b.PostAsJsonAsync($"v1/sandboxes/{id}/run", new { code = "print(x + 1)" }, Ct);
            string text = await response.Content.ReadAsStringAsync(Ct);
            if (response.StatusCode == HttpStatusCode.ServiceUnavailable && clock.Elapsed < TimeSpan.FromSeconds(45))
            {
                await Task.Delay(response.Headers.RetryAfter?.Delta ?? TimeSpan.FromSeconds(1), Ct);
                continue;
            }
            Assert.True(response.StatusCode == HttpStatusCode.OK, $"{(int)response.StatusCode}: {text}\n{cluster.Nodes[1].Log}");
            var result = JsonDocument.Parse(text).RootElement;
            Assert.True(result.GetProperty("stdout").GetString() == "42\n", text);
            Assert.Equal(cluster.Nodes[1].Url.ToString(), response.Headers.GetValues("SandboxVM-Node").Single());
            break;
        }
        using var deleted = await b.DeleteAsync($"v1/sandboxes/{id}", Ct);
        Assert.Equal(HttpStatusCode.NoContent, deleted.StatusCode);
    }
}
