using System.Net;
using System.Text;
using System.Text.Json;
using System.Text.RegularExpressions;
using SandboxVM.Testing;

namespace SandboxVM.Server.Tests;

/// <summary>A server on the local agent with keys and a python-data-analysis template (the host's python3 with matplotlib).</summary>
public sealed class E2bServerFixture : KeyedLocalServer<E2bServerFixture>
{
    /// <summary>The template E2B's code interpreter ids map to.</summary>
    public const string DataAnalysis = "python-data-analysis";

    /// <summary>A key that may start one run a minute.</summary>
    public const string Limited = "svmk_carol_k3y_0123456789abcdefghijklmnopqrstuvw";

    /// <summary>What a user sets E2B_API_URL and E2B_SANDBOX_URL to.</summary>
    public string E2bUrl => new Uri(BaseUri, "e2b").ToString();

    private protected override void Configure(TestKeys keys, Dictionary<string, string> templates)
    {
        keys.Write(TestKeys.Entry("alice", TestKeys.Alice), TestKeys.Entry("bob", TestKeys.Bob), TestKeys.Entry("ops", TestKeys.Admin, admin: true),
            TestKeys.Entry("carol", Limited, limits: new { runs_per_minute = 1 }));
        templates[DataAnalysis] = LocalAgentServer.PythonYaml(DataAnalysis, memoryMib: 512, runTimeoutS: 30, maxTimeoutS: 60, outputBytes: 65536)
            .Replace("  fork_server:", "  env: {MPLBACKEND: Agg}\n  fork_server:", StringComparison.Ordinal);
    }
}

/// <summary>
/// The official E2B SDKs (npm e2b and @e2b/code-interpreter, pinned by e2b-interop/package-lock.json),
/// unmodified, driven by e2b-interop/interop.mjs against /e2b with only E2B_API_URL, E2B_SANDBOX_URL and
/// E2B_API_KEY set; and the error shapes of the E2B door. Skips where node or npm is missing or the
/// package registry cannot be reached.
/// </summary>
[Trait("tier", "integration")]
public sealed class E2bTests(E2bServerFixture server) : IClassFixture<E2bServerFixture>
{
    private static CancellationToken Ct => TestContext.Current.CancellationToken;

    private readonly E2bServerFixture _server = server.OrSkip();

