using System.Globalization;
using System.Net;
using System.Net.Http.Headers;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using System.Text.Json.Serialization.Metadata;
using SandboxVM.Client.Internal;

namespace SandboxVM.Client.Tests;

/// <summary>
/// The C# SDK's side of the wire contract (tests/contract/README.md): every sample is read into the
/// SDK's types and written back equal (times compared as instants: the SDK writes <c>+00:00</c> for
/// <c>Z</c>), the stream events come out of <see cref="SandboxClient.RunStreamAsync"/>, and the problem
/// reaches the caller's exception.
/// </summary>
[Trait("tier", "unit")]
public sealed class ContractTests
{
    private static CancellationToken Ct => TestContext.Current.CancellationToken;

    private static string SampleText(string name) => File.ReadAllText(Path.Combine(AppContext.BaseDirectory, "contract", name));

    private static JsonNode Sample(string name) => JsonNode.Parse(SampleText(name))!;

    /// <summary>The node with every timestamp string as its UTC instant in one format.</summary>
    private static JsonNode? Normalized(JsonNode? node) => node switch
    {
        JsonObject o => new JsonObject(o.Select(p => KeyValuePair.Create(p.Key, Normalized(p.Value)))),
        JsonArray a => new JsonArray([.. a.Select(Normalized)]),
        JsonValue v when v.TryGetValue<string>(out var s) && s.Contains('T', StringComparison.Ordinal)
                         && DateTimeOffset.TryParse(s, CultureInfo.InvariantCulture, DateTimeStyles.RoundtripKind, out var t)
            => JsonValue.Create(t.UtcDateTime.ToString("O", CultureInfo.InvariantCulture)),
        _ => node?.DeepClone(),
    };

    private static void AssertSame(JsonNode sample, JsonNode written, string what) =>
        Assert.True(JsonNode.DeepEquals(Normalized(sample), Normalized(written)),
            $"the SDK writes {what} as\n{written.ToJsonString()}\nthe sample is\n{sample.ToJsonString()}");

    private static T AssertRoundTrip<T>(JsonNode sample, JsonTypeInfo<T> type)
    {
        T value = sample.Deserialize(type)!;
        AssertSame(sample, JsonSerializer.SerializeToNode(value, type)!, typeof(T).Name);
        return value;
    }

    [Fact]
    public async Task RunRequest_IsSentAsTheSample()
    {
        var sample = Sample("run_request.json");
        var request = AssertRoundTrip(sample, SandboxJson.Default.RunRequest);
        var handler = new FakeHandler(HttpStatusCode.OK, SampleText("run_result.json"));
        using var client = new SandboxClient(new SandboxClientOptions { HttpMessageHandler = handler });

        await client.RunAsync(request, Ct);

        AssertSame(sample, JsonNode.Parse(handler.LastBody!)!, "the body of POST /v1/run");
    }

    [Fact]
    public async Task RunResult_WithArtifactsAndMetrics_IsReadAndWrittenAsTheSample()
    {
        var result = AssertRoundTrip(Sample("run_result.json"), SandboxJson.Default.RunResult);
        var handler = new FakeHandler(HttpStatusCode.OK, SampleText("run_result.json"));
        using var client = new SandboxClient(new SandboxClientOptions { HttpMessageHandler = handler });

        var answered = await client.RunAsync(new RunRequest { Template = "t", Code = "c" }, Ct);

        Assert.Equal(RunStatus.Error, answered.Status);
        Assert.Equal(VmSource.Pool, answered.Metrics.VmSource);
        Assert.Equal([0x89, (byte)'P', (byte)'N', (byte)'G'], Assert.Single(answered.Artifacts).Content);
        Assert.Equal(result.Output, answered.Output);
    }

