using System.Diagnostics;
using System.Net;
using System.Net.Http.Json;
using System.Text.Json;

namespace SandboxVM.Cluster.Tests;

/// <summary>
/// Paused sandboxes in the directory all nodes share (SandboxVM:SharedStateDir): a drained node's
/// sandboxes and a dead node's paused ones resume on another node with their files, and two nodes asked
/// at once do not both take one. The test nodes' pause keeps a sandbox's /tmp and home (FileSavingRuntime).
/// </summary>
[Trait("tier", "cluster")]
public sealed class SharedStateTests
{
    private static CancellationToken Ct => TestContext.Current.CancellationToken;

    /// <summary>How long a caller keeps trying a call answered 503 with Retry-After (a node leaving, the directory settling).</summary>
    private static readonly TimeSpan RetryPatience = TimeSpan.FromSeconds(45);

    [Fact]
    public async Task A_drained_nodes_sandboxes_resume_through_the_other_nodes_with_their_files()
    {
        await using var cluster = await TestCluster.StartOrSkipAsync(3);
        var nodeA = cluster.Nodes[0];
        using var alice = cluster.Clients(TestCluster.Alice);
        var (a, b, c) = alice;
        string running = await ClusterRoutingTests.CreateAsync(a);
        await ClusterRoutingTests.RunAsync(a, running, "echo 42 > /tmp/x; echo kept > $HOME/h");
        string paused = await ClusterRoutingTests.CreateAsync(a);
        await ClusterRoutingTests.RunAsync(a, paused, "echo paused-before > /tmp/y");
        using (var pause = await b.PostAsync($"v1/sandboxes/{paused}/pause", null, Ct))
        {
            Assert.True(pause.StatusCode == HttpStatusCode.OK, await pause.Content.ReadAsStringAsync(Ct));
        }
        string onB = await ClusterRoutingTests.CreateAsync(b);

        using var admin = nodeA.Client(TestCluster.Admin);
        using var drained = await admin.PostAsync("v1/admin/drain", null, Ct);
        string body = await drained.Content.ReadAsStringAsync(Ct);
        Assert.True(drained.StatusCode == HttpStatusCode.OK, body);
        var outcome = JsonDocument.Parse(body).RootElement;
        var moved = outcome.GetProperty("moved").EnumerateArray().Select(e => e.GetString()).ToList();
        Assert.Equal(new[] { paused, running }.Order(StringComparer.Ordinal), moved.Order(StringComparer.Ordinal));
        Assert.Empty(outcome.GetProperty("not_moved").EnumerateArray());
        // The node leaves: its process ends on its own, cleanly.
        using (var exit = new CancellationTokenSource(TimeSpan.FromSeconds(60)))
        {
            await nodeA.Process.WaitForExitAsync(exit.Token);
        }
        Assert.Equal(0, nodeA.Process.ExitCode);
        // Both are images in the shared directory now, held by no node until their next call.
        Assert.True(File.Exists(Path.Combine(cluster.SharedDir, "paused", running, "sandbox.json")), nodeA.Log);
        Assert.True(File.Exists(Path.Combine(cluster.SharedDir, "paused", paused, "sandbox.json")), nodeA.Log);

        var (first, servedBy) = await RunRetryingAsync(c, running, "cat /tmp/x $HOME/h");
        Assert.Equal("42\nkept\n", first.GetProperty("stdout").GetString());
        Assert.NotEqual(nodeA.Url.ToString(), servedBy);
        // Through the other node: the same sandbox, held where it was adopted.
        var (again, servedAgain) = await RunRetryingAsync(b, running, "cat /tmp/x");
        Assert.Equal("42\n", again.GetProperty("stdout").GetString());
        Assert.Equal(servedBy, servedAgain);
        var (second, _) = await RunRetryingAsync(b, paused, "cat /tmp/y");
        Assert.Equal("paused-before\n", second.GetProperty("stdout").GetString());
        Assert.Equal("running", (await ClusterRoutingTests.RunAsync(c, onB, "echo running")).GetProperty("stdout").GetString()!.Trim());
        Assert.False(Directory.Exists(Path.Combine(cluster.SharedDir, "paused", running)), "a resumed sandbox's image is removed");
    }