    [Fact]
    public async Task OfficialSdks_RunTheCodeInterpreterQuickStartCommandsAndFiles()
    {
        string dir = Path.Combine(AppContext.BaseDirectory, "e2b-interop");
        await NodeScripts.InstallAsync(dir);
        await SkipWithoutMatplotlibAsync();
        var (r, all) = await NodeScripts.RunJsonAsync(dir, "interop.mjs", [], SdkEnv(), TimeSpan.FromMinutes(4));

        Assert.Equal("1", r.GetProperty("runCode").GetString());
        Assert.Equal("42", r.GetProperty("stateful").GetString());
        Assert.Equal("hi\nthere\n", r.GetProperty("stdout").GetString());
        Assert.Equal("ZeroDivisionError", r.GetProperty("error").GetProperty("name").GetString());
        Assert.Equal("division by zero", r.GetProperty("error").GetProperty("value").GetString());

        var chart = r.GetProperty("chart");
        Assert.True(chart.TryGetProperty("pngs", out var pngs), all);
        byte[] png = Convert.FromBase64String(Assert.Single(pngs.EnumerateArray()).GetString()!);
        Assert.Equal([0x89, (byte)'P', (byte)'N', (byte)'G'], png.Take(4));

        var ls = r.GetProperty("ls");
        Assert.True(ls.TryGetProperty("exitCode", out var lsExit), all);
        Assert.Equal(0, lsExit.GetInt32());
        Assert.Contains(" tmp", ls.GetProperty("stdout").GetString());
        Assert.Equal("hello from create\n", r.GetProperty("env").GetString());
        var failed = r.GetProperty("exitCode");
        Assert.True(failed.GetProperty("thrown").GetBoolean(), all);
        Assert.Equal(3, failed.GetProperty("exitCode").GetInt32());
        Assert.Equal("oops\n", failed.GetProperty("stderr").GetString());

        // A command that cannot start is an error the SDK raises, not a hang.
        var badCwd = r.GetProperty("badCwd");
        Assert.True(badCwd.GetProperty("thrown").GetBoolean(), all);
        Assert.Contains("/no/such/dir", badCwd.GetProperty("error").GetString());

        // Code contexts: independent Python states; restart forgets one, remove ends it.
        var contexts = r.GetProperty("contexts");
        Assert.True(contexts.TryGetProperty("seen", out var seen), all);
        Assert.Equal("'in a'", seen.GetProperty("a").GetString());
        Assert.Equal("'in b'", seen.GetProperty("b").GetString());
        Assert.Equal("False", seen.GetProperty("default").GetString());
        Assert.Equal("python", contexts.GetProperty("language").GetString());
        string a = contexts.GetProperty("a").GetString()!, b = contexts.GetProperty("b").GetString()!;
        Assert.Equal(["default", a, b], contexts.GetProperty("listed").EnumerateArray().Select(e => e.GetString()));
        Assert.Equal("False", contexts.GetProperty("afterRestart").GetProperty("a").GetString());
        Assert.Equal("'in b'", contexts.GetProperty("afterRestart").GetProperty("b").GetString());
        Assert.Equal(["default", a], contexts.GetProperty("listedAfter").EnumerateArray().Select(e => e.GetString()));
        Assert.Contains("not found", contexts.GetProperty("removedRun").GetString());
        Assert.StartsWith("SandboxError: 400", contexts.GetProperty("otherLanguage").GetString()); // the SDK shows only the status

        // Rich results: a DataFrame's HTML table, display()ed objects, a figure as the last expression.
        var rich = r.GetProperty("rich");
        Assert.True(rich.TryGetProperty("html", out var html), all);
        Assert.Contains("<table", html.GetString());
        Assert.Contains("Oslo", html.GetString());
        Assert.Contains("Oslo", rich.GetProperty("text").GetString());
        Assert.True(rich.GetProperty("main").GetBoolean());
        var shown = rich.GetProperty("shown").EnumerateArray().ToList();
        Assert.True(shown.Count == 2, all);
        Assert.False(shown[0].GetProperty("main").GetBoolean());
        Assert.Equal("**note**", shown[0].GetProperty("markdown").GetString());
        Assert.Equal(1, shown[0].GetProperty("json").GetProperty("n").GetInt32());
        Assert.True(shown[1].GetProperty("main").GetBoolean());
        Assert.StartsWith("iVBORw0KGgo", shown[1].GetProperty("png").GetString()); // base64 of the PNG signature

        // Streamed output: the first line reached onStdout while the command ran (it waited for the callback's file).
        var streamed = r.GetProperty("streamed");
        Assert.True(streamed.TryGetProperty("order", out var order), all);
        var seenOrder = order.EnumerateArray().Select(e => e.GetString()).ToList();
        Assert.Equal("stdout:first", seenOrder[0]);
        Assert.Equal("end:0", seenOrder[^1]); // exit 0: the file came while it ran, so "first" had reached the callback
        Assert.Equal(["acked", "stdout:second"], seenOrder[1..^1].Order());

        var background = r.GetProperty("background");
        Assert.True(background.TryGetProperty("listed", out var listed), all);
        Assert.True(listed.GetBoolean(), all);
        Assert.Equal("started\n", background.GetProperty("seen").GetString());
        Assert.True(background.GetProperty("killed").GetBoolean(), all);
        Assert.False(background.GetProperty("listedAfter").GetBoolean(), all);

        var files = r.GetProperty("files");
        Assert.True(files.TryGetProperty("text", out var text), all);
        Assert.Equal("hello, files", text.GetString());
        Assert.Equal("hello.txt", Assert.Single(files.GetProperty("list").EnumerateArray()).GetProperty("name").GetString());
        Assert.True(files.GetProperty("exists").GetBoolean());
        Assert.True(files.GetProperty("made").GetBoolean());
        Assert.False(files.GetProperty("again").GetBoolean());
        Assert.Equal("hello, files", files.GetProperty("moved").GetString());
        Assert.True(files.GetProperty("gone").GetBoolean());
        Assert.Equal("FileNotFoundError", files.GetProperty("missing").GetString());

        // watchDir: a file created, written, rewritten and removed in the watched directory, in that order.
        var watch = r.GetProperty("watch");
        Assert.True(watch.TryGetProperty("created", out var created), all);
        Assert.True(created.GetBoolean(), all);
        Assert.True(watch.GetProperty("written").GetBoolean(), all);
        Assert.True(watch.GetProperty("rewritten").GetBoolean(), all);
        Assert.True(watch.GetProperty("removed").GetBoolean(), all);
        var watched = watch.GetProperty("events").EnumerateArray().Select(e => e.GetString()).ToList();
        Assert.True(watched.IndexOf("create:a.txt") < watched.LastIndexOf("write:a.txt") && watched.LastIndexOf("write:a.txt") < watched.IndexOf("remove:a.txt"), all);
        Assert.Equal("FileNotFoundError", watch.GetProperty("missing").GetString());

        var timeout = r.GetProperty("setTimeout");
        Assert.True(timeout.TryGetProperty("seconds", out var seconds), all);
        Assert.InRange(seconds.GetInt32(), 100, 121);
        Assert.Equal("running", timeout.GetProperty("state").GetString());
        Assert.Equal("e2b-interop", timeout.GetProperty("metadata").GetProperty("purpose").GetString());

        string id = r.GetProperty("sandboxId").GetString()!;
        var list = r.GetProperty("list");
        Assert.True(list.TryGetProperty("ids", out var ids), all);
        Assert.Equal(id, Assert.Single(ids.EnumerateArray()).GetString());
        Assert.Equal(0, list.GetProperty("other").GetInt32());
        Assert.Equal("42", r.GetProperty("connect").GetString());

        var kill = r.GetProperty("kill");
        Assert.True(kill.TryGetProperty("running", out var running), all);
        Assert.False(running.GetBoolean());
        Assert.False(kill.GetProperty("killedAgain").GetBoolean());
    }

