using System.Diagnostics;
using System.Net;
using System.Net.Http.Headers;
using System.Net.Http.Json;
using System.Security.Cryptography;
using System.Text;
using System.Text.Json;
using Microsoft.Extensions.DependencyInjection;
using SandboxVM.Core.Sessions;

namespace SandboxVM.Functional.Tests;

/// <summary>What a user does with /v1/sandboxes: state kept across runs, files, artifacts, streaming, lifetimes.</summary>
public abstract class SessionScenarios(ServerFixture server)
{
    private static CancellationToken Ct => TestContext.Current.CancellationToken;

    /// <summary>A sandbox deleted at the end of the test, also when it fails.</summary>
    private sealed class Sandbox(ServerFixture server, string id) : IAsyncDisposable
    {
        public string Id { get; } = id;

        public string Url(string rest = "") => $"/v1/sandboxes/{Id}{rest}";

        public async Task<RunResultDto> RunAsync(string code, object? extra = null)
        {
            var body = new Dictionary<string, object?> { ["code"] = code };
            if (extra is not null)
            {
                foreach (var p in extra.GetType().GetProperties())
                {
                    body[p.Name] = p.GetValue(extra);
                }
            }
            using var response = await server.Http.PostAsJsonAsync(Url("/run"), body, ServerFixture.Json, Ct);
            string text = await response.Content.ReadAsStringAsync(Ct);
            Assert.True(response.IsSuccessStatusCode, $"run answered {(int)response.StatusCode}: {text}");
            return JsonSerializer.Deserialize<RunResultDto>(text, ServerFixture.Json)!;
        }

        public async ValueTask DisposeAsync()
        {
            using var _ = await server.Http.DeleteAsync(Url(), CancellationToken.None);
        }
    }

    private async Task<Sandbox> CreateAsync(string template, object? extra = null)
    {
        var body = new Dictionary<string, object?> { ["template"] = template };
        if (extra is not null)
        {
            foreach (var p in extra.GetType().GetProperties())
            {
                body[p.Name] = p.GetValue(extra);
            }
        }
        using var response = await server.Http.PostAsJsonAsync("/v1/sandboxes", body, ServerFixture.Json, Ct);
        string text = await response.Content.ReadAsStringAsync(Ct);
        Assert.True(response.StatusCode == HttpStatusCode.Created, $"create answered {(int)response.StatusCode}: {text}");
        using var doc = JsonDocument.Parse(text);
        return new Sandbox(server, doc.RootElement.GetProperty("id").GetString()!);
    }

    [Fact]
    public async Task Python_StateSurvivesRuns_AndAFailingRunKeepsIt()
    {
        await using var sb = await CreateAsync("python-data-analysis");

        var first = await sb.RunAsync("import math\nx = 41\n");
        Assert.True(first.Status == "ok", first.ToString());
        var failing = await sb.RunAsync("y = x * 2\nraise ValueError('boom')\n");
        Assert.Equal("error", failing.Status);
        Assert.Contains("ValueError: boom", failing.Stderr);
        var second = await sb.RunAsync("print(x + 1, y, math.floor(2.5))\n");

        Assert.True(second.Status == "ok", second.ToString());
        Assert.Equal("42 82 2\n", second.Stdout);
        Assert.False(second.StateReset);
    }

    [Fact]
    public async Task Python_FinalExpression_ComesBackAsTheResult()
    {
        await using var sb = await CreateAsync("python-data-analysis");

        var r = await sb.RunAsync("import pandas as pd\ndf = pd.DataFrame({'a': [1, 2, 3]})\ndf.a.sum() * 2\n");
        var none = await sb.RunAsync("z = 1\n");

        Assert.True(r.Status == "ok", r.ToString());
        Assert.Equal("12", r.Result);
        Assert.Null(none.Result);
    }

