using System.Net;
using System.Text;
using SandboxVM.Client;
using SandboxVM.Testing;

namespace SandboxVM.Server.Tests;

/// <summary>
/// The real server (ServerApp on loopback) whose sandboxes are the real guest agent as a local process
/// (<see cref="LocalAgentRuntime"/>), driven through the real C# SDK: every verdict of RunService, a
/// session, streaming and the problem responses, with real python3 and sh steps, in seconds.
/// </summary>
public sealed class LocalAgentServer : IAsyncLifetime
{
    /// <summary>Python with a session kernel (fork_server), images as artifacts, a small output cap and the least memory.</summary>
    public const string Python = "local-py";

    /// <summary>sh with a compile step (<c>sh -n</c>, a syntax check) so a syntax error is a compile error.</summary>
    public const string Shell = "local-sh";

    public const int OutputBytes = 4096;

    private LoopbackServer? _server;

    public LocalAgentRuntime Runtime { get; private set; } = null!;
    public SandboxClient Client { get; private set; } = null!;
    public HttpClient Http => _server!.Http;

    /// <summary>A loopback port nothing listens on (the local agent's sandboxes share the host's network).</summary>
    public static int FreePort()
    {
        using var listener = new System.Net.Sockets.TcpListener(IPAddress.Loopback, 0);
        listener.Start();
        return ((IPEndPoint)listener.LocalEndpoint).Port;
    }

    /// <summary>The templates of this server (<see cref="Python"/>, <see cref="Shell"/>) as YAML by name, for other servers on the local agent.</summary>
    public static Dictionary<string, string> Templates() => new()
    {
        [Python] = PythonYaml(Python, memoryMib: 64, runTimeoutS: 10, maxTimeoutS: 30, OutputBytes),
        [Shell] = $"""
            name: {Shell}
            source: {"{"}type: debian, suite: bookworm, packages: []{"}"}
            language:
              name: shell
              source_file: main.sh
              compile: [sh, -n, main.sh]
              run: [sh, main.sh]
            limits:
              run_timeout_s: 10
              max_timeout_s: 30
            warmup:
              strategy: cold
            """,
    };

    /// <summary>A python template with a session kernel (fork_server) whose files in /tmp/outputs are artifacts.</summary>
    public static string PythonYaml(string name, int memoryMib, int runTimeoutS, int maxTimeoutS, int outputBytes) => $"""
        name: {name}
        source: {"{"}type: debian, suite: bookworm, packages: []{"}"}
        language:
          name: python
          source_file: main.py
          run: [python3, -u, main.py]
          fork_server:
            preload: []
        memory_mib: {memoryMib}
        limits:
          run_timeout_s: {runTimeoutS}
          max_timeout_s: {maxTimeoutS}
          output_bytes: {outputBytes}
        output: text+images
        warmup:
          strategy: cold
        """;

    public async ValueTask InitializeAsync()
    {
        if (LocalAgentRuntime.UnavailableReason is not null)
        {
            return;
        }
        Runtime = new LocalAgentRuntime();
        _server = await LoopbackServer.StartAsync(Runtime, Templates(), o => o.HostTimeoutMarginS = 2);
        Client = new SandboxClient(_server.BaseUri.ToString());
    }

    /// <summary>This server, or a skip saying why the local agent cannot run here.</summary>
    public LocalAgentServer OrSkip()
    {
        Assert.SkipWhen(LocalAgentRuntime.UnavailableReason is not null, $"local agent runtime: {LocalAgentRuntime.UnavailableReason}");
        return this;
    }

    public async ValueTask DisposeAsync()
    {
        Client?.Dispose();
        if (_server is not null)
        {
            await _server.DisposeAsync();
        }
        if (Runtime is not null)
        {
            await Runtime.DisposeAsync();
        }
    }
}

[Trait("tier", "integration")]
public sealed class LocalAgentServerTests(LocalAgentServer server) : IClassFixture<LocalAgentServer>
{
    private static CancellationToken Ct => TestContext.Current.CancellationToken;

