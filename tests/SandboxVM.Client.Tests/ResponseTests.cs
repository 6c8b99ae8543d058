using System.Net;
using System.Text;

namespace SandboxVM.Client.Tests;

[Trait("tier", "unit")]
public class ResponseTests
{
    private static readonly byte[] s_png = [0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A, 0x00, 0xFF];

    private static readonly string s_fullResult = $$"""
        {
          "stdout": "45\n", "stderr": "warn\n", "output": "45\n", "exit_code": 0, "status": "ok",
          "artifacts": [
            {"path": "fig.png", "mime": "image/png", "size": 10, "sha256": "abc123", "content_base64": "{{Convert.ToBase64String(s_png)}}", "added_later": 1},
            {"path": "data/out.csv", "mime": "text/csv", "size": 2048, "sha256": "def456", "content_base64": null}
          ],
          "metrics": {"queue_ms": 1.5, "startup_ms": 12, "compile_ms": 0, "run_ms": 30.25, "host_ms": 2, "total_ms": 45.75, "vm_source": "pool", "gc_ms": 3},
          "truncated": false, "result": "45", "build_cached": null, "error": null,
          "session_id": "new-field", "nested_new": {"a": [1, 2, {"b": null}]}
        }
        """;

    private static SandboxClient ClientAnswering(string json, HttpStatusCode status = HttpStatusCode.OK) =>
        new(new SandboxClientOptions { HttpMessageHandler = new FakeHandler(status, json) });

    [Fact]
    public async Task Run_ParsesEveryFieldIncludingArtifactsAndMetrics()
    {
        using var client = ClientAnswering(s_fullResult);

        var result = await client.RunAsync("print(45)", cancellationToken: TestContext.Current.CancellationToken);

        Assert.Equal("45\n", result.Stdout);
        Assert.Equal("warn\n", result.Stderr);
        Assert.Equal("45\n", result.Output);
        Assert.Equal(0, result.ExitCode);
        Assert.Equal(RunStatus.Ok, result.Status);
        Assert.False(result.Truncated);
        Assert.Equal("45", result.Result);
        Assert.Null(result.BuildCached);
        Assert.Null(result.Error);

        Assert.Equal(2, result.Artifacts.Count);
        var fig = result.Artifacts[0];
        Assert.Equal("fig.png", fig.Path);
        Assert.Equal("image/png", fig.Mime);
        Assert.Equal(10, fig.Size);
        Assert.Equal("abc123", fig.Sha256);
        Assert.Equal(s_png, fig.Content);
        Assert.Null(result.Artifacts[1].Content);
        Assert.Equal(2048, result.Artifacts[1].Size);

        Assert.Equal(1.5, result.Metrics.QueueMs);
        Assert.Equal(12, result.Metrics.StartupMs);
        Assert.Equal(0, result.Metrics.CompileMs);
        Assert.Equal(30.25, result.Metrics.RunMs);
        Assert.Equal(2, result.Metrics.HostMs);
        Assert.Equal(45.75, result.Metrics.TotalMs);
        Assert.Equal(VmSource.Pool, result.Metrics.VmSource);
    }

    [Theory]
    [InlineData("ok", RunStatus.Ok)]
    [InlineData("error", RunStatus.Error)]
    [InlineData("compile_error", RunStatus.CompileError)]
    [InlineData("timeout", RunStatus.Timeout)]
    [InlineData("oom", RunStatus.Oom)]
    [InlineData("output_limit", RunStatus.OutputLimit)]
    [InlineData("sandbox_error", RunStatus.SandboxError)]
    [InlineData("cancelled_by_operator", RunStatus.Unknown)]
    [InlineData("", RunStatus.Unknown)]
    public async Task Run_MapsStatusStringToEnum(string wire, RunStatus expected)
    {
        using var client = ClientAnswering($$"""{"status":"{{wire}}","exit_code":null}""");

        var result = await client.RunAsync("x", cancellationToken: TestContext.Current.CancellationToken);

        Assert.Equal(expected, result.Status);
        Assert.Null(result.ExitCode);
    }