    [Fact]
    public async Task Python_ATimedOutRun_IsInterrupted_AndTheGlobalsStay()
    {
        await using var sb = await CreateAsync("python-data-analysis");
        await sb.RunAsync("x = 5\n");

        var slow = await sb.RunAsync("import time\ntime.sleep(300)\n", new { timeout_s = 3 });
        var stopwatch = System.Diagnostics.Stopwatch.StartNew();
        var after = await sb.RunAsync("print(x)\nx + 1\n");
        var afterTook = stopwatch.Elapsed;

        Assert.Equal("timeout", slow.Status);
        Assert.Contains("KeyboardInterrupt", slow.Stderr);
        Assert.True(after.Status == "ok", after.ToString());
        Assert.Equal("5\n", after.Stdout);
        Assert.Equal("6", after.Result);
        Assert.False(after.StateReset);
        // The kernel that was interrupted answers: no new interpreter (about 10 s under TCG before).
        Assert.True(afterTook < TimeSpan.FromSeconds(8), $"the run after the timeout took {afterTook}");
    }

    [Fact]
    public async Task Python_ATimedOutRunThatIgnoresTheInterrupt_ResetsState_AndSaysSo()
    {
        await using var sb = await CreateAsync("python-data-analysis");
        await sb.RunAsync("x = 1\n");

        var slow = await sb.RunAsync("while True:\n    try:\n        while True:\n            pass\n    except KeyboardInterrupt:\n        pass\n",
            new { timeout_s = 2 });
        var after = await sb.RunAsync("print('x' in globals())\n");

        Assert.Equal("timeout", slow.Status);
        Assert.True(after.Status == "ok", after.ToString());
        Assert.Equal("False\n", after.Stdout);
        Assert.True(after.StateReset);
    }

    [Fact]
    public async Task Python_OpenFigures_ComeBackAsImages_InOrder()
    {
        await using var sb = await CreateAsync("python-data-analysis");

        var r = await sb.RunAsync("import matplotlib.pyplot as plt\nplt.plot([1, 2, 3])\nplt.show()\nplt.figure()\nplt.bar([1, 2], [3, 4])\n");
        var again = await sb.RunAsync("import matplotlib.pyplot as plt\nplt.plot([3, 2, 1])\n");

        Assert.True(r.Status == "ok", r.ToString());
        Assert.Equal(["figure-1.png", "figure-2.png"], r.Artifacts.Select(a => a.Path));
        Assert.All(r.Artifacts, a => Assert.Equal("image/png", a.Mime));
        Assert.Equal(["figure-3.png"], again.Artifacts.Select(a => a.Path));
        Assert.DoesNotContain("non-interactive", r.Stderr);
    }

    [Fact]
    public async Task Cpp_UnchangedSource_IsNotRecompiled()
    {
        await using var sb = await CreateAsync("cpp-algorithm");
        const string code = "#include <bits/stdc++.h>\nint main(){ std::cout << 6 * 7 << \"\\n\"; }\n";

        var first = await sb.RunAsync(code);
        var second = await sb.RunAsync(code);
        var changed = await sb.RunAsync(code.Replace("6 * 7", "6 * 8"));

        Assert.True(first.Status == "ok", first.ToString());
        Assert.False(first.BuildCached);
        Assert.True(second.BuildCached, second.ToString());
        Assert.Equal("42\n", second.Stdout);
        Assert.Equal(0, second.Metrics["compile_ms"].GetDouble());
        Assert.False(changed.BuildCached);
        Assert.Equal("48\n", changed.Stdout);
    }

    [Fact]
    public async Task Files_A50MBBinaryFile_RoundTripsByteForByte_AndIsListed()
    {
        await using var sb = await CreateAsync("python-data-analysis");
        byte[] data = RandomNumberGenerator.GetBytes(50 << 20);

        using (var put = await server.Http.PutAsync(sb.Url("/files?path=data/blob.bin"), new ByteArrayContent(data), Ct))
        {
            // The directory data/ did not exist: it is created.
            Assert.True(put.IsSuccessStatusCode, await put.Content.ReadAsStringAsync(Ct));
        }
        using (var mkdir = await server.Http.PostAsync(sb.Url("/files/mkdir?path=more/nested"), null, Ct))
        {
            Assert.Equal(HttpStatusCode.OK, mkdir.StatusCode);
        }
        byte[] back = await server.Http.GetByteArrayAsync(sb.Url("/files?path=data/blob.bin"), Ct);
        var listing = await server.Http.GetFromJsonAsync<JsonElement>(sb.Url("/files?path=data&list=true"), Ct);
        var check = await sb.RunAsync("import hashlib\nprint(hashlib.sha256(open('data/blob.bin', 'rb').read()).hexdigest())\n");

        Assert.Equal(SHA256.HashData(data), SHA256.HashData(back));
        var entry = Assert.Single(listing.GetProperty("entries").EnumerateArray());
        Assert.Equal("blob.bin", entry.GetProperty("name").GetString());
        Assert.Equal(data.Length, entry.GetProperty("size").GetInt64());
        Assert.Equal(Convert.ToHexStringLower(SHA256.HashData(data)) + "\n", check.Stdout);

        using var del = await server.Http.DeleteAsync(sb.Url("/files?path=data/blob.bin"), Ct);
        Assert.Equal(HttpStatusCode.NoContent, del.StatusCode);
        using var gone = await server.Http.GetAsync(sb.Url("/files?path=data/blob.bin"), Ct);
        Assert.Equal(HttpStatusCode.NotFound, gone.StatusCode);
        Assert.Equal("file_not_found", (await gone.Content.ReadFromJsonAsync<JsonElement>(Ct)).GetProperty("code").GetString());
    }

