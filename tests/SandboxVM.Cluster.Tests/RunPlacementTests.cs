using System.Diagnostics;
using System.Net;
using System.Net.Http.Json;
using System.Text.Json;

namespace SandboxVM.Cluster.Tests;

/// <summary>One-shot runs go to the least loaded node when no node has a ready clone of their template.</summary>
[Trait("tier", "cluster")]
public sealed class RunPlacementTests
{
    private static CancellationToken Ct => TestContext.Current.CancellationToken;

    [Fact]
    public async Task A_one_shot_run_sent_to_a_busy_node_runs_on_the_idle_one()
    {
        await using var cluster = await TestCluster.StartOrSkipAsync(2);
        using var alice = cluster.Clients(TestCluster.Alice);
        var (a, b) = alice;
        for (int i = 0; i < 3; i++)
        {
            await ClusterRoutingTests.CreateAsync(a);
        }

        // Figures travel once a second: the first runs may still be placed on what A knew before.
        string? ranOn = null;
        var start = Stopwatch.StartNew();
        while (ranOn != cluster.Nodes[1].Url.ToString())
        {
            Assert.True(start.Elapsed < TimeSpan.FromSeconds(20), $"runs through A still ran on {ranOn}:\n{cluster.Nodes[0].Log}");
            ranOn = await OneShotAsync(a);
        }
        // Steady: every run through A goes to B, and B keeps its own.
        for (int i = 0; i < 3; i++)
        {
            Assert.Equal(cluster.Nodes[1].Url.ToString(), await OneShotAsync(a));
            Assert.Equal(cluster.Nodes[1].Url.ToString(), await OneShotAsync(b));
        }
    }

    /// <summary>Runs <c>echo ok</c> as a one-shot run; the node that ran it.</summary>
    internal static async Task<string?> OneShotAsync(HttpClient http)
    {
        using var response = await http.PostAsJsonAsync("v1/run", new { template = TestCluster.Template, code = "echo ok" }, Ct);
        string body = await response.Content.ReadAsStringAsync(Ct);
        Assert.True(response.StatusCode == HttpStatusCode.OK, body);
        Assert.Equal("ok\n", JsonDocument.Parse(body).RootElement.GetProperty("stdout").GetString());
        return response.Headers.TryGetValues("SandboxVM-Node", out var node) ? node.Single() : null;
    }
}
