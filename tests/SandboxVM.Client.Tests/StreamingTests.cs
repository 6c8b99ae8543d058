using System.Net;
using System.Net.Http.Headers;
using System.Text;

namespace SandboxVM.Client.Tests;

[Trait("tier", "unit")]
public class StreamingTests
{
    private const string Result = """{"stdout":"line 1\n","stderr":"warning\n","output":"line 1\nwarning\n","exit_code":0,"status":"ok","result":"42"}""";

    private static readonly string s_stream =
        "event: stdout\n" +
        "data: {\"text\": \"line 1\\n\"}\n" +
        "\n" +
        ": keep-alive\n" +
        "\n" +
        "event: stderr\r\n" +
        "data: {\"text\": \"warning \u00e9\u2713\\n\"}\r\n" +
        "\r\n" +
        "event: artifact\n" +
        "data: {\"path\": \"figure-1.png\", \"mime\": \"image/png\", \"size\": 1234, \"sha256\": \"ab\"}\n" +
        "\n" +
        "event: progress\n" +
        "data: {\"future\": true}\n" +
        "\n" +
        "event: result\n" +
        "data: " + Result + "\n" +
        "\n";

    private static CancellationToken Ct => TestContext.Current.CancellationToken;

    private static HttpResponseMessage EventStream(Stream body)
    {
        var content = new StreamContent(body);
        content.Headers.ContentType = new MediaTypeHeaderValue("text/event-stream");
        return new HttpResponseMessage(HttpStatusCode.OK) { Content = content };
    }

    private static (SandboxClient Client, FakeHandler Handler) ClientStreaming(Stream body, string baseUrl = "http://stream.test:8000")
    {
        var handler = new FakeHandler(_ => EventStream(body));
        return (new SandboxClient(new SandboxClientOptions { BaseUrl = baseUrl, HttpMessageHandler = handler }), handler);
    }

    private static async Task<List<RunEvent>> CollectAsync(IAsyncEnumerable<RunEvent> events)
    {
        var list = new List<RunEvent>();
        await foreach (var e in events.WithCancellation(Ct))
        {
            list.Add(e);
        }

        return list;
    }

    private static void AssertTheStandardEvents(List<RunEvent> events)
    {
        Assert.Collection(
            events,
            e => Assert.Equal("line 1\n", Assert.IsType<StdoutEvent>(e).Text),
            e => Assert.Equal("warning é✓\n", Assert.IsType<StderrEvent>(e).Text),
            e =>
            {
                var artifact = Assert.IsType<ArtifactEvent>(e).Artifact;
                Assert.Equal("figure-1.png", artifact.Path);
                Assert.Equal("image/png", artifact.Mime);
                Assert.Equal(1234, artifact.Size);
            },
            e =>
            {
                var result = Assert.IsType<ResultEvent>(e).Result;
                Assert.Equal(RunStatus.Ok, result.Status);
                Assert.Equal("42", result.Result);
                Assert.Equal("line 1\nwarning\n", result.Output);
            });
    }

    [Fact]
    public async Task OneShotStream_PostsToV1RunAskingForEvents_AndYieldsEventsInOrder()
    {
        var (client, handler) = ClientStreaming(ScriptedStream.Text(s_stream));
        using var _ = client;

        var events = await CollectAsync(client.RunStreamAsync(new RunRequest { Template = "python-data-analysis", Code = "print(1)" }, Ct));

        AssertTheStandardEvents(events);
        Assert.Equal(HttpMethod.Post, handler.LastRequest.Method);
        Assert.Equal("http://stream.test:8000/v1/run", handler.LastRequest.RequestUri!.ToString());
        Assert.Equal("text/event-stream", handler.LastRequest.Headers.Accept.First().MediaType);
        Assert.Equal("""{"template":"python-data-analysis","code":"print(1)"}""", handler.LastBody);
    }

    [Fact]
    public async Task EventsSplitAtEveryByte_ParseTheSame()
    {
        var bytes = Encoding.UTF8.GetBytes(s_stream);
        var chunks = bytes.Select(b => (object)new[] { b }).ToArray();
        var (client, _) = ClientStreaming(new ScriptedStream(chunks));
        using var __ = client;

        AssertTheStandardEvents(await CollectAsync(client.RunStreamAsync(new RunRequest { Template = "t", Code = "c" }, Ct)));
    }

    [Fact]
    public async Task EventsSplitInTwoAtAnyPosition_ParseTheSame()
    {
        var bytes = Encoding.UTF8.GetBytes(s_stream);
        for (var cut = 1; cut < bytes.Length; cut += 7)
        {
            var (client, _) = ClientStreaming(new ScriptedStream(bytes[..cut], bytes[cut..]));
            using var __ = client;

            AssertTheStandardEvents(await CollectAsync(client.RunStreamAsync(new RunRequest { Template = "t", Code = "c" }, Ct)));
        }
    }

