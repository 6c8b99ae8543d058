using System.Net;
using System.Text.RegularExpressions;
using Microsoft.Extensions.DependencyInjection;
using SandboxVM.Core.Runs;
using SandboxVM.Egress;

namespace SandboxVM.Server.Tests;

/// <summary>/metrics: Prometheus text with the egress and server meters.</summary>
[Trait("tier", "unit")]
[Collection(nameof(ProcessWide))]
public partial class MetricsTests
{
    private static async Task<string> ScrapeAsync(TestServer server, string? apiKey = null)
    {
        var response = await server.GetAsync("/metrics", apiKey);
        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        Assert.Equal("text/plain", response.Content.Headers.ContentType?.MediaType);
        return await response.Content.ReadAsStringAsync(TestContext.Current.CancellationToken);
    }

    /// <summary>The value of the sample <paramref name="name"/> whose labels include all of <paramref name="labels"/>; null when absent.</summary>
    private static double? Sample(string text, string name, params string[] labels)
    {
        foreach (var line in text.Split('\n'))
        {
            var m = SampleLine().Match(line);
            if (m.Success && m.Groups["name"].Value == name && labels.All(l => m.Groups["labels"].Value.Contains(l, StringComparison.Ordinal)))
            {
                return double.Parse(m.Groups["value"].Value, System.Globalization.CultureInfo.InvariantCulture);
            }
        }
        return null;
    }

    [GeneratedRegex(@"^(?<name>[a-zA-Z_:][a-zA-Z0-9_:]*)(\{(?<labels>[^}]*)\})? (?<value>\S+)")]
    private static partial Regex SampleLine();

    [Fact]
    public async Task Metrics_ServesPrometheusText_WithAnEgressSeries_AfterAGatewayDecision()
    {
        await using var server = await TestServer.StartAsync();
        var gateway = new EgressGateway(EgressPolicy.Create([], []));

        // A loopback address is denied by the policy before any socket is opened: a real measurement, no traffic.
        await using (var denied = await gateway.ConnectAsync(new EgressRequest("test-sandbox", "127.0.0.1", 80), TestContext.Current.CancellationToken))
        {
            Assert.False(denied.IsConnected);
        }
        string text = await ScrapeAsync(server);

        Assert.Contains("# TYPE sandboxvm_egress_", text);
        double? count = Sample(text, "sandboxvm_egress_connections", "decision=\"denied\"", "reason=\"private_address\"");
        Assert.True(count >= 1, text);
    }

    [Fact]
    public async Task Metrics_CountToolRuns_ByTemplateAndStatus_WithTheirDuration()
    {
        await using var server = await TestServer.StartAsync();
        server.Runner.Respond = _ => FakeToolRunner.Ok("""{"results": []}""");
        Assert.Equal(HttpStatusCode.OK, (await server.PostJsonAsync("/v1/tools/search", """{"query": "a"}""")).StatusCode);
        Assert.Equal(HttpStatusCode.OK, (await server.PostJsonAsync("/v1/tools/search", """{"query": "b"}""")).StatusCode);
        server.Runner.Respond = _ => FakeToolRunner.Failed(RunStatus.Timeout, "too slow");
        Assert.Equal(HttpStatusCode.GatewayTimeout, (await server.PostJsonAsync("/v1/tools/fetch", """{"url": "https://e.example/"}""")).StatusCode);
        Assert.Equal(HttpStatusCode.BadRequest, (await server.PostJsonAsync("/v1/tools/fetch", """{"url": "ftp://e.example/"}""")).StatusCode);

        string text = await ScrapeAsync(server);

        Assert.Equal(2, Sample(text, "sandboxvm_server_runs", "template=\"websearch-tools\"", "status=\"ok\"", "kind=\"tool\""));
        Assert.Equal(1, Sample(text, "sandboxvm_server_runs", "template=\"websearch-tools\"", "status=\"timeout\"", "kind=\"tool\""));
        Assert.Equal(2, Sample(text, "sandboxvm_server_run_duration_seconds_count", "template=\"websearch-tools\"", "status=\"ok\""));
        Assert.Equal(0.3, Sample(text, "sandboxvm_server_run_duration_seconds_sum", "template=\"websearch-tools\"", "status=\"ok\"")!.Value, 6);
        Assert.Equal(2, Sample(text, "sandboxvm_server_run_duration_seconds_bucket", "status=\"ok\"", "le=\"0.25\""));
        // Where the time went, per phase: two ok runs of 120 ms run and 1 ms queue each, plus the failed one's.
        Assert.Equal(3, Sample(text, "sandboxvm_server_run_phase_seconds_count", "template=\"websearch-tools\"", "phase=\"run\""));
        Assert.Equal(0.24, Sample(text, "sandboxvm_server_run_phase_seconds_sum", "template=\"websearch-tools\"", "phase=\"run\"")!.Value, 6);
        Assert.Equal(0.002, Sample(text, "sandboxvm_server_run_phase_seconds_sum", "template=\"websearch-tools\"", "phase=\"queue\"")!.Value, 6);
        Assert.Equal(2, Sample(text, "sandboxvm_server_tool_requests", "tool=\"search\"", "outcome=\"ok\""));
        Assert.Equal(1, Sample(text, "sandboxvm_server_tool_requests", "tool=\"fetch\"", "outcome=\"tool_timeout\""));
        Assert.Equal(1, Sample(text, "sandboxvm_server_tool_requests", "tool=\"fetch\"", "outcome=\"invalid_url\""));
    }