    private readonly LocalAgentServer _server = server.OrSkip();

    private SandboxClient Client => _server.Client;

    private Task<RunResult> RunAsync(string code, string template = LocalAgentServer.Python, double? timeoutS = null) =>
        Client.RunAsync(new RunRequest { Template = template, Code = code, TimeoutS = timeoutS }, Ct);

    /// <summary>The status, or a failure with the run's error and output and the agent's log.</summary>
    private void AssertStatus(RunStatus expected, RunResult result) =>
        Assert.True(result.Status == expected, $"expected {expected}, got {result.Status}: {result.Error}\nstdout: {result.Stdout}\nstderr: {result.Stderr}\n"
            + $"agent log: {_server.Runtime.Vms.LastOrDefault()?.Diagnostics}");

    /// <summary>Every sandbox a run started is gone afterwards (one-shot sandboxes are torn down off the request path).</summary>
    private async Task AssertAllSandboxesEndAsync()
    {
        var deadline = DateTime.UtcNow + TimeSpan.FromSeconds(20);
        while (_server.Runtime.Vms.Any(v => !v.Ended) && DateTime.UtcNow < deadline)
        {
            await Task.Delay(20, Ct);
        }
        Assert.All(_server.Runtime.Vms, v => Assert.True(v.Ended, $"sandbox {v.Id} is still running"));
    }

    [Fact]
    public async Task Run_Ok_ReturnsOutputExitCodeAndArtifacts()
    {
        var result = await RunAsync("""
            import os, sys
            print("hello from", os.getcwd())
            print("to stderr", file=sys.stderr)
            with open("/tmp/outputs/plot.png", "wb") as f:
                f.write(b"\x89PNG\r\n\x1a\n" + bytes(100))
            """);

        AssertStatus(RunStatus.Ok, result);
        Assert.Equal(0, result.ExitCode);
        Assert.Equal("hello from /home/sandbox\n", result.Stdout);
        Assert.Equal("to stderr\n", result.Stderr);
        var artifact = Assert.Single(result.Artifacts);
        Assert.Equal("plot.png", artifact.Path);
        Assert.Equal("image/png", artifact.Mime);
        Assert.Equal(108, artifact.Size);
        await AssertAllSandboxesEndAsync();
    }

    [Fact]
    public async Task Run_OfPython_ReturnsItsLastExpression_AsANotebookCellWould()
    {
        // One-shot python runs in the sandbox's warm kernel: the value of a final expression comes back
        // as in a sandbox's run, and a fresh sandbox has no earlier state to report as lost.
        var result = await RunAsync("import sys\nprint(__name__, sys.argv[0])\n6 * 7\n");

        AssertStatus(RunStatus.Ok, result);
        Assert.Equal("__main__ main.py\n", result.Stdout);
        Assert.Equal("42", result.Result);
        Assert.False(result.StateReset);
        await AssertAllSandboxesEndAsync();
    }

    [Fact]
    public async Task Run_NonZeroExit_IsAnError_WithItsExitCode()
    {
        var result = await RunAsync("import sys; sys.exit(3)");

        AssertStatus(RunStatus.Error, result);
        Assert.Equal(3, result.ExitCode);
    }

    [Fact]
    public async Task Run_PastItsTimeout_IsATimeout_AndKeepsTheOutputSoFar()
    {
        // sh, not Python: its start-up fits in the timeout even on a loaded machine (Python's did not, at a load of 40).
        var result = await RunAsync("echo before\nsleep 60", LocalAgentServer.Shell, timeoutS: 2);

        AssertStatus(RunStatus.Timeout, result);
        Assert.Equal("before\n", result.Stdout);
        Assert.True(result.Metrics.RunMs < 10_000, $"run took {result.Metrics.RunMs} ms");
        await AssertAllSandboxesEndAsync();
    }

