using System.Net;
using System.Net.Http.Json;
using System.Text.Json;

namespace SandboxVM.Functional.Tests;

/// <summary>
/// Pause, resume and fork through the real server: what a sandbox had (Python globals, an open file, a
/// file in /tmp, a background process) is there afterwards, forks share the source's state and then
/// differ, a paused sandbox survives a server restart, and mistakes get problems with stable codes.
/// </summary>
public abstract class PauseScenarios(ServerFixture server)
{
    private const string Template = "python-data-analysis";

    private static CancellationToken Ct => TestContext.Current.CancellationToken;

    private sealed record Answer(HttpStatusCode Status, JsonElement Body, string Text)
    {
        public string? Code => Body.ValueKind == JsonValueKind.Object && Body.TryGetProperty("code", out var c) ? c.GetString() : null;
        public string State => Body.GetProperty("state").GetString()!;
        public override string ToString() => $"{(int)Status}: {Text}";
    }

    private async Task<Answer> PostAsync(string url, object? body = null)
    {
        using var response = body is null
            ? await server.Http.PostAsync(url, null, Ct)
            : await server.Http.PostAsJsonAsync(url, body, ServerFixture.Json, Ct);
        string text = await response.Content.ReadAsStringAsync(Ct);
        return new Answer(response.StatusCode, text.Length > 0 ? JsonDocument.Parse(text).RootElement.Clone() : default, text);
    }

    private async Task<Answer> GetAsync(string url)
    {
        using var response = await server.Http.GetAsync(url, Ct);
        string text = await response.Content.ReadAsStringAsync(Ct);
        return new Answer(response.StatusCode, JsonDocument.Parse(text).RootElement.Clone(), text);
    }

    private async Task<RunResultDto> RunAsync(string id, string code)
    {
        var answer = await PostAsync($"/v1/sandboxes/{id}/run", new { code });
        Assert.True(answer.Status == HttpStatusCode.OK, $"run answered {answer}");
        var result = answer.Body.Deserialize<RunResultDto>(ServerFixture.Json)!;
        Assert.True(result.Status == "ok", result.ToString());
        return result;
    }

    /// <summary>Every sandbox id a test made, deleted when it ends however it ends.</summary>
    private sealed class Made(ServerFixture server) : IAsyncDisposable
    {
        public List<string> Ids { get; } = [];

        public async ValueTask DisposeAsync()
        {
            foreach (string id in Ids)
            {
                await server.DeleteSandboxAsync(id);
            }
        }
    }

    private async Task<string> CreateAsync(Made made, object? extra = null)
    {
        var body = new Dictionary<string, object?> { ["template"] = Template };
        foreach (var p in extra?.GetType().GetProperties() ?? [])
        {
            body[p.Name] = p.GetValue(extra);
        }
        var answer = await PostAsync("/v1/sandboxes", body);
        Assert.True(answer.Status == HttpStatusCode.Created, $"create answered {answer}");
        string id = answer.Body.GetProperty("id").GetString()!;
        made.Ids.Add(id);
        return id;
    }

    /// <summary>A global, a file in /tmp, a file held open and a background process counting into /tmp/counter.</summary>
    private const string SetUp =
        "import subprocess, time\n" +
        "x = 41\n" +
        "open('/tmp/kept.txt', 'w').write('kept')\n" +
        "fh = open('/tmp/open.txt', 'w'); fh.write('a'); fh.flush()\n" +
        "bg = subprocess.Popen(['sh', '-c', 'i=0; while true; do i=$((i+1)); echo $i > /tmp/counter.tmp; mv /tmp/counter.tmp /tmp/counter; sleep 0.1; done'])\n" +
        "time.sleep(0.5)\n";

    /// <summary>Prints the global + 1, both files, and whether the background process still counts.</summary>
    private const string Check =
        "import time\n" +
        "fh.write('b'); fh.flush()\n" +
        "c1 = int(open('/tmp/counter').read()); time.sleep(1.0); c2 = int(open('/tmp/counter').read())\n" +
        "print(x + 1, open('/tmp/kept.txt').read(), open('/tmp/open.txt').read(), c2 > c1, bg.poll() is None)\n";