    [Fact]
    public async Task Files_AnUploadOverTheLimit_Is413_WithOrWithoutALength_AndLeavesNoFile()
    {
        await using var sb = await CreateAsync("python-data-analysis");
        long size = ServerFixture.MaxUploadBytes + 1;

        using var declared = new HttpRequestMessage(HttpMethod.Put, sb.Url("/files?path=big.bin"))
        {
            Content = new StreamContent(new ZeroStream(size)),
        };
        declared.Content.Headers.ContentLength = size;
        // As curl does for large bodies: wait for the server's go-ahead, so an early 413 is read, not a broken pipe.
        declared.Headers.ExpectContinue = true;
        using var a = await server.Http.SendAsync(declared, Ct);
        using var chunked = new HttpRequestMessage(HttpMethod.Put, sb.Url("/files?path=big2.bin"))
        {
            Content = new StreamContent(new ZeroStream(size)),
        };
        chunked.Headers.TransferEncodingChunked = true;
        chunked.Headers.ExpectContinue = true;
        using var b = await server.Http.SendAsync(chunked, Ct);
        var listing = await server.Http.GetFromJsonAsync<JsonElement>(sb.Url("/files?path=.&list=true"), Ct);

        Assert.Equal(HttpStatusCode.RequestEntityTooLarge, a.StatusCode);
        Assert.Equal(HttpStatusCode.RequestEntityTooLarge, b.StatusCode);
        Assert.Equal("file_too_large", (await b.Content.ReadFromJsonAsync<JsonElement>(Ct)).GetProperty("code").GetString());
        Assert.DoesNotContain(listing.GetProperty("entries").EnumerateArray(), e => e.GetProperty("name").GetString()!.StartsWith("big"));
    }

    [Fact]
    public async Task Files_ABadPath_Is400WithAReason()
    {
        await using var sb = await CreateAsync("python-data-analysis");

        using var empty = await server.Http.GetAsync(sb.Url("/files"), Ct);
        using var dir = await server.Http.GetAsync(sb.Url("/files?path=/tmp"), Ct);

        Assert.Equal(HttpStatusCode.BadRequest, empty.StatusCode);
        Assert.Equal("invalid_path", (await empty.Content.ReadFromJsonAsync<JsonElement>(Ct)).GetProperty("code").GetString());
        Assert.Equal(HttpStatusCode.BadRequest, dir.StatusCode);
        Assert.Contains("not a file", await dir.Content.ReadAsStringAsync(Ct));
    }

    [Fact]
    public async Task Files_AreReadAsTheSandboxUser_AlsoThroughADirectorySymlinkTheCodePlanted()
    {
        // The agent is root in a VM and in gVisor; the files API must reach no further than the code could.
        // Under gVisor (no setfsuid) this read /etc/shadow as root before the path threads took the user's
        // effective ids there.
        await using var sb = await CreateAsync("python-data-analysis");
        var r = await sb.RunAsync("import os\nos.symlink('/etc', 'e')\nprint(os.path.exists('/etc/shadow'), os.access('/etc/shadow', os.R_OK))\n");
        Assert.True(r.Status == "ok", r.ToString());
        Assert.Equal("True False", r.Stdout.Trim());

        foreach (string path in new[] { "/etc/shadow", "e/shadow" })
        {
            using var response = await server.Http.GetAsync(sb.Url("/files?path=" + Uri.EscapeDataString(path)), Ct);
            string text = await response.Content.ReadAsStringAsync(Ct);
            Assert.True(response.StatusCode == HttpStatusCode.Forbidden, $"{path}: {(int)response.StatusCode} {text}");
            Assert.Equal("permission_denied", JsonDocument.Parse(text).RootElement.GetProperty("code").GetString());
        }
    }