    [Fact]
    public async Task Stream_JoinsMultiLineData_SkipsCommentsAndEventsWithoutData_AndTakesCrLineEnds()
    {
        var (client, _) = ClientStreaming(ScriptedStream.Text(
            ":comment only\n\n",
            "event: stdout\ndata: {\"text\":\ndata:\"first\"}\nid: 7\nretry: 100\n\n",
            "event: stdout\n\n",
            "event:stderr\rdata:{\"text\": \"second\"}\r\r",
            "event: result\r\ndata: " + Result + "\r\n\r\n",
            "event: stdout\ndata: {\"text\": \"cut off before the blank line\"}"));
        using var __ = client;

        var events = await CollectAsync(client.RunStreamAsync(new RunRequest { Template = "t", Code = "c" }, Ct));

        Assert.Collection(
            events,
            e => Assert.Equal("first", Assert.IsType<StdoutEvent>(e).Text),
            e => Assert.Equal("second", Assert.IsType<StderrEvent>(e).Text),
            e => Assert.Equal(RunStatus.Ok, Assert.IsType<ResultEvent>(e).Result.Status));
    }

    [Fact]
    public async Task SandboxStream_PostsToTheSandboxRun_AndYieldsEachEventBeforeTheNextArrives()
    {
        var gate = new TaskCompletionSource();
        var body = new ScriptedStream(
            "event: stdout\ndata: {\"text\": \"early\\n\"}\n\n",
            gate,
            "event: result\ndata: " + Result + "\n\n");
        var server = new FakeSandboxServer { RunEventStream = () => body };
        await using var sb = await Sandbox.CreateAsync("python-data-analysis", server.Options(), Ct);

        await using var events = sb.RunStreamAsync("print('early')", new RunOptions { TimeoutS = 5 }, Ct).GetAsyncEnumerator(Ct);
        Assert.True(await events.MoveNextAsync().AsTask().WaitAsync(TimeSpan.FromSeconds(10), Ct));
        Assert.Equal("early\n", Assert.IsType<StdoutEvent>(events.Current).Text);
        Assert.Equal(0, body.GatesPassed);
        Assert.Equal("/v1/sandboxes/sb-1/run", server.Last.PathAndQuery);
        Assert.Equal("text/event-stream", server.Last.Request.Headers.Accept.First().MediaType);
        using (var json = System.Text.Json.JsonDocument.Parse(server.Last.Body!))
        {
            Assert.Equal("print('early')", json.RootElement.GetProperty("code").GetString());
            Assert.Equal(5, json.RootElement.GetProperty("timeout_s").GetDouble());
            Assert.Equal(2, json.RootElement.EnumerateObject().Count());
        }

        gate.SetResult();
        Assert.True(await events.MoveNextAsync());
        Assert.IsType<ResultEvent>(events.Current);
        Assert.False(await events.MoveNextAsync());
    }

    [Fact]
    public async Task ResultEvent_EndsTheStream_WithoutReadingFurther()
    {
        var never = new TaskCompletionSource();
        var body = new ScriptedStream("event: result\ndata: " + Result + "\n\n", never, "event: stdout\ndata: {\"text\":\"late\"}\n\n");
        var (client, _) = ClientStreaming(body);
        using var __ = client;

        var events = await CollectAsync(client.RunStreamAsync(new RunRequest { Template = "t", Code = "c" }, Ct))
            .WaitAsync(TimeSpan.FromSeconds(10), Ct);

        Assert.IsType<ResultEvent>(Assert.Single(events));
        Assert.True(body.Disposed);
    }

    [Fact]
    public async Task StreamCutBeforeTheResult_ThrowsConnectionException()
    {
        var (client, _) = ClientStreaming(ScriptedStream.Text("event: stdout\ndata: {\"text\":\"a\"}\n\n", "event: result\ndata: {\"status\":"));
        using var __ = client;
        var seen = new List<RunEvent>();

        var ex = await Assert.ThrowsAsync<SandboxConnectionException>(async () =>
        {
            await foreach (var e in client.RunStreamAsync(new RunRequest { Template = "t", Code = "c" }, Ct))
            {
                seen.Add(e);
            }
        });

        Assert.IsType<StdoutEvent>(Assert.Single(seen));
        Assert.Contains("before the result", ex.Message, StringComparison.Ordinal);
        Assert.Contains("http://stream.test:8000", ex.Message, StringComparison.Ordinal);
        Assert.Contains("POST /v1/run", ex.Message, StringComparison.Ordinal);
    }

    [Fact]
    public async Task EmptyStream_ThrowsConnectionException()
    {
        var (client, _) = ClientStreaming(ScriptedStream.Text());
        using var __ = client;

        await Assert.ThrowsAsync<SandboxConnectionException>(
            () => CollectAsync(client.RunStreamAsync(new RunRequest { Template = "t", Code = "c" }, Ct)));
    }

    [Fact]
    public async Task ConnectionBrokenMidStream_ThrowsConnectionException()
    {
        var (client, _) = ClientStreaming(new ScriptedStream(
            "event: stdout\ndata: {\"text\":\"a\"}\n\n", new HttpIOException(HttpRequestError.ResponseEnded, "reset")));
        using var __ = client;

        var ex = await Assert.ThrowsAsync<SandboxConnectionException>(
            () => CollectAsync(client.RunStreamAsync(new RunRequest { Template = "t", Code = "c" }, Ct)));

        Assert.IsType<HttpIOException>(ex.InnerException);
    }