    [Fact]
    public async Task PauseThenResume_KeepsGlobalsFilesOpenFilesAndBackgroundProcesses()
    {
        await using var made = new Made(server);
        string id = await CreateAsync(made);
        await RunAsync(id, SetUp);

        var paused = await PostAsync($"/v1/sandboxes/{id}/pause");
        Assert.True(paused.Status == HttpStatusCode.OK, paused.ToString());
        Assert.Equal("paused", paused.State);
        Assert.True(paused.Body.GetProperty("paused_bytes").GetInt64() > 0, paused.ToString());
        Assert.True(paused.Body.GetProperty("last_pause_ms").GetDouble() > 0, paused.ToString());
        Assert.Equal("paused", (await GetAsync($"/v1/sandboxes/{id}")).State);

        var resumed = await PostAsync($"/v1/sandboxes/{id}/resume");
        Assert.True(resumed.Status == HttpStatusCode.OK, resumed.ToString());
        Assert.Equal("running", resumed.State);
        Assert.True(resumed.Body.GetProperty("last_resume_ms").GetDouble() > 0, resumed.ToString());

        var after = await RunAsync(id, Check);
        Assert.Equal("42 kept ab True True\n", after.Stdout);
        Assert.False(after.StateReset);
    }

    [Fact]
    public async Task ARunOnAPausedSandbox_ResumesItFirst_UnlessAutoResumeIsOff()
    {
        await using var made = new Made(server);
        string auto = await CreateAsync(made);
        await RunAsync(auto, "x = 5\n");
        Assert.Equal(HttpStatusCode.OK, (await PostAsync($"/v1/sandboxes/{auto}/pause")).Status);

        var r = await RunAsync(auto, "print(x * 2)\n");

        Assert.Equal("10\n", r.Stdout);
        Assert.Equal("running", (await GetAsync($"/v1/sandboxes/{auto}")).State);

        string manual = await CreateAsync(made, new { auto_resume = false });
        Assert.Equal(HttpStatusCode.OK, (await PostAsync($"/v1/sandboxes/{manual}/pause")).Status);
        var refused = await PostAsync($"/v1/sandboxes/{manual}/run", new { code = "print(1)" });
        Assert.True(refused.Status == HttpStatusCode.Conflict && refused.Code == "sandbox_paused", refused.ToString());
    }

    [Fact]
    public async Task Fork_ChildrenStartFromTheSourcesState_ThenDivergeWithTheirOwnEntropy()
    {
        await using var made = new Made(server);
        string source = await CreateAsync(made);
        await RunAsync(source, "g = ['source']\n");

        var fork = await PostAsync($"/v1/sandboxes/{source}/fork", new { count = 2 });
        Assert.True(fork.Status == HttpStatusCode.Created, fork.ToString());
        var children = fork.Body.GetProperty("sandboxes").EnumerateArray().Select(s => s.GetProperty("id").GetString()!).ToList();
        made.Ids.AddRange(children);
        Assert.Equal(2, children.Distinct().Count());
        Assert.DoesNotContain(source, children);

        var seen = new List<string>();
        foreach (var (child, i) in children.Select((c, i) => (c, i)))
        {
            var r = await RunAsync(child, $"import os\ng.append('child{i}')\nprint(g, os.urandom(16).hex())\n");
            seen.Add(r.Stdout);
            Assert.StartsWith($"['source', 'child{i}'] ", r.Stdout);
        }
        Assert.NotEqual(seen[0].Split(' ')[^1], seen[1].Split(' ')[^1]);
        // Each went its own way: neither the source nor the other child saw the appends.
        Assert.Equal("['source']\n", (await RunAsync(source, "print(g)\n")).Stdout);
        Assert.Equal("['source', 'child0']\n", (await RunAsync(children[0], "print(g)\n")).Stdout);
    }

    [Fact]
    public async Task AForkPastTheSandboxLimit_Is429BeforeAnyWork()
    {
        await using var made = new Made(server);
        string source = await CreateAsync(made);

        var refused = await PostAsync($"/v1/sandboxes/{source}/fork", new { count = ServerFixture.MaxSandboxes });

        Assert.True(refused.Status == HttpStatusCode.TooManyRequests && refused.Code == "too_many_sandboxes", refused.ToString());
        var mine = await GetAsync("/v1/sandboxes");
        Assert.Single(mine.Body.GetProperty("sandboxes").EnumerateArray());
    }