    [Fact]
    public async Task Artifacts_AreListedWithASha256ThatMatchesTheDownloadedBytes()
    {
        await using var sb = await CreateAsync("python-data-analysis");
        var r = await sb.RunAsync("import os\nos.makedirs('/tmp/outputs/sub', exist_ok=True)\nopen('/tmp/outputs/sub/report.csv', 'w').write('a,b\\n1,2\\n')\n");
        Assert.True(r.Status == "ok", r.ToString());

        var list = await server.Http.GetFromJsonAsync<JsonElement>(sb.Url("/artifacts"), Ct);
        var item = Assert.Single(list.GetProperty("artifacts").EnumerateArray());
        using var download = await server.Http.GetAsync(sb.Url("/artifacts/sub/report.csv"), Ct);
        byte[] bytes = await download.Content.ReadAsByteArrayAsync(Ct);

        Assert.Equal("sub/report.csv", item.GetProperty("path").GetString());
        Assert.Equal("text/csv", item.GetProperty("mime").GetString());
        Assert.Equal(Convert.ToHexStringLower(SHA256.HashData(bytes)), item.GetProperty("sha256").GetString());
        Assert.Equal("text/csv", download.Content.Headers.ContentType?.MediaType);
        Assert.Equal("a,b\n1,2\n", Encoding.UTF8.GetString(bytes));
        using var escape = await server.Http.GetAsync(sb.Url("/artifacts/..%2F..%2Fetc%2Fpasswd"), Ct);
        Assert.Equal(HttpStatusCode.BadRequest, escape.StatusCode);
    }

    [Fact]
    public async Task Streaming_EventsArriveInOrder_AndTheResultMatchesTheOutput()
    {
        await using var sb = await CreateAsync("python-data-analysis");
        const string code = "import sys, time\nfor i in range(4):\n    print('line', i, flush=True)\n    time.sleep(0.2)\nprint('oops', file=sys.stderr)\n";

        var events = await StreamAsync(sb.Url("/run"), new { code });
        var plain = await sb.RunAsync(code);

        Assert.Equal("result", events[^1].Name);
        var result = JsonSerializer.Deserialize<RunResultDto>(events[^1].Data, ServerFixture.Json)!;
        string streamed = string.Concat(events.Where(e => e.Name == "stdout").Select(e => JsonDocument.Parse(e.Data).RootElement.GetProperty("text").GetString()));
        Assert.Equal("line 0\nline 1\nline 2\nline 3\n", streamed);
        Assert.Equal(streamed, result.Stdout);
        Assert.Equal(plain.Stdout, result.Stdout);
        Assert.Equal(plain.Stderr, result.Stderr);
        Assert.Contains(events, e => e.Name == "stderr");
        // Output came while the program ran, not all at the end (a loaded server may merge adjacent lines
        // into one event, so more than one stdout event, not one per line).
        Assert.True(events.FindIndex(e => e.Name == "stdout") < events.FindLastIndex(e => e.Name == "stdout"),
            string.Join(" | ", events.Select(e => e.Name + ":" + e.Data)));
    }

    [Fact]
    public async Task Streaming_OneShotRun_EndsWithTheResult()
    {
        var events = await StreamAsync("/v1/run", new { template = "python-data-analysis", code = "print('hi')" });

        Assert.Equal(["stdout", "result"], events.Select(e => e.Name).Distinct());
        Assert.Equal("ok", JsonDocument.Parse(events[^1].Data).RootElement.GetProperty("status").GetString());
    }

