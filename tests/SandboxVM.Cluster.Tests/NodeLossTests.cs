using System.Collections.Concurrent;
using System.Diagnostics;
using System.Net;
using System.Net.Http.Json;
using System.Text.Json;
using SandboxVM.Testing;

namespace SandboxVM.Cluster.Tests;

/// <summary>
/// kill -9 of one node of three under a bounded load: every call gets an answer within its timeout, the
/// dead node's sandbox answers <c>sandbox_lost</c> once Orleans declares the node dead (1 s probes, 2
/// missed, configured by <see cref="TestCluster"/>), the other nodes' sandboxes never notice.
/// </summary>
[Trait("tier", "cluster")]
public sealed class NodeLossTests
{
    private static CancellationToken Ct => TestContext.Current.CancellationToken;

    /// <summary>What a call may take, through a node that forwards to a dead one included.</summary>
    private static readonly TimeSpan CallTimeout = TimeSpan.FromSeconds(20);

    [Fact]
    public async Task A_killed_nodes_sandbox_answers_sandbox_lost_and_nothing_hangs()
    {
        await using var cluster = await TestCluster.StartOrSkipAsync(3);
        using var alice = cluster.Clients(TestCluster.Alice);
        var (a, b, c) = alice;
        a.Timeout = b.Timeout = CallTimeout;
        string onA = await ClusterRoutingTests.CreateAsync(a);
        string onB = await ClusterRoutingTests.CreateAsync(b);
        string onC = await ClusterRoutingTests.CreateAsync(c);
        // Reachable through the others before the kill.
        await ClusterRoutingTests.RunAsync(a, onC, "echo before");

        var answers = new ConcurrentQueue<(string Sandbox, string Outcome)>();
        using var stop = CancellationTokenSource.CreateLinkedTokenSource(Ct);
        var load = Enumerable.Range(0, 4).Select(i => Task.Run(async () =>
        {
            var http = i % 2 == 0 ? a : b;
            string[] targets = [onA, onB, onC];
            for (int n = 0; !stop.IsCancellationRequested; n++)
            {
                string id = targets[(i + n) % targets.Length];
                answers.Enqueue((id, await OutcomeAsync(http, id)));
            }
        })).ToList();

        await Eventually.TrueAsync(() => answers.Count(x => x.Sandbox == onC) >= 4, () => "the load did not start");
        var killedAt = Stopwatch.StartNew();
        cluster.Nodes[2].Kill();
        TimeSpan lostAfter = TimeSpan.Zero;
        while (true)
        {
            string outcome = await OutcomeAsync(a, onC);
            if (outcome == "410 sandbox_lost")
            {
                lostAfter = killedAt.Elapsed;
                break;
            }
            Assert.True(killedAt.Elapsed < TimeSpan.FromSeconds(60), $"still '{outcome}' 60 s after the kill");
            await Task.Delay(100, Ct);
        }
        // A little more load after the verdict, then the callers stop.
        int seen = answers.Count;
        await Eventually.TrueAsync(() => answers.Count >= seen + 8, () => "the load stopped after the verdict");
        await stop.CancelAsync();
        await Task.WhenAll(load);

        Assert.Equal("410 sandbox_lost", await OutcomeAsync(b, onC));
        var byOutcome = answers.GroupBy(x => (x.Sandbox == onC ? "C" : "A/B") + " " + x.Outcome).ToDictionary(g => g.Key, g => g.Count());
        string summary = string.Join(", ", byOutcome.Select(kv => $"{kv.Key}: {kv.Value}")) + $"; lost after {lostAfter.TotalSeconds:F1} s";
        // The live nodes' sandboxes answered every call; the dead node's only with a run, a retry or lost.
        Assert.True(answers.Where(x => x.Sandbox != onC).All(x => x.Outcome == "200"), summary);
        Assert.True(answers.Where(x => x.Sandbox == onC).All(x => x.Outcome is "200" or "503 node_unreachable" or "410 sandbox_lost"), summary);
        await cluster.WaitForMembersAsync(2);
        var list = await b.GetFromJsonAsync<JsonElement>("v1/sandboxes", Ct);
        var states = list.GetProperty("sandboxes").EnumerateArray().ToDictionary(s => s.GetProperty("id").GetString()!, s => s.GetProperty("state").GetString());
        Assert.Equal("lost", states[onC]);
        Assert.Equal("running", states[onA]);
        Assert.Equal("running", states[onB]);
        TestContext.Current.SendDiagnosticMessage(summary);
    }

    /// <summary>"200", or the status and problem code; "timeout" for a call without an answer in time.</summary>
    private static async Task<string> OutcomeAsync(HttpClient http, string id)
    {
        try
        {
            using var response = await http.PostAsJsonAsync($"v1/sandboxes/{id}/run", new { code = "echo ok" }, Ct);
            if (response.StatusCode == HttpStatusCode.OK)
            {
                return "200";
            }
            string body = await response.Content.ReadAsStringAsync(Ct);
            string? code = null;
            try
            {
                code = JsonDocument.Parse(body).RootElement.GetProperty("code").GetString();
            }
            catch (JsonException)
            {
                code = body.Length > 80 ? body[..80] : body;
            }
            return $"{(int)response.StatusCode} {code}";
        }
        catch (TaskCanceledException) when (!Ct.IsCancellationRequested)
        {
            return "timeout";
        }
        catch (HttpRequestException e)
        {
            return "error " + e.Message;
        }
    }
}