    [Fact]
    public async Task MalformedEventData_ThrowsApiExceptionNamingTheEvent()
    {
        var (client, _) = ClientStreaming(ScriptedStream.Text("event: stdout\ndata: not json\n\n"));
        using var __ = client;

        var ex = await Assert.ThrowsAsync<SandboxApiException>(
            () => CollectAsync(client.RunStreamAsync(new RunRequest { Template = "t", Code = "c" }, Ct)));

        Assert.Contains("'stdout'", ex.Message, StringComparison.Ordinal);
    }

    [Fact]
    public async Task RefusedBeforeRunning_ThrowsTheTypedProblem()
    {
        var handler = new FakeHandler(_ => FakeHandler.Problem(HttpStatusCode.NotFound, "sandbox_not_found"));
        using var client = new SandboxClient(new SandboxClientOptions { HttpMessageHandler = handler });

        var ex = await Assert.ThrowsAsync<SandboxNotFoundException>(
            () => CollectAsync(client.StreamRunAsync("v1/sandboxes/x/run", "{}"u8.ToArray(), Ct)));

        Assert.Equal("sandbox_not_found", ex.Code);
    }

    [Fact]
    public async Task ServerAnsweringPlainJson_GivesOneResultEvent()
    {
        var handler = new FakeHandler(HttpStatusCode.OK, Result);
        using var client = new SandboxClient(new SandboxClientOptions { HttpMessageHandler = handler });

        var events = await CollectAsync(client.RunStreamAsync(new RunRequest { Template = "t", Code = "c" }, Ct));

        Assert.Equal("42", Assert.IsType<ResultEvent>(Assert.Single(events)).Result.Result);
    }

    [Fact]
    public async Task LeavingTheLoopEarly_ReleasesTheResponse()
    {
        var never = new TaskCompletionSource();
        var body = new ScriptedStream("event: stdout\ndata: {\"text\":\"a\"}\n\n", never);
        var (client, _) = ClientStreaming(body);
        using var __ = client;

        await foreach (var e in client.RunStreamAsync(new RunRequest { Template = "t", Code = "c" }, Ct))
        {
            Assert.IsType<StdoutEvent>(e);
            break;
        }

        Assert.True(body.Disposed);
    }

    [Fact]
    public async Task CallerCancellingMidStream_ThrowsOperationCanceled()
    {
        var never = new TaskCompletionSource();
        var (client, _) = ClientStreaming(new ScriptedStream("event: stdout\ndata: {\"text\":\"a\"}\n\n", never));
        using var __ = client;
        using var cts = CancellationTokenSource.CreateLinkedTokenSource(Ct);

        await Assert.ThrowsAnyAsync<OperationCanceledException>(async () =>
        {
            await foreach (var e in client.RunStreamAsync(new RunRequest { Template = "t", Code = "c" }, cts.Token))
            {
                await cts.CancelAsync();
            }
        });
    }

    [Fact]
    public async Task StreamStalledPastTheTimeout_ThrowsConnectionException()
    {
        var never = new TaskCompletionSource();
        var handler = new FakeHandler(_ => EventStream(new ScriptedStream("event: stdout\ndata: {\"text\":\"a\"}\n\n", never)));
        using var client = new SandboxClient(new SandboxClientOptions { HttpMessageHandler = handler, Timeout = TimeSpan.FromMilliseconds(200) });

        var ex = await Assert.ThrowsAsync<SandboxConnectionException>(
            () => CollectAsync(client.RunStreamAsync(new RunRequest { Template = "t", Code = "c" }, Ct)));

        Assert.Contains("did not answer POST /v1/run within 0.2 s", ex.Message, StringComparison.Ordinal);
    }

    [Fact]
    public async Task RunWithCallbacks_StreamsAndCallsThemInOrder_ThenReturnsTheResult()
    {
        var server = new FakeSandboxServer { RunEventStream = () => ScriptedStream.Text(s_stream) };
        await using var sb = await Sandbox.CreateAsync("python-data-analysis", server.Options(), Ct);
        var calls = new List<string>();

        var result = await sb.RunAsync("print(1)", onStdout: t => calls.Add("out:" + t), onStderr: t => calls.Add("err:" + t), cancellationToken: Ct);

        Assert.Equal(["out:line 1\n", "err:warning é✓\n"], calls);
        Assert.Equal("42", result.Result);
        Assert.Equal("text/event-stream", server.Last.Request.Headers.Accept.First().MediaType);
    }

    [Fact]
    public async Task RunWithCallbacksInOptions_AlsoReportsArtifacts()
    {
        var server = new FakeSandboxServer { RunEventStream = () => ScriptedStream.Text(s_stream) };
        await using var sb = await Sandbox.CreateAsync("python-data-analysis", server.Options(), Ct);
        var artifacts = new List<string>();

        var result = await sb.RunAsync("plot()", new RunOptions { OnArtifact = a => artifacts.Add(a.Path) }, Ct);

        Assert.Equal(["figure-1.png"], artifacts);
        Assert.Equal(RunStatus.Ok, result.Status);
    }
}