    [Fact]
    public void SandboxInfo_IsReadAndWrittenAsTheSample()
    {
        var info = AssertRoundTrip(Sample("sandbox_info.json"), SandboxJson.Default.SandboxInfo);
        Assert.Equal(SandboxState.Paused, info.State);
        Assert.Equal(new DateTimeOffset(2026, 11, 28, 21, 30, 0, 123, TimeSpan.Zero), info.CreatedAt);
        Assert.Equal(412090368, info.PausedBytes);
        Assert.Equal("pause", info.OnIdle);
    }

    [Fact]
    public void FileInfo_IsReadAndWrittenAsTheSample()
    {
        var file = AssertRoundTrip(Sample("file_info.json"), SandboxJson.Default.SandboxFileInfo);
        Assert.Equal(SandboxFileKind.File, file.Kind);
    }

    [Fact]
    public async Task StreamEvents_ComeOutOfRunStreamAsync_AsTheSample()
    {
        var samples = Sample("stream_events.json").AsArray();
        var stream = new StringBuilder();
        foreach (var e in samples)
        {
            stream.Append("event: ").Append(e!["event"]!.GetValue<string>()).Append("\ndata: ").Append(e["data"]!.ToJsonString()).Append("\n\n");
        }
        stream.Append("event: result\ndata: ").Append(Sample("run_result.json").ToJsonString()).Append("\n\n");
        var handler = new FakeHandler(_ =>
        {
            var content = new StringContent(stream.ToString(), Encoding.UTF8);
            content.Headers.ContentType = new MediaTypeHeaderValue("text/event-stream");
            return new HttpResponseMessage(HttpStatusCode.OK) { Content = content };
        });
        using var client = new SandboxClient(new SandboxClientOptions { HttpMessageHandler = handler });

        var events = new List<RunEvent>();
        await foreach (var e in client.RunStreamAsync(new RunRequest { Template = "t", Code = "c" }, Ct))
        {
            events.Add(e);
        }

        Assert.Equal(samples.Count + 1, events.Count);
        for (int i = 0; i < samples.Count; i++)
        {
            var data = samples[i]!["data"]!;
            switch (samples[i]!["event"]!.GetValue<string>())
            {
                case "stdout":
                    Assert.Equal(data["text"]!.GetValue<string>(), Assert.IsType<StdoutEvent>(events[i]).Text);
                    break;
                case "stderr":
                    Assert.Equal(data["text"]!.GetValue<string>(), Assert.IsType<StderrEvent>(events[i]).Text);
                    break;
                case "artifact":
                    AssertSame(data, JsonSerializer.SerializeToNode(Assert.IsType<ArtifactEvent>(events[i]).Artifact, SandboxJson.Default.Artifact)!, "the artifact event");
                    break;
                default:
                    Assert.Fail($"the sample has an event the SDK does not know: {samples[i]!.ToJsonString()}");
                    break;
            }
        }
        AssertSame(Sample("run_result.json"), JsonSerializer.SerializeToNode(Assert.IsType<ResultEvent>(events[^1]).Result, SandboxJson.Default.RunResult)!, "the result event");
    }

    [Fact]
    public async Task Problem_ReachesTheCallersException()
    {
        var sample = Sample("problem.json");
        AssertRoundTrip(sample, SandboxJson.Default.ProblemDetails);
        var handler = new FakeHandler((HttpStatusCode)sample["status"]!.GetValue<int>(), SampleText("problem.json"), "application/problem+json");
        using var client = new SandboxClient(new SandboxClientOptions { HttpMessageHandler = handler });

        var e = await Assert.ThrowsAnyAsync<SandboxApiException>(() => client.RunAsync(new RunRequest { Template = "nope", Code = "c" }, Ct));

        Assert.Equal(sample["status"]!.GetValue<int>(), (int)e.StatusCode);
        Assert.Equal(sample["code"]!.GetValue<string>(), e.Code);
        Assert.Equal(sample["field"]!.GetValue<string>(), e.Field);
        Assert.Equal(sample["detail"]!.GetValue<string>(), e.Detail);
        Assert.Equal(sample["title"]!.GetValue<string>(), e.Title);
    }
}