    [Theory]
    [InlineData("""{"status":null}""")]
    [InlineData("""{"status":3}""")]
    [InlineData("""{"status":{"kind":"ok"}}""")]
    [InlineData("""{}""")]
    public async Task Run_WhenStatusIsMissingOrNotAString_ReadsUnknown(string json)
    {
        using var client = ClientAnswering(json);

        var result = await client.RunAsync("x", cancellationToken: TestContext.Current.CancellationToken);

        Assert.Equal(RunStatus.Unknown, result.Status);
    }

    [Theory]
    [InlineData("pool", VmSource.Pool)]
    [InlineData("restore", VmSource.Restore)]
    [InlineData("boot", VmSource.Boot)]
    [InlineData("singleton", VmSource.Singleton)]
    [InlineData("process", VmSource.Process)]
    [InlineData("teleport", VmSource.Unknown)]
    public async Task Run_MapsVmSourceToEnum(string wire, VmSource expected)
    {
        using var client = ClientAnswering($$$"""{"status":"ok","metrics":{"vm_source":"{{{wire}}}"}}""");

        var result = await client.RunAsync("x", cancellationToken: TestContext.Current.CancellationToken);

        Assert.Equal(expected, result.Metrics.VmSource);
    }

    [Fact]
    public async Task Run_WhenStringsAndListsAreNull_GivesEmptyValuesNotNulls()
    {
        using var client = ClientAnswering("""{"stdout":null,"stderr":null,"output":null,"artifacts":null,"metrics":null,"status":"error"}""");

        var result = await client.RunAsync("x", cancellationToken: TestContext.Current.CancellationToken);

        Assert.Equal("", result.Stdout);
        Assert.Equal("", result.Stderr);
        Assert.Equal("", result.Output);
        Assert.Empty(result.Artifacts);
        Assert.NotNull(result.Metrics);
    }

    [Fact]
    public async Task RunResult_ToString_ShowsStatusTimingsOutputAndArtifacts()
    {
        using var client = ClientAnswering(s_fullResult);

        var text = (await client.RunAsync("x", cancellationToken: TestContext.Current.CancellationToken)).ToString();

        Assert.StartsWith("ok (exit 0) in 45.8 ms [startup 12 ms via pool, run 30.3 ms]\n45\n", text, StringComparison.Ordinal);
        Assert.Contains("result: 45", text, StringComparison.Ordinal);
        Assert.Contains("artifact: fig.png (image/png, 10 bytes)", text, StringComparison.Ordinal);
        Assert.Contains("artifact: data/out.csv (text/csv, 2048 bytes)", text, StringComparison.Ordinal);
        Assert.DoesNotContain("warn", text, StringComparison.Ordinal);
    }

    [Fact]
    public void RunResult_ToString_ForCompileErrorShowsCachedBuildAndTruncation()
    {
        var result = new RunResult
        {
            Status = RunStatus.CompileError,
            Output = "main.cpp:1: error",
            Truncated = true,
            BuildCached = false,
            Metrics = new RunMetrics { CompileMs = 812.34, TotalMs = 900, VmSource = VmSource.Restore },
        };

        Assert.Equal(
            "compile_error (exit -) in 900 ms [startup 0 ms via restore, compile 812.3 ms, run 0 ms] (output truncated)\nmain.cpp:1: error",
            result.ToString());
    }

    [Fact]
    public async Task Run_WhenSandboxFailed_ReadsErrorAndShowsItInToString()
    {
        using var client = ClientAnswering("""{"status":"sandbox_error","exit_code":null,"error":"agent did not answer","metrics":{"total_ms":3}}""");

        var result = await client.RunAsync("x", cancellationToken: TestContext.Current.CancellationToken);

        Assert.Equal(RunStatus.SandboxError, result.Status);
        Assert.Equal("agent did not answer", result.Error);
        Assert.Equal(
            "sandbox_error (exit -) in 3 ms [startup 0 ms via unknown, run 0 ms]: agent did not answer",
            result.ToString());
    }