    [Fact]
    public async Task Pty_ShellOnATerminal_TakesInputFollowsResizeExitsAndIsKilled()
    {
        var (r, all) = await RunSdkAsync("pty.mjs", [LocalAgentServer.Shell]);
        Assert.False(r.TryGetProperty("error", out _), all);

        // The shell's lines (a line may start after the terminal's control sequences and a carriage return).
        string first = r.GetProperty("first").GetString()!;
        Assert.True(Regex.IsMatch(first, @"[\r\n]hi\r\n"), all);
        Assert.True(Regex.IsMatch(first, @"[\r\n]/dev/pts/\d+\r\n"), all);
        Assert.True(Regex.IsMatch(first, @"[\r\n]30 100\r\n"), all);
        Assert.True(Regex.IsMatch(r.GetProperty("resized").GetString()!, @"[\r\n]40 120\r\n"), all);
        Assert.True(r.GetProperty("listed").GetBoolean(), all);
        Assert.Equal(3, r.GetProperty("exitCode").GetInt32());
        Assert.False(r.GetProperty("listedAfter").GetBoolean(), all);

        Assert.True(r.GetProperty("killed").GetBoolean(), all);
        Assert.StartsWith("CommandExitError", r.GetProperty("afterKill").GetString());
        Assert.False(r.GetProperty("killedAgain").GetBoolean(), all);
    }

    [Fact]
    public async Task SignedUrls_UploadAndDownloadTheirPathOnly_UntilTheyExpire()
    {
        var (r, all) = await RunSdkAsync("urls.mjs", [LocalAgentServer.Shell]);
        Assert.False(r.TryGetProperty("error", out _), all);
        Assert.Equal(200, r.GetProperty("uploadStatus").GetInt32());
        Assert.Equal("sent to a signed URL", r.GetProperty("read").GetString());
        Assert.Equal(200, r.GetProperty("downloadStatus").GetInt32());
        Assert.Equal("sent to a signed URL", r.GetProperty("downloaded").GetString());
        Assert.Equal(401, r.GetProperty("otherPathStatus").GetInt32());
        Assert.Equal(401, r.GetProperty("expiredStatus").GetInt32());
    }