    [Fact]
    public async Task PausedSandbox_SurvivesAServerRestart_AndResumes()
    {
        await using var made = new Made(server);
        string id = await CreateAsync(made);
        await RunAsync(id, "x = 7\nopen('/tmp/kept.txt', 'w').write('disk')\n");
        Assert.Equal(HttpStatusCode.OK, (await PostAsync($"/v1/sandboxes/{id}/pause")).Status);

        await server.RestartAsync();

        var listed = await GetAsync("/v1/sandboxes");
        Assert.Contains(listed.Body.GetProperty("sandboxes").EnumerateArray(),
            s => s.GetProperty("id").GetString() == id && s.GetProperty("state").GetString() == "paused");
        var resumed = await PostAsync($"/v1/sandboxes/{id}/resume");
        Assert.True(resumed.Status == HttpStatusCode.OK, resumed.ToString());
        Assert.Equal("8 disk\n", (await RunAsync(id, "print(x + 1, open('/tmp/kept.txt').read())\n")).Stdout);
    }

    [Fact]
    public async Task NamedSnapshot_SurvivesARestart_StartsSandboxesAsOftenAsWanted_AndIsTheKeysOwn()
    {
        await using var made = new Made(server);
        string name = "snap-" + Guid.NewGuid().ToString("N")[..8];
        string source = await CreateAsync(made);
        await RunAsync(source, "x = 41\nopen('/tmp/kept.txt', 'w').write('kept')\n");
        try
        {
            var saved = await PostAsync($"/v1/sandboxes/{source}/snapshots", new { name });
            Assert.True(saved.Status == HttpStatusCode.Created, saved.ToString());
            Assert.True(saved.Body.GetProperty("size_bytes").GetInt64() > 0, saved.ToString());
            var taken = await PostAsync($"/v1/sandboxes/{source}/snapshots", new { name });
            Assert.True(taken.Status == HttpStatusCode.Conflict && taken.Code == "snapshot_exists", taken.ToString());
            // The source goes on: its state is its own from here.
            await RunAsync(source, "x = 0\n");

            await server.RestartAsync();

            var listed = await GetAsync("/v1/snapshots");
            var entry = Assert.Single(listed.Body.GetProperty("snapshots").EnumerateArray(), e => e.GetProperty("name").GetString() == name);
            Assert.Equal((Template, source), (entry.GetProperty("template").GetString(), entry.GetProperty("source_sandbox").GetString()));
            var children = new List<string>();
            for (int i = 0; i < 2; i++)
            {
                var created = await PostAsync("/v1/sandboxes", new { from_snapshot = name });
                Assert.True(created.Status == HttpStatusCode.Created, created.ToString());
                Assert.Equal(Template, created.Body.GetProperty("template").GetString());
                children.Add(created.Body.GetProperty("id").GetString()!);
                made.Ids.Add(children[^1]);
            }
            var first = await RunAsync(children[0], "x += 1\nprint(x, open('/tmp/kept.txt').read())\n");
            var second = await RunAsync(children[1], "print(x, open('/tmp/kept.txt').read())\n");
            Assert.Equal("42 kept\n", first.Stdout);
            Assert.Equal("41 kept\n", second.Stdout);
            Assert.False(second.StateReset);
        }
        finally
        {
            using var _ = await server.Http.DeleteAsync($"/v1/snapshots/{name}", CancellationToken.None);
        }
        var gone = await PostAsync("/v1/sandboxes", new { from_snapshot = name });
        Assert.True(gone.Status == HttpStatusCode.NotFound && gone.Code == "snapshot_not_found", gone.ToString());
    }