    [Fact]
    public async Task While_a_node_drains_new_work_sent_to_it_runs_on_another_node_and_a_run_in_progress_finishes_first()
    {
        await using var cluster = await TestCluster.StartOrSkipAsync(2);
        var nodeA = cluster.Nodes[0];
        string urlB = cluster.Nodes[1].Url.ToString();
        using var alice = cluster.Clients(TestCluster.Alice);
        var (a, b) = alice;
        string busy = await ClusterRoutingTests.CreateAsync(a);
        // A streamed run that has printed its first line holds the sandbox's run lock: the drain waits at it.
        using var request = new HttpRequestMessage(HttpMethod.Post, $"v1/sandboxes/{busy}/run")
        {
            Content = JsonContent.Create(new { code = "echo started; sleep 15; echo done > /tmp/d" }),
        };
        request.Headers.Accept.Add(new System.Net.Http.Headers.MediaTypeWithQualityHeaderValue("text/event-stream"));
        using var stream = await a.SendAsync(request, HttpCompletionOption.ResponseHeadersRead, Ct);
        using var events = new StreamReader(await stream.Content.ReadAsStreamAsync(Ct));
        while (await events.ReadLineAsync(Ct) is { } line && !line.Contains("started", StringComparison.Ordinal))
        {
        }

        using var admin = nodeA.Client(TestCluster.Admin);
        admin.Timeout = TimeSpan.FromSeconds(90);
        var drain = admin.PostAsync("v1/admin/drain", null, Ct);
        // Once A drains, a one-shot run and a create sent to A are served by B (a 503 node_draining, to be
        // retried, is what A answers while it knows no other node yet).
        var clock = Stopwatch.StartNew();
        while (await OneShotThroughDrainingAsync(a) != urlB)
        {
            Assert.False(drain.IsCompleted, "the drain ended before a run through A was relayed");
            Assert.True(clock.Elapsed < TimeSpan.FromSeconds(12), "runs through the draining node still ran there");
        }
        using (var created = await a.PostAsJsonAsync("v1/sandboxes", new { template = TestCluster.Template }, Ct))
        {
            string text = await created.Content.ReadAsStringAsync(Ct);
            Assert.True(created.StatusCode == HttpStatusCode.Created, text);
            Assert.Equal(urlB, Node(created));
            string id = JsonDocument.Parse(text).RootElement.GetProperty("id").GetString()!;
            Assert.Equal("here\n", (await ClusterRoutingTests.RunAsync(b, id, "echo here")).GetProperty("stdout").GetString());
        }
        Assert.False(drain.IsCompleted, "the drain did not wait for the run in progress");

        string rest = await events.ReadToEndAsync(Ct);
        Assert.Contains("\"status\":\"ok\"", rest.Replace(" ", "", StringComparison.Ordinal), StringComparison.Ordinal);
        using var drained = await drain;
        string body = await drained.Content.ReadAsStringAsync(Ct);
        Assert.True(drained.StatusCode == HttpStatusCode.OK, body);
        Assert.Contains(busy, JsonDocument.Parse(body).RootElement.GetProperty("moved").EnumerateArray().Select(e => e.GetString()));
        // The run finished before the pause: what it wrote moved with the sandbox.
        var (after, servedBy) = await RunRetryingAsync(b, busy, "cat /tmp/d");
        Assert.Equal("done\n", after.GetProperty("stdout").GetString());
        Assert.Equal(urlB, servedBy);
    }

    /// <summary>A one-shot run through a draining node: the node that ran it, or null for a 503 <c>node_draining</c> with Retry-After.</summary>
    private static async Task<string?> OneShotThroughDrainingAsync(HttpClient http)
    {
        using var response = await http.PostAsJsonAsync("v1/run", new { template = TestCluster.Template, code = "echo ok" }, Ct);
        string body = await response.Content.ReadAsStringAsync(Ct);
        if (response.StatusCode == HttpStatusCode.ServiceUnavailable)
        {
            Assert.Equal("node_draining", JsonDocument.Parse(body).RootElement.GetProperty("code").GetString());
            Assert.NotNull(response.Headers.RetryAfter);
            await Task.Delay(response.Headers.RetryAfter.Delta ?? TimeSpan.FromSeconds(1), Ct);
            return null;
        }
        Assert.True(response.StatusCode == HttpStatusCode.OK, body);
        Assert.Equal("ok\n", JsonDocument.Parse(body).RootElement.GetProperty("stdout").GetString());
        return response.Headers.TryGetValues("SandboxVM-Node", out var node) ? node.Single() : null;
    }