    [Fact]
    public async Task Run_OverTheTemplatesMemory_IsOom()
    {
        Assert.SkipUnless(_server.Runtime.LimitsMemory, "the local agent runtime has no memory cgroup here (needs root and writable cgroups)");

        // 600 MiB written (not just reserved) against 64 MiB for the code (plus the agent's headroom, which the
        // run must fill too within its 10 s timeout on a loaded host: LocalAgentRuntime.AgentHeadroomMib).
        var result = await RunAsync("s = 'a' * (600 << 20)\nprint(len(s))");

        AssertStatus(RunStatus.Oom, result);
        Assert.Null(result.ExitCode);
        Assert.Equal("", result.Stdout);
    }

    [Fact]
    public async Task Run_PastTheOutputCap_IsOutputLimit_CutAtTheCap()
    {
        var result = await RunAsync("while True: print('x' * 99)");

        AssertStatus(RunStatus.OutputLimit, result);
        Assert.True(result.Truncated);
        Assert.Equal(LocalAgentServer.OutputBytes, Encoding.UTF8.GetByteCount(result.Stdout) + Encoding.UTF8.GetByteCount(result.Stderr));
        await AssertAllSandboxesEndAsync();
    }

    [Fact]
    public async Task Run_ThatDoesNotCompile_IsACompileError_AndNeverRuns()
    {
        var result = await RunAsync("echo ran\nif then fi", LocalAgentServer.Shell);

        AssertStatus(RunStatus.CompileError, result);
        Assert.Equal(2, result.ExitCode);
        Assert.Contains("syntax error", result.Stderr, StringComparison.OrdinalIgnoreCase);
        Assert.Equal("", result.Stdout);

        var good = await RunAsync("echo compiled and ran", LocalAgentServer.Shell);
        AssertStatus(RunStatus.Ok, good);
        Assert.Equal("compiled and ran\n", good.Stdout);
    }

    [Fact]
    public async Task Run_WhoseAgentIsKilledMidRun_IsASandboxError_WithTheOutputSoFar()
    {
        RunResult? result = null;
        var stdout = new StringBuilder();
        await foreach (var e in Client.RunStreamAsync(new RunRequest { Template = LocalAgentServer.Python, Code = "import time\nprint('started', flush=True)\ntime.sleep(60)" }, Ct))
        {
            switch (e)
            {
                case StdoutEvent s:
                    stdout.Append(s.Text);
                    if (stdout.ToString() == "started\n")
                    {
                        _server.Runtime.Vms[^1].KillAgent();
                    }
                    break;
                case ResultEvent r:
                    result = r.Result;
                    break;
            }
        }

        Assert.NotNull(result);
        AssertStatus(RunStatus.SandboxError, result);
        Assert.Equal("started\n", result.Stdout);
        Assert.StartsWith("the sandbox failed", result.Error, StringComparison.Ordinal);
        await AssertAllSandboxesEndAsync();
    }

    [Fact]
    public async Task Stream_SendsOutputInOrder_ThenArtifacts_ThenTheResult()
    {
        var events = new List<RunEvent>();
        await foreach (var e in Client.RunStreamAsync(new RunRequest
        {
            Template = LocalAgentServer.Python,
            Code = """
                import sys
                for i in range(5):
                    print(f"out {i}", flush=True)
                    print(f"err {i}", file=sys.stderr, flush=True)
                open("/tmp/outputs/a.png", "wb").write(b"\x89PNG")
                """,
        }, Ct))
        {
            events.Add(e);
        }

        var result = Assert.IsType<ResultEvent>(events[^1]).Result;
        AssertStatus(RunStatus.Ok, result);
        Assert.Equal(string.Concat(Enumerable.Range(0, 5).Select(i => $"out {i}\n")), string.Concat(events.OfType<StdoutEvent>().Select(e => e.Text)));
        Assert.Equal(string.Concat(Enumerable.Range(0, 5).Select(i => $"err {i}\n")), string.Concat(events.OfType<StderrEvent>().Select(e => e.Text)));
        Assert.Equal(result.Stdout, string.Concat(events.OfType<StdoutEvent>().Select(e => e.Text)));
        int artifact = events.FindIndex(e => e is ArtifactEvent);
        Assert.True(artifact > events.FindLastIndex(e => e is StdoutEvent or StderrEvent), string.Join(", ", events));
        Assert.Equal("a.png", ((ArtifactEvent)events[artifact]).Artifact.Path);
    }