    [Fact]
    public async Task Execute_CountsAgainstTheOwnersRunsPerMinute_LikePostRun()
    {
        string dir = Path.Combine(AppContext.BaseDirectory, "e2b-interop");
        await NodeScripts.InstallAsync(dir);
        string id = await CreateAsync(LocalAgentServer.Python, E2bServerFixture.Limited);
        try
        {
            // The key may start one run a minute: the SDK's first cell runs, its second is refused as the SDK reports a 429.
            var (answer, all) = await NodeScripts.RunJsonAsync(dir, "limits.mjs", [id], SdkEnv(E2bServerFixture.Limited), TimeSpan.FromMinutes(2));
            var runs = answer.GetProperty("runs").EnumerateArray().Select(e => e.GetString()).ToList();
            Assert.True(runs is ["42", "SandboxError: 429 Too Many Requests"], all);

            // E2B's error body with Retry-After on the door, and the same budget on /v1/run.
            using var execute = Envd(HttpMethod.Post, "e2b/execute", id, await TokenAsync(id, E2bServerFixture.Limited, all));
            execute.Content = new StringContent("""{"code":"1"}""", Encoding.UTF8, "application/json");
            using var refused = await _server.Http.SendAsync(execute, Ct);
            await AssertE2bErrorAsync(refused, HttpStatusCode.TooManyRequests);
            Assert.NotNull(refused.Headers.RetryAfter);
            using var post = new HttpRequestMessage(HttpMethod.Post, "v1/run");
            post.Headers.Authorization = new("Bearer", E2bServerFixture.Limited);
            post.Content = new StringContent("""{"template":"local-sh","code":"echo 1"}""", Encoding.UTF8, "application/json");
            using var v1 = await _server.Http.SendAsync(post, Ct);
            Assert.Equal(HttpStatusCode.TooManyRequests, v1.StatusCode);
            Assert.Contains("rate_limited", await v1.Content.ReadAsStringAsync(Ct));
        }
        finally
        {
            // Not asserted: a failure above must not be hidden by this one's (the sandbox may have timed out meanwhile).
            using var kill = await _server.Http.SendAsync(Request(HttpMethod.Delete, $"e2b/sandboxes/{id}", E2bServerFixture.Limited), CancellationToken.None);
        }
    }

    /// <summary>Runs a script of e2b-interop/ against this server with E2B's three variables set; its JSON answer.</summary>
    private async Task<(JsonElement Answer, string Text)> RunSdkAsync(string script, string[] args, string key = TestKeys.Alice)
    {
        string dir = Path.Combine(AppContext.BaseDirectory, "e2b-interop");
        await NodeScripts.InstallAsync(dir);
        return await NodeScripts.RunJsonAsync(dir, script, args, SdkEnv(key), TimeSpan.FromMinutes(2));
    }

    private Dictionary<string, string> SdkEnv(string key = TestKeys.Alice) => new()
    {
        ["E2B_API_URL"] = _server.E2bUrl,
        ["E2B_SANDBOX_URL"] = _server.E2bUrl,
        ["E2B_API_KEY"] = key,
    };

    [Fact]
    public async Task ReadmeExample_RunsAsWritten()
    {
        string dir = Path.Combine(AppContext.BaseDirectory, "e2b-interop");
        await NodeScripts.InstallAsync(dir);
        await SkipWithoutMatplotlibAsync();
        string script = Path.Combine(dir, "readme-example.mjs");
        await File.WriteAllTextAsync(script, ReadmeExamples.Block("e2b", "js"), Ct);
        var run = await NodeScripts.RunAsync("node", [script], dir, null, TimeSpan.FromMinutes(3), SdkEnv());
        Assert.NotNull(run);
        Assert.True(run.Value.ExitCode == 0, $"the README's example exited {run.Value.ExitCode}:\n{run.Value.Stderr}\n{run.Value.Stdout}");
        Assert.Equal("1\ntrue\n42\n\nhello\n", run.Value.Stdout);
    }

