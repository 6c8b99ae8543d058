using System.Net;
using System.Net.Http.Json;
using System.Text;
using System.Text.Json.Nodes;
using SandboxVM.Client;

namespace SandboxVM.Server.Tests;

/// <summary>
/// /v1/sandboxes/{id}/commands through the real server, the real SDK and the real agent as a local
/// process (<see cref="LocalAgentServer"/>).
/// </summary>
[Trait("tier", "integration")]
public sealed class CommandEndpointTests(LocalAgentServer server) : IClassFixture<LocalAgentServer>
{
    private static CancellationToken Ct => TestContext.Current.CancellationToken;

    private readonly LocalAgentServer _server = server.OrSkip();

    private Task<Sandbox> CreateAsync() => _server.Client.CreateSandboxAsync(LocalAgentServer.Python, cancellationToken: Ct);

    [Fact]
    public async Task Run_AShellLine_ReturnsItsExitCodeAndOutput()
    {
        await using var sb = await CreateAsync();

        var result = await sb.Commands.RunAsync("echo hi; pwd; echo oops >&2; exit 3", cancellationToken: Ct);

        Assert.Equal("exited", result.Status);
        Assert.Equal(3, result.ExitCode);
        Assert.Equal("hi\n/home/sandbox\n", result.Stdout);
        Assert.Equal("oops\n", result.Stderr);
        Assert.Equal(["/bin/sh", "-c", "echo hi; pwd; echo oops >&2; exit 3"], result.Cmd);
    }

    [Fact]
    public async Task Run_Argv_WithCwdEnvAndStdin_SeesThem_AndFilesOfTheSandbox()
    {
        await using var sb = await CreateAsync();
        await sb.Files.WriteAsync("work/data.txt", "from a file\n", Ct);

        var result = await sb.Commands.RunAsync(["sh", "-c", "cat data.txt; echo $GREETING; cat"],
            new CommandOptions { Cwd = "work", Env = new Dictionary<string, string> { ["GREETING"] = "hello" }, Stdin = "piped\n" }, Ct);

        Assert.Equal(0, result.ExitCode);
        Assert.Equal("from a file\nhello\npiped\n", result.Stdout);
    }

    [Fact]
    public async Task Background_TakesStdin_IsListed_AndIsWaitedFor()
    {
        await using var sb = await CreateAsync();

        var started = await sb.Commands.StartAsync(["cat"], cancellationToken: Ct);
        Assert.True(started.Running);
        Assert.True(started.StdinOpen);
        Assert.Contains(await sb.Commands.ListAsync(Ct), c => c.Id == started.Id && c.Running);

        await sb.Commands.SendStdinAsync(started.Id, "line one\n", cancellationToken: Ct);
        await sb.Commands.SendStdinAsync(started.Id, "line two\n", eof: true, cancellationToken: Ct);
        var ended = await sb.Commands.GetAsync(started.Id, wait: true, Ct);

        Assert.Equal("exited", ended.Status);
        Assert.Equal(0, ended.ExitCode);
        Assert.Equal("line one\nline two\n", ended.Stdout);
        var closed = await Assert.ThrowsAsync<SandboxApiException>(() => sb.Commands.SendStdinAsync(started.Id, "more", cancellationToken: Ct));
        Assert.Equal("stdin_closed", closed.Code);
    }

    [Fact]
    public async Task Kill_ACommandThatIgnoresSigterm_EndsItWithSigkill()
    {
        await using var sb = await CreateAsync();
        var started = await sb.Commands.StartAsync("trap '' TERM; echo ready; sleep 1000 & wait", cancellationToken: Ct);
        // The kill goes after the trap is set (sent at once, it beat the trap on a loaded host: signal 15).
        await KeyLimitTests.WaitUntilAsync(async () => (await sb.Commands.GetAsync(started.Id, cancellationToken: Ct)).Stdout == "ready\n");

        var killed = await sb.Commands.KillAsync(started.Id, cancellationToken: Ct);

        Assert.Equal("signal", killed.Status);
        Assert.Equal(9, killed.Signal);
        Assert.False(killed.Running);
    }

    [Fact]
    public async Task Foreground_OverTheTemplatesOutputCap_IsKilled_AndTruncated()
    {
        await using var sb = await CreateAsync();

        var result = await sb.Commands.RunAsync("yes", cancellationToken: Ct);

        Assert.Equal("output_limit", result.Status);
        Assert.True(result.Truncated);
        Assert.Equal(LocalAgentServer.OutputBytes, Encoding.UTF8.GetByteCount(result.Stdout!));
    }

    [Fact]
    public async Task Foreground_Timeout_KillsTheCommand()
    {
        await using var sb = await CreateAsync();

        var result = await sb.Commands.RunAsync("echo start; sleep 1000", new CommandOptions { TimeoutS = 0.5 }, Ct);

        Assert.Equal("timeout", result.Status);
        Assert.Null(result.ExitCode);
        Assert.Equal("start\n", result.Stdout);
    }