    [Fact]
    public async Task Session_KeepsStateBetweenRuns_AndItsFilesGoUpAndDown()
    {
        await using var sandbox = await Client.CreateSandboxAsync(LocalAgentServer.Python, cancellationToken: Ct);

        await sandbox.Files.WriteAsync("data/in.txt", "21", Ct);
        var first = await sandbox.RunAsync("x = int(open('data/in.txt').read())", cancellationToken: Ct);
        AssertStatus(RunStatus.Ok, first);

        var second = await sandbox.RunAsync("open('data/out.txt', 'w').write(str(x * 2))\nx * 2", cancellationToken: Ct);
        AssertStatus(RunStatus.Ok, second);
        Assert.False(second.StateReset);
        Assert.Equal("42", second.Result);
        Assert.Equal("42", await sandbox.Files.ReadTextAsync("data/out.txt", Ct));
        Assert.Equal(["in.txt", "out.txt"], (await sandbox.Files.ListAsync("data", Ct)).Select(f => f.Name).Order(StringComparer.Ordinal));

        // A run that times out is interrupted (KeyboardInterrupt): the session and its state live on.
        var timedOut = await sandbox.RunAsync("import time; time.sleep(60)", new RunOptions { TimeoutS = 1 }, Ct);
        AssertStatus(RunStatus.Timeout, timedOut);
        var after = await sandbox.RunAsync("print('x' in globals())", cancellationToken: Ct);
        Assert.Equal("True\n", after.Stdout);
        Assert.False(after.StateReset);
        Assert.Equal("42", await sandbox.Files.ReadTextAsync("data/out.txt", Ct));

        Assert.True(await sandbox.KillAsync(Ct));
        await AssertAllSandboxesEndAsync();
    }

    [Fact]
    public async Task UnknownTemplate_IsA400Problem_NamingTheField()
    {
        var e = await Assert.ThrowsAnyAsync<SandboxBadRequestException>(() => RunAsync("print(1)", template: "no-such-template"));

        Assert.Equal(HttpStatusCode.BadRequest, e.StatusCode);
        Assert.Equal("unknown_template", e.Code);
        Assert.Equal("template", e.Field);
        Assert.Contains("no-such-template", e.Detail ?? e.Message, StringComparison.Ordinal);
    }

    [Fact]
    public async Task TimeoutOverTheTemplatesMaximum_IsA400Problem_NamingTheField()
    {
        int before = _server.Runtime.Vms.Count;

        var e = await Assert.ThrowsAnyAsync<SandboxBadRequestException>(() => RunAsync("print(1)", timeoutS: 31));

        Assert.Equal("timeout_out_of_range", e.Code);
        Assert.Equal("timeout_s", e.Field);
        Assert.Equal(before, _server.Runtime.Vms.Count);
    }

    [Fact]
    public async Task MissingSandbox_IsA404Problem_AsProblemJson()
    {
        await Assert.ThrowsAsync<SandboxNotFoundException>(() => Client.GetSandboxAsync("sbx-does-not-exist", Ct));

        using var response = await _server.Http.PostAsync("v1/sandboxes/sbx-does-not-exist/run",
            new StringContent("""{"code": "print(1)"}""", Encoding.UTF8, "application/json"), Ct);
        Assert.Equal(HttpStatusCode.NotFound, response.StatusCode);
        Assert.Equal("application/problem+json", response.Content.Headers.ContentType?.MediaType);
        Assert.Contains("\"sandbox_not_found\"", await response.Content.ReadAsStringAsync(Ct), StringComparison.Ordinal);
    }
}