    [Fact]
    public async Task WithTheStateDirectoryFull_PauseAndForkAre503NamingIt_AndTheSandboxGoesOn()
    {
        await using var made = new Made(server);
        string id = await CreateAsync(made);
        await RunAsync(id, "x = 7\n");
        int sandboxes = (await GetAsync("/v1/sandboxes")).Body.GetProperty("sandboxes").GetArrayLength();

        // Where a fork's image and a paused sandbox are written: each a 1 MiB file system, full at once.
        foreach (var (dir, verb) in new[] { ("forks", "fork"), ("paused", "pause") })
        {
            await using var full = await TinyFileSystem.MountAsync(Path.Combine(server.StateDir, dir));
            var refused = await PostAsync($"/v1/sandboxes/{id}/{verb}");
            Assert.True(refused.Status == HttpStatusCode.ServiceUnavailable && refused.Code == $"{verb}_failed", refused.ToString());
            Assert.Contains("no space left", refused.Body.GetProperty("detail").GetString());
            Assert.Equal("running", (await GetAsync($"/v1/sandboxes/{id}")).State);
            Assert.Equal("7\n", (await RunAsync(id, "print(x)\n")).Stdout);
        }
        // No fork was left behind.
        Assert.Equal(sandboxes, (await GetAsync("/v1/sandboxes")).Body.GetProperty("sandboxes").GetArrayLength());
    }

    [Fact]
    public async Task Mistakes_AreProblemsWithStableCodes()
    {
        await using var made = new Made(server);
        string id = await CreateAsync(made);

        var resumeRunning = await PostAsync($"/v1/sandboxes/{id}/resume");
        Assert.True(resumeRunning.Status == HttpStatusCode.Conflict && resumeRunning.Code == "sandbox_not_paused", resumeRunning.ToString());
        var badCount = await PostAsync($"/v1/sandboxes/{id}/fork", new { count = 0 });
        Assert.True(badCount.Status == HttpStatusCode.BadRequest && badCount.Code == "invalid_count", badCount.ToString());
        Assert.Equal(HttpStatusCode.OK, (await PostAsync($"/v1/sandboxes/{id}/pause")).Status);
        var pauseAgain = await PostAsync($"/v1/sandboxes/{id}/pause");
        Assert.True(pauseAgain.Status == HttpStatusCode.Conflict && pauseAgain.Code == "sandbox_paused", pauseAgain.ToString());
        foreach (string verb in new[] { "pause", "resume", "fork" })
        {
            var unknown = await PostAsync($"/v1/sandboxes/sbx_00000000000000000000/{verb}");
            Assert.True(unknown.Status == HttpStatusCode.NotFound && unknown.Code == "sandbox_not_found", $"{verb}: {unknown}");
        }
        // Deleting a paused sandbox removes its image from the state directory.
        await server.DeleteSandboxAsync(id);
        Assert.False(Directory.Exists(Path.Combine(server.StateDir, "paused", id)));
    }
}

[Collection(QemuServer.Collection)]
[Trait("tier", "vm")]
public sealed class QemuPauseTests(QemuServer server) : PauseScenarios(server);

[Collection(GvisorServer.Collection)]
[Trait("tier", "vm")]
public sealed class GvisorPauseTests(GvisorServer server) : PauseScenarios(server.OrSkip());

/// <summary>The process runtime cannot save a sandbox: it says so, in the templates and with a clear problem.</summary>
[Collection(ProcessServer.Collection)]
[Trait("tier", "vm")]
public sealed class ProcessPauseTests(ProcessServer server)
{
    private static CancellationToken Ct => TestContext.Current.CancellationToken;