    [Fact]
    public async Task Streaming_AClientThatDisconnects_CancelsItsRun()
    {
        await using var sb = await CreateAsync("python-data-analysis");
        using (var request = new HttpRequestMessage(HttpMethod.Post, sb.Url("/run"))
        {
            Content = JsonContent.Create(new { code = "import time\nprint('started', flush=True)\ntime.sleep(60)\nopen('finished', 'w').write('x')\n" }, options: ServerFixture.Json),
        })
        {
            request.Headers.Accept.Add(new MediaTypeWithQualityHeaderValue("text/event-stream"));
            using var response = await server.Http.SendAsync(request, HttpCompletionOption.ResponseHeadersRead, Ct);
            using var reader = new StreamReader(await response.Content.ReadAsStreamAsync(Ct));
            while (await reader.ReadLineAsync(Ct) is { } line && !line.Contains("started", StringComparison.Ordinal))
            {
            }
        } // the client goes away here, mid-run

        // Runs of a sandbox wait for each other: this one only starts once the abandoned one is gone.
        var watch = Stopwatch.StartNew();
        var next = await sb.RunAsync("import os\nprint(os.path.exists('finished'))\n");

        Assert.True(next.Status == "ok", next.ToString());
        Assert.Equal("False\n", next.Stdout);
        Assert.True(watch.Elapsed < TimeSpan.FromSeconds(40), $"the next run waited {watch.Elapsed}: the abandoned run went on");
    }

    [Fact]
    public async Task Runs_OfOneSandbox_HappenOneAtATimeInOrder()
    {
        await using var sb = await CreateAsync("python-data-analysis");

        // The first run is streamed, so the test knows it is running before it sends the second.
        using var request = new HttpRequestMessage(HttpMethod.Post, sb.Url("/run"))
        {
            Content = JsonContent.Create(new { code = "import time\nprint('started', flush=True)\ntime.sleep(1.5)\nopen('order.txt', 'a').write('a')\n" }, options: ServerFixture.Json),
        };
        request.Headers.Accept.Add(new MediaTypeWithQualityHeaderValue("text/event-stream"));
        using var response = await server.Http.SendAsync(request, HttpCompletionOption.ResponseHeadersRead, Ct);
        using var reader = new StreamReader(await response.Content.ReadAsStreamAsync(Ct));
        while (await reader.ReadLineAsync(Ct) is { } line && !line.Contains("started", StringComparison.Ordinal))
        {
        }

        var second = await sb.RunAsync("open('order.txt', 'a').write('b')\nprint(open('order.txt').read())\n");
        string firstRest = await reader.ReadToEndAsync(Ct);

        Assert.Equal("ab\n", second.Stdout);
        Assert.Contains("\"ok\"", firstRest);
    }

    [Fact]
    public async Task Lifetime_WhenOver_EndsTheSandboxAndItsVm()
    {
        var sessions = server.Services.GetRequiredService<SessionManager>();
        await using var sb = await CreateAsync("python-data-analysis", new { timeout_s = 2 });
        var vm = sessions.Get(sb.Id).Vm;

        await vm.Exited.WaitAsync(TimeSpan.FromSeconds(30), Ct);
        using var get = await server.Http.GetAsync(sb.Url(), Ct);

        Assert.Equal(HttpStatusCode.NotFound, get.StatusCode);
        Assert.Equal("sandbox_not_found", (await get.Content.ReadFromJsonAsync<JsonElement>(Ct)).GetProperty("code").GetString());
    }

    [Fact]
    public async Task IdleTimeout_EndsAnUnusedSandbox_WhileKeepaliveExtendsItsLifetime()
    {
        var sessions = server.Services.GetRequiredService<SessionManager>();
        await using var idle = await CreateAsync("python-data-analysis", new { timeout_s = 60, idle_timeout_s = 2 });
        var vm = sessions.Get(idle.Id).Vm;
        var before = await server.Http.GetFromJsonAsync<JsonElement>(idle.Url(), Ct);
        using var keep = await server.Http.PostAsJsonAsync(idle.Url("/keepalive"), new { timeout_s = 600 }, Ct);
        var after = await keep.Content.ReadFromJsonAsync<JsonElement>(Ct);

        Assert.True(after.GetProperty("expires_at").GetDateTime() > before.GetProperty("expires_at").GetDateTime());
        await vm.Exited.WaitAsync(TimeSpan.FromSeconds(30), Ct);
        using var get = await server.Http.GetAsync(idle.Url(), Ct);
        Assert.Equal(HttpStatusCode.NotFound, get.StatusCode);
    }