    [Fact]
    public async Task A_dead_nodes_paused_sandbox_resumed_through_two_nodes_at_once_is_taken_by_one()
    {
        await using var cluster = await TestCluster.StartOrSkipAsync(3);
        using var alice = cluster.Clients(TestCluster.Alice);
        var (a, b, c) = alice;
        string id = await ClusterRoutingTests.CreateAsync(a);
        await ClusterRoutingTests.RunAsync(a, id, "echo survived > /tmp/s");
        using (var pause = await a.PostAsync($"v1/sandboxes/{id}/pause", null, Ct))
        {
            Assert.True(pause.StatusCode == HttpStatusCode.OK, await pause.Content.ReadAsStringAsync(Ct));
        }
        cluster.Nodes[0].Kill();
        await cluster.WaitForMembersAsync(2);
        // Listed as paused (resumable), not lost.
        Assert.Equal("paused", await StateAsync(b, id));

        using var start = new SemaphoreSlim(0, 2);
        async Task<(HttpStatusCode Status, string Body, string? Node)> ResumeAsync(HttpClient http)
        {
            await start.WaitAsync(Ct);
            using var response = await http.PostAsync($"v1/sandboxes/{id}/resume", null, Ct);
            return (response.StatusCode, await response.Content.ReadAsStringAsync(Ct), Node(response));
        }
        var throughB = ResumeAsync(b);
        var throughC = ResumeAsync(c);
        start.Release(2);
        var answers = await Task.WhenAll(throughB, throughC);
        string all = string.Join("\n", answers.Select(x => $"{(int)x.Status} {x.Node} {x.Body}"));
        // One resumed it; the other was sent to the same node and found it running.
        Assert.Single(answers, x => x.Status == HttpStatusCode.OK);
        var other = Assert.Single(answers, x => x.Status != HttpStatusCode.OK);
        Assert.True(other.Status == HttpStatusCode.Conflict && other.Body.Contains("sandbox_not_paused", StringComparison.Ordinal), all);
        Assert.Equal(answers[0].Node, answers[1].Node);

        foreach (var http in (HttpClient[])[b, c])
        {
            using var response = await http.PostAsJsonAsync($"v1/sandboxes/{id}/run", new { code = "cat /tmp/s" }, Ct);
            string text = await response.Content.ReadAsStringAsync(Ct);
            Assert.True(response.StatusCode == HttpStatusCode.OK, text);
            Assert.Equal("survived\n", JsonDocument.Parse(text).RootElement.GetProperty("stdout").GetString());
            Assert.Equal(answers[0].Node, Node(response));
        }
        Assert.Equal("running", await StateAsync(c, id));
    }

    private static string? Node(HttpResponseMessage response) =>
        response.Headers.TryGetValues("SandboxVM-Node", out var values) ? values.Single() : null;

    /// <summary>The sandbox's state in the caller's cluster-wide list (it must be there exactly once).</summary>
    private static async Task<string?> StateAsync(HttpClient http, string id)
    {
        var list = await http.GetFromJsonAsync<JsonElement>("v1/sandboxes", Ct);
        return Assert.Single(list.GetProperty("sandboxes").EnumerateArray(), s => s.GetProperty("id").GetString() == id).GetProperty("state").GetString();
    }

    /// <summary>A run, tried again while the answer is 503 (what a client does with Retry-After); the result and the node that served it.</summary>
    private static async Task<(JsonElement Result, string? Node)> RunRetryingAsync(HttpClient http, string id, string code)
    {
        var clock = Stopwatch.StartNew();
        while (true)
        {
            using var response = await http.PostAsJsonAsync($"v1/sandboxes/{id}/run", new { code }, Ct);
            string body = await response.Content.ReadAsStringAsync(Ct);
            if (response.StatusCode == HttpStatusCode.ServiceUnavailable && clock.Elapsed < RetryPatience)
            {
                await Task.Delay(response.Headers.RetryAfter?.Delta ?? TimeSpan.FromSeconds(1), Ct);
                continue;
            }
            Assert.True(response.StatusCode == HttpStatusCode.OK, $"{(int)response.StatusCode}: {body}");
            return (JsonDocument.Parse(body).RootElement, Node(response));
        }
    }
}