    [Fact]
    public async Task Streaming_SendsOutputEvents_ThenTheResult()
    {
        await using var sb = await CreateAsync();
        using var request = new HttpRequestMessage(HttpMethod.Post, $"v1/sandboxes/{sb.Id}/commands")
        {
            Content = JsonContent.Create(new { cmd = "echo one; echo two >&2" }),
        };
        request.Headers.Accept.ParseAdd("text/event-stream");

        using var response = await _server.Http.SendAsync(request, Ct);
        string text = await response.Content.ReadAsStringAsync(Ct);

        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        Assert.Equal("text/event-stream", response.Content.Headers.ContentType?.MediaType);
        Assert.Contains("event: stdout\ndata: {\"text\":\"one\\n\"}", text);
        Assert.Contains("event: stderr\ndata: {\"text\":\"two\\n\"}", text);
        int result = text.IndexOf("event: result\ndata: ", StringComparison.Ordinal);
        Assert.True(result > text.IndexOf("event: stdout", StringComparison.Ordinal), text);
        var body = JsonNode.Parse(text[(result + "event: result\ndata: ".Length)..].Split('\n')[0])!;
        Assert.Equal("exited", (string?)body["status"]);
        Assert.Equal(0, (int?)body["exit_code"]);
    }

    [Fact]
    public async Task Sdk_Callbacks_GetTheOutputWhileTheCommandRuns()
    {
        await using var sb = await CreateAsync();
        var stdout = new StringBuilder();
        var stderr = new StringBuilder();
        var first = new TaskCompletionSource<string>(TaskCreationOptions.RunContinuationsAsynchronously);
        var options = new CommandOptions
        {
            TimeoutS = 30,
            OnStdout = text =>
            {
                lock (stdout)
                {
                    stdout.Append(text);
                }
                first.TrySetResult(text);
            },
            OnStderr = text =>
            {
                lock (stderr)
                {
                    stderr.Append(text);
                }
            },
        };

        // The command waits for a file the test writes only after the first line reached the callback: without
        // output delivered while it runs it would never end before its timeout.
        var run = sb.Commands.RunAsync("echo ready; while [ ! -e go ]; do sleep 0.05; done; echo done; echo warn >&2", options, Ct);
        Assert.Equal("ready\n", await first.Task.WaitAsync(TimeSpan.FromSeconds(30), Ct));
        Assert.False(run.IsCompleted, "the command ended before it was let go");
        await sb.Files.WriteAsync("go", "", Ct);
        var result = await run;

        Assert.Equal("exited", result.Status);
        Assert.Equal("ready\ndone\n", stdout.ToString());
        Assert.Equal("warn\n", stderr.ToString());
        Assert.Equal(result.Stdout, stdout.ToString());
        await Assert.ThrowsAsync<ArgumentException>(() => sb.Commands.StartAsync("true", options, Ct));
    }

    [Theory]
    [InlineData("{}", 400, "missing_field")]
    [InlineData("{\"cmd\": 42}", 400, "invalid_command")]
    [InlineData("{\"cmd\": []}", 400, "invalid_command")]
    [InlineData("{\"cmd\": \"true\", \"cwd\": \"no/such/dir\"}", 404, "file_not_found")]
    [InlineData("{\"cmd\": \"true\", \"env\": {\"A=B\": \"x\"}}", 400, "invalid_env")]
    [InlineData("{\"cmd\": \"true\", \"timeout_s\": 100000}", 400, "timeout_out_of_range")]
    [InlineData("{\"cmd\": \"true\", \"surprise\": 1}", 400, "malformed_json")]
    public async Task BadRequests_AreProblemsWithACode(string json, int status, string code)
    {
        await using var sb = await CreateAsync();

        using var response = await _server.Http.PostAsync($"v1/sandboxes/{sb.Id}/commands", new StringContent(json, Encoding.UTF8, "application/json"), Ct);

        Assert.Equal(status, (int)response.StatusCode);
        Assert.Equal("application/problem+json", response.Content.Headers.ContentType?.MediaType);
        var problem = JsonNode.Parse(await response.Content.ReadAsStringAsync(Ct))!;
        Assert.Equal(code, (string?)problem["code"]);
    }

    [Fact]
    public async Task UnknownCommand_AndUnknownSignal_AndUnknownSandbox_AreNamed()
    {
        await using var sb = await CreateAsync();
        var started = await sb.Commands.StartAsync("exec sleep 1000", cancellationToken: Ct);

        var missing = await Assert.ThrowsAsync<SandboxApiException>(() => sb.Commands.GetAsync("c999", cancellationToken: Ct));
        Assert.Equal("command_not_found", missing.Code);
        var badSignal = await Assert.ThrowsAsync<SandboxBadRequestException>(() => sb.Commands.KillAsync(started.Id, "SIGNOPE", Ct));
        Assert.Equal("invalid_signal", badSignal.Code);
        using var noSandbox = await _server.Http.GetAsync("v1/sandboxes/sb-nope/commands", Ct);
        Assert.Equal(HttpStatusCode.NotFound, noSandbox.StatusCode);

        var interrupted = await sb.Commands.KillAsync(started.Id, "9", Ct);
        Assert.Equal(started.Id, interrupted.Id);
        var ended = await sb.Commands.GetAsync(started.Id, wait: true, Ct);
        Assert.Equal("signal", ended.Status);
        Assert.Equal(9, ended.Signal);
    }
}