    [Fact]
    public async Task ControlApi_AWrongKeyIs401AndAnUnknownOrAnotherCallersSandboxIs404InE2bsBody()
    {
        using var bad = Request(HttpMethod.Get, "e2b/v2/sandboxes", "svmk_not_a_key");
        using var unauthorized = await _server.Http.SendAsync(bad, Ct);
        await AssertE2bErrorAsync(unauthorized, HttpStatusCode.Unauthorized);

        using var unknown = await _server.Http.SendAsync(Request(HttpMethod.Get, "e2b/sandboxes/nope", TestKeys.Alice), Ct);
        await AssertE2bErrorAsync(unknown, HttpStatusCode.NotFound);

        using var create = Request(HttpMethod.Post, "e2b/v2/sandboxes", TestKeys.Alice);
        create.Content = new StringContent("""{"templateID":"local-sh","timeout":60}""", Encoding.UTF8, "application/json");
        using var created = await _server.Http.SendAsync(create, Ct);
        Assert.Equal(HttpStatusCode.Created, created.StatusCode);
        using var body = JsonDocument.Parse(await created.Content.ReadAsStringAsync(Ct));
        string id = body.RootElement.GetProperty("sandboxID").GetString()!;
        string token = body.RootElement.GetProperty("envdAccessToken").GetString()!;
        try
        {
            using var bobs = await _server.Http.SendAsync(Request(HttpMethod.Get, $"e2b/sandboxes/{id}", TestKeys.Bob), Ct);
            await AssertE2bErrorAsync(bobs, HttpStatusCode.NotFound);
            using var bobKill = await _server.Http.SendAsync(Request(HttpMethod.Delete, $"e2b/sandboxes/{id}", TestKeys.Bob), Ct);
            await AssertE2bErrorAsync(bobKill, HttpStatusCode.NotFound);

            // envd calls need the sandbox's own token: another sandbox's id or no token is refused.
            using var noToken = new HttpRequestMessage(HttpMethod.Get, "e2b/health");
            noToken.Headers.Add("E2b-Sandbox-Id", id);
            using var refused = await _server.Http.SendAsync(noToken, Ct);
            await AssertE2bErrorAsync(refused, HttpStatusCode.Unauthorized);
            using var health = new HttpRequestMessage(HttpMethod.Get, "e2b/health");
            health.Headers.Add("E2b-Sandbox-Id", id);
            health.Headers.Add("X-Access-Token", token);
            using var healthy = await _server.Http.SendAsync(health, Ct);
            Assert.Equal(HttpStatusCode.NoContent, healthy.StatusCode);
        }
        finally
        {
            using var kill = await _server.Http.SendAsync(Request(HttpMethod.Delete, $"e2b/sandboxes/{id}", TestKeys.Alice), Ct);
            Assert.Equal(HttpStatusCode.NoContent, kill.StatusCode);
        }
        using var again = await _server.Http.SendAsync(Request(HttpMethod.Delete, $"e2b/sandboxes/{id}", TestKeys.Alice), Ct);
        await AssertE2bErrorAsync(again, HttpStatusCode.NotFound);

        // The ended sandbox's envd: 502 as E2B's proxy answers (the SDK: "sandbox timed out or was killed"),
        // and Connect calls "unavailable".
        using var ended = await _server.Http.SendAsync(Envd(HttpMethod.Get, "e2b/health", id, token), Ct);
        await AssertE2bErrorAsync(ended, HttpStatusCode.BadGateway);
        using var list = Envd(HttpMethod.Post, "e2b/process.Process/List", id, token);
        list.Content = new StringContent("{}", Encoding.UTF8, "application/json");
        using var listed = await _server.Http.SendAsync(list, Ct);
        Assert.Equal(HttpStatusCode.ServiceUnavailable, listed.StatusCode);
        using var error = JsonDocument.Parse(await listed.Content.ReadAsStringAsync(Ct));
        Assert.Equal("unavailable", error.RootElement.GetProperty("code").GetString());
    }