    [Fact]
    public async Task PauseResumeForkAndSnapshot_Are409PauseUnsupported_AndTheTemplatesSaySo()
    {
        string id = await server.CreateSandboxAsync("python-data-analysis", Ct);
        try
        {
            foreach (string verb in new[] { "pause", "resume", "fork", "snapshots" })
            {
                using var response = verb == "snapshots"
                    ? await server.Http.PostAsJsonAsync($"/v1/sandboxes/{id}/snapshots", new { name = "base" }, ServerFixture.Json, Ct)
                    : await server.Http.PostAsync($"/v1/sandboxes/{id}/{verb}", null, Ct);
                string text = await response.Content.ReadAsStringAsync(Ct);
                Assert.True(response.StatusCode == HttpStatusCode.Conflict, $"{verb}: {(int)response.StatusCode} {text}");
                Assert.Equal("pause_unsupported", JsonDocument.Parse(text).RootElement.GetProperty("code").GetString());
            }
            using var templates = JsonDocument.Parse(await server.Http.GetStringAsync("/v1/templates", Ct));
            Assert.All(templates.RootElement.GetProperty("templates").EnumerateArray(), t => Assert.False(t.GetProperty("pause").GetBoolean()));
            using var create = await server.Http.PostAsJsonAsync("/v1/sandboxes", new { template = "python-data-analysis", on_idle = "pause" }, ServerFixture.Json, Ct);
            Assert.Equal(HttpStatusCode.Conflict, create.StatusCode);
        }
        finally
        {
            await server.DeleteSandboxAsync(id);
        }
    }
}

/// <summary>
/// Compiled templates keep their build cache through pause, resume, fork and snapshots: the binary is in
/// the saved home, and the hash of what built it goes with the sandbox (gVisor: compiling under TCG
/// would make the qemu variant minutes long, and the cache is the same host code on both).
/// </summary>
[Collection(GvisorServer.Collection)]
[Trait("tier", "vm")]
public sealed class GvisorCompiledPauseTests(GvisorServer server)
{
    private static CancellationToken Ct => TestContext.Current.CancellationToken;
    private readonly ServerFixture _server = server.OrSkip();
    private const string Code = "#include <bits/stdc++.h>\nint main(){ std::cout << 6 * 7 << \"\\n\"; }\n";

    private async Task<JsonElement> PostAsync(string url, object? body = null)
    {
        using var response = body is null ? await _server.Http.PostAsync(url, null, Ct) : await _server.Http.PostAsJsonAsync(url, body, ServerFixture.Json, Ct);
        string text = await response.Content.ReadAsStringAsync(Ct);
        Assert.True(response.IsSuccessStatusCode, $"{url} answered {(int)response.StatusCode}: {text}");
        return JsonDocument.Parse(text).RootElement.Clone();
    }

    private async Task<RunResultDto> RunAsync(string id)
    {
        var result = (await PostAsync($"/v1/sandboxes/{id}/run", new { code = Code })).Deserialize<RunResultDto>(ServerFixture.Json)!;
        Assert.True(result.Status == "ok", result.ToString());
        Assert.Equal("42\n", result.Stdout);
        return result;
    }

    [Fact]
    public async Task ResumedForkedAndSnapshotSandboxes_RunAnUnchangedSourceWithoutCompiling()
    {
        var ids = new List<string>();
        string name = "cpp-" + Guid.NewGuid().ToString("N")[..8];
        try
        {
            string id = (await PostAsync("/v1/sandboxes", new { template = "cpp-algorithm" })).GetProperty("id").GetString()!;
            ids.Add(id);
            Assert.False((await RunAsync(id)).BuildCached);

            await PostAsync($"/v1/sandboxes/{id}/pause");
            await PostAsync($"/v1/sandboxes/{id}/resume");
            var resumed = await RunAsync(id);
            string fork = (await PostAsync($"/v1/sandboxes/{id}/fork", new { count = 1 })).GetProperty("sandboxes")[0].GetProperty("id").GetString()!;
            ids.Add(fork);
            var forked = await RunAsync(fork);
            await PostAsync($"/v1/sandboxes/{id}/snapshots", new { name });
            string fromSnapshot = (await PostAsync("/v1/sandboxes", new { from_snapshot = name })).GetProperty("id").GetString()!;
            ids.Add(fromSnapshot);
            var restored = await RunAsync(fromSnapshot);

            Assert.True(resumed.BuildCached, resumed.ToString());
            Assert.True(forked.BuildCached, forked.ToString());
            Assert.True(restored.BuildCached, restored.ToString());
            Assert.Equal(0, restored.Metrics["compile_ms"].GetDouble());
        }
        finally
        {
            foreach (string id in ids)
            {
                await _server.DeleteSandboxAsync(id);
            }
            using var _ = await _server.Http.DeleteAsync($"/v1/snapshots/{name}", CancellationToken.None);
        }
    }
}