    [Fact]
    public async Task ListTemplates_ParsesTemplateInfo()
    {
        const string json = """
            {"templates": [
              {"name": "python-data-analysis", "description": "numpy", "language": "python", "runtime": "qemu",
               "isolation": "vm", "accel": "tcg", "available": true, "unavailable_reason": null, "built": true,
               "output": "text+images", "network": "none", "warmup": "pool", "pool": {"ready": 2, "target": 3},
               "limits": {"compile_timeout_s": 0, "run_timeout_s": 30, "max_timeout_s": 300, "output_bytes": 1048576,
                          "processes": 64, "file_bytes": 104857600},
               "vcpus": 2, "memory_mib": 768, "future": true},
              {"name": "websearch-tools", "available": false, "unavailable_reason": "not built", "pool": null, "isolation": "shared-kernel"}
            ]}
            """;
        using var client = ClientAnswering(json);

        var templates = await client.ListTemplatesAsync(TestContext.Current.CancellationToken);

        Assert.Equal(2, templates.Count);
        var py = templates[0];
        Assert.Equal("python-data-analysis", py.Name);
        Assert.Equal("numpy", py.Description);
        Assert.Equal("python", py.Language);
        Assert.Equal("qemu", py.Runtime);
        Assert.Equal("vm", py.Isolation);
        Assert.Equal("tcg", py.Accel);
        Assert.True(py.Available);
        Assert.True(py.Built);
        Assert.Equal("text+images", py.Output);
        Assert.Equal("none", py.Network);
        Assert.Equal("pool", py.Warmup);
        Assert.Equal(2, py.Pool!.Ready);
        Assert.Equal(3, py.Pool.Target);
        Assert.Equal(30, py.Limits.RunTimeoutS);
        Assert.Equal(300, py.Limits.MaxTimeoutS);
        Assert.Equal(1048576, py.Limits.OutputBytes);
        Assert.Equal(64, py.Limits.Processes);
        Assert.Equal(104857600, py.Limits.FileBytes);
        Assert.Equal(2, py.Vcpus);
        Assert.Equal(768, py.MemoryMib);

        var web = templates[1];
        Assert.False(web.Available);
        Assert.Equal("not built", web.UnavailableReason);
        Assert.Equal("shared-kernel", web.Isolation);
        Assert.Null(web.Pool);
        Assert.NotNull(web.Limits);
    }

    [Fact]
    public async Task Health_ReadsStatus()
    {
        var handler = new FakeHandler(HttpStatusCode.OK, """{"status":"ok"}""");
        using var client = new SandboxClient(new SandboxClientOptions { HttpMessageHandler = handler });

        var health = await client.HealthAsync(TestContext.Current.CancellationToken);

        Assert.True(health.IsOk);
        Assert.Equal("ok", health.Status);
        Assert.Equal("/healthz", handler.LastRequest.RequestUri!.AbsolutePath);
    }

    [Fact]
    public async Task Run_WhenSuccessBodyIsNotJson_ThrowsApiExceptionNamingTheProblem()
    {
        using var client = new SandboxClient(new SandboxClientOptions
        {
            HttpMessageHandler = new FakeHandler(HttpStatusCode.OK, "<html>welcome to nginx</html>", "text/html"),
        });

        var ex = await Assert.ThrowsAsync<SandboxApiException>(
            () => client.RunAsync("x", cancellationToken: TestContext.Current.CancellationToken));

        Assert.Equal(HttpStatusCode.OK, ex.StatusCode);
        Assert.Contains("Unexpected response", ex.Message, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Run_DecodesUtf8Output()
    {
        var handler = new FakeHandler(_ => new HttpResponseMessage(HttpStatusCode.OK)
        {
            Content = new ByteArrayContent(Encoding.UTF8.GetBytes("""{"output":"héllo ✓ \u00e9","status":"ok"}""")),
        });
        using var client = new SandboxClient(new SandboxClientOptions { HttpMessageHandler = handler });

        var result = await client.RunAsync("x", cancellationToken: TestContext.Current.CancellationToken);

        Assert.Equal("héllo ✓ é", result.Output);
    }
}