    [Fact]
    public async Task Envd_ASandboxsTokenOpensOnlyThatSandbox()
    {
        string first = await CreateAsync(), second = await CreateAsync();
        try
        {
            string secondToken = await TokenAsync(second);
            using var own = await _server.Http.SendAsync(Envd(HttpMethod.Get, "e2b/health", second, secondToken), Ct);
            Assert.Equal(HttpStatusCode.NoContent, own.StatusCode);
            foreach (string path in new[] { "e2b/health", "e2b/files?path=/etc/hostname", "e2b/contexts" })
            {
                using var other = await _server.Http.SendAsync(Envd(HttpMethod.Get, path, first, secondToken), Ct);
                await AssertE2bErrorAsync(other, HttpStatusCode.Unauthorized);
            }
            using var rpc = Envd(HttpMethod.Post, "e2b/filesystem.Filesystem/ListDir", first, secondToken);
            rpc.Content = new StringContent("""{"path":"/"}""", Encoding.UTF8, "application/json");
            using var refused = await _server.Http.SendAsync(rpc, Ct);
            Assert.Equal(HttpStatusCode.Unauthorized, refused.StatusCode);
            using var error = JsonDocument.Parse(await refused.Content.ReadAsStringAsync(Ct));
            Assert.Equal("unauthenticated", error.RootElement.GetProperty("code").GetString());
        }
        finally
        {
            foreach (string id in new[] { first, second })
            {
                using var kill = await _server.Http.SendAsync(Request(HttpMethod.Delete, $"e2b/sandboxes/{id}", TestKeys.Alice), Ct);
                Assert.Equal(HttpStatusCode.NoContent, kill.StatusCode);
            }
        }
    }

    private async Task<string> CreateAsync(string template = LocalAgentServer.Shell, string key = TestKeys.Alice)
    {
        using var create = Request(HttpMethod.Post, "e2b/v2/sandboxes", key);
        create.Content = new StringContent($$"""{"templateID":"{{template}}","timeout":60}""", Encoding.UTF8, "application/json");
        using var created = await _server.Http.SendAsync(create, Ct);
        Assert.Equal(HttpStatusCode.Created, created.StatusCode);
        using var body = JsonDocument.Parse(await created.Content.ReadAsStringAsync(Ct));
        return body.RootElement.GetProperty("sandboxID").GetString()!;
    }

    /// <summary>The sandbox's access token as getInfo (GET /sandboxes/{id}) gives it to its owner.</summary>
    private async Task<string> TokenAsync(string id, string key = TestKeys.Alice, string? context = null)
    {
        using var info = await _server.Http.SendAsync(Request(HttpMethod.Get, $"e2b/sandboxes/{id}", key), Ct);
        string text = await info.Content.ReadAsStringAsync(Ct);
        Assert.True(info.IsSuccessStatusCode, $"{info.StatusCode}: {text} {context}");
        using var body = JsonDocument.Parse(text);
        return body.RootElement.GetProperty("envdAccessToken").GetString()!;
    }

    private static HttpRequestMessage Envd(HttpMethod method, string path, string id, string token)
    {
        var request = new HttpRequestMessage(method, path);
        request.Headers.Add("E2b-Sandbox-Id", id);
        request.Headers.Add("X-Access-Token", token);
        return request;
    }

    /// <summary>The local agent's sandboxes run the host's python3: the figures need its matplotlib and pandas.</summary>
    private async Task SkipWithoutMatplotlibAsync()
    {
        string? missing = await _server.ModulesMissingAsync(E2bServerFixture.DataAnalysis, "matplotlib, numpy, pandas", Ct);
        Assert.SkipWhen(missing is not null, missing ?? "");
    }

    private static HttpRequestMessage Request(HttpMethod method, string path, string key)
    {
        var request = new HttpRequestMessage(method, path);
        request.Headers.Add("X-API-KEY", key);
        return request;
    }

    /// <summary>E2B's error body: {"code": the status, "message": why}.</summary>
    private static async Task AssertE2bErrorAsync(HttpResponseMessage response, HttpStatusCode status)
    {
        string text = await response.Content.ReadAsStringAsync(Ct);
        Assert.True(response.StatusCode == status, $"{response.StatusCode}: {text}");
        using var body = JsonDocument.Parse(text);
        Assert.Equal((int)status, body.RootElement.GetProperty("code").GetInt32());
        Assert.False(string.IsNullOrWhiteSpace(body.RootElement.GetProperty("message").GetString()));
    }
}