    [Fact]
    public async Task Metrics_SplitARunsHostTime_ByPart()
    {
        await using var server = await TestServer.StartAsync();
        server.Runner.Respond = _ =>
        {
            var r = FakeToolRunner.Ok("""{"results": []}""");
            r.Metrics.HostMs = 60;
            r.Metrics.HostPhases = new() { [HostPhases.EndProcesses] = 40, [HostPhases.List] = 15, [HostPhases.Other] = 5 };
            return r;
        };
        Assert.Equal(HttpStatusCode.OK, (await server.PostJsonAsync("/v1/tools/search", """{"query": "a"}""")).StatusCode);

        string text = await ScrapeAsync(server);

        Assert.Equal(1, Sample(text, "sandboxvm_server_run_host_phase_seconds_count", "template=\"websearch-tools\"", "phase=\"end_processes\""));
        Assert.Equal(0.04, Sample(text, "sandboxvm_server_run_host_phase_seconds_sum", "template=\"websearch-tools\"", "phase=\"end_processes\"")!.Value, 6);
        Assert.Equal(0.015, Sample(text, "sandboxvm_server_run_host_phase_seconds_sum", "template=\"websearch-tools\"", "phase=\"list\"")!.Value, 6);
        Assert.Null(Sample(text, "sandboxvm_server_run_host_phase_seconds_sum", "template=\"websearch-tools\"", "phase=\"prepare\""));
    }

    [Fact]
    public async Task Metrics_ShowLiveGauges_AndProcessMetrics()
    {
        await using var server = await TestServer.StartAsync();

        string text = await ScrapeAsync(server);

        // No session manager or VM tracker in this test server: the gauges read zero rather than failing the scrape.
        Assert.Equal(0, Sample(text, "sandboxvm_server_sandboxes_live"));
        Assert.Equal(0, Sample(text, "sandboxvm_server_vms_live"));
        Assert.NotNull(Sample(text, "process_cpu_seconds_total"));
    }

    [Fact]
    public async Task Metrics_RecordRunsOfEveryKind()
    {
        await using var server = await TestServer.StartAsync();
        var metrics = server.Services.GetRequiredService<ServerMetrics>();

        await metrics.TrackAsync(() => "python-data-analysis", ServerMetrics.KindRun,
            Task.FromResult(new RunResult { Status = RunStatus.CompileError, Metrics = new RunMetrics { TotalMs = 10 } }));
        await metrics.TrackAsync(() => null, ServerMetrics.KindSandbox,
            Task.FromResult(new RunResult { Status = RunStatus.SandboxError, Metrics = new RunMetrics { TotalMs = 10 } }));
        string text = await ScrapeAsync(server);

        Assert.Equal(1, Sample(text, "sandboxvm_server_runs", "template=\"python-data-analysis\"", "status=\"compile_error\"", "kind=\"run\""));
        Assert.Equal(1, Sample(text, "sandboxvm_server_runs", "template=\"unknown\"", "status=\"sandbox_error\"", "kind=\"sandbox\""));
    }

    [Fact]
    public async Task WithAnApiKey_MetricsNeedIt()
    {
        await using var server = await TestServer.StartAsync(apiKey: "s3cret");

        var without = await server.GetAsync("/metrics");

        Assert.Equal(HttpStatusCode.Unauthorized, without.StatusCode);
        string text = await ScrapeAsync(server, "s3cret");
        Assert.True(text.Contains("sandboxvm_server_", StringComparison.Ordinal), text);
    }
}