    [Fact]
    public async Task Create_PastTheCap_Is429WithRetryAfter()
    {
        var made = new List<Sandbox>();
        try
        {
            for (int i = 0; i < ServerFixture.MaxSandboxes; i++)
            {
                made.Add(await CreateAsync("python-data-analysis"));
            }
            using var over = await server.Http.PostAsJsonAsync("/v1/sandboxes", new { template = "python-data-analysis" }, Ct);

            Assert.Equal((HttpStatusCode)429, over.StatusCode);
            Assert.NotNull(over.Headers.RetryAfter);
            Assert.Equal("too_many_sandboxes", (await over.Content.ReadFromJsonAsync<JsonElement>(Ct)).GetProperty("code").GetString());
        }
        finally
        {
            foreach (var sb in made)
            {
                await sb.DisposeAsync();
            }
        }
    }

    [Fact]
    public async Task UnknownSandbox_Is404ProblemOnEveryCall()
    {
        foreach (var (method, url) in new[] { ("GET", "/v1/sandboxes/sbx_0"), ("DELETE", "/v1/sandboxes/sbx_0"), ("POST", "/v1/sandboxes/sbx_0/keepalive"), ("GET", "/v1/sandboxes/sbx_0/files?path=a"), ("GET", "/v1/sandboxes/sbx_0/artifacts") })
        {
            using var response = await server.Http.SendAsync(new HttpRequestMessage(new HttpMethod(method), url), Ct);
            Assert.Equal(HttpStatusCode.NotFound, response.StatusCode);
            Assert.Equal("application/problem+json", response.Content.Headers.ContentType?.MediaType);
        }
        using var run = await server.Http.PostAsJsonAsync("/v1/sandboxes/sbx_0/run", new { code = "print(1)" }, Ct);
        Assert.Equal(HttpStatusCode.NotFound, run.StatusCode);
    }

    private sealed record SseEvent(string Name, string Data);

    private async Task<List<SseEvent>> StreamAsync(string url, object body)
    {
        using var request = new HttpRequestMessage(HttpMethod.Post, url) { Content = JsonContent.Create(body, options: ServerFixture.Json) };
        request.Headers.Accept.Add(new MediaTypeWithQualityHeaderValue("text/event-stream"));
        using var response = await server.Http.SendAsync(request, HttpCompletionOption.ResponseHeadersRead, Ct);
        Assert.Equal("text/event-stream", response.Content.Headers.ContentType?.MediaType);
        using var reader = new StreamReader(await response.Content.ReadAsStreamAsync(Ct));
        var events = new List<SseEvent>();
        string? name = null;
        var data = new StringBuilder();
        while (await reader.ReadLineAsync(Ct) is { } line)
        {
            if (line.StartsWith("event: ", StringComparison.Ordinal))
            {
                name = line[7..];
            }
            else if (line.StartsWith("data: ", StringComparison.Ordinal))
            {
                data.Append(line[6..]);
            }
            else if (line.Length == 0 && name is not null)
            {
                events.Add(new SseEvent(name, data.ToString()));
                name = null;
                data.Clear();
            }
        }
        return events;
    }

    /// <summary>A stream of <paramref name="length"/> zero bytes, produced as read (nothing buffered).</summary>
    private sealed class ZeroStream(long length) : Stream
    {
        private long _position;

        public override int Read(byte[] buffer, int offset, int count)
        {
            int n = (int)Math.Min(count, length - _position);
            Array.Clear(buffer, offset, n);
            _position += n;
            return n;
        }

        public override bool CanRead => true;
        public override bool CanSeek => false;
        public override bool CanWrite => false;
        public override long Length => length;
        public override long Position { get => _position; set => throw new NotSupportedException(); }
        public override void Flush() { }
        public override long Seek(long offset, SeekOrigin origin) => throw new NotSupportedException();
        public override void SetLength(long value) => throw new NotSupportedException();
        public override void Write(byte[] buffer, int offset, int count) => throw new NotSupportedException();
    }
}

[Collection(ProcessServer.Collection)]
[Trait("tier", "vm")]
public sealed class ProcessSessionTests(ProcessServer server) : SessionScenarios(server);

[Collection(QemuServer.Collection)]
[Trait("tier", "vm")]
public sealed class QemuSessionTests(QemuServer server) : SessionScenarios(server);

[Collection(GvisorServer.Collection)]
[Trait("tier", "vm")]
public sealed class GvisorSessionTests(GvisorServer server) : SessionScenarios(server.OrSkip());
