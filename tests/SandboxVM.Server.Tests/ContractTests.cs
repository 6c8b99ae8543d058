using System.Text.Json;
using System.Text.Json.Nodes;
using Microsoft.AspNetCore.Mvc;
using SandboxVM.Core.Runs;

namespace SandboxVM.Server.Tests;

/// <summary>
/// The server's side of the wire contract (tests/contract/README.md): each sample is read into the type
/// the endpoint reads or answers with, with the server's JSON options (an unknown member is refused), and
/// written back equal. A field renamed or dropped here, in the C# SDK or in the Python SDK fails one of
/// the three suites.
/// </summary>
[Trait("tier", "unit")]
public sealed class ContractTests
{
    private static readonly JsonSerializerOptions s_json = ServerJson();

    /// <summary>The options the endpoints write with: ASP.NET Core's defaults, then the server's.</summary>
    private static JsonSerializerOptions ServerJson()
    {
        var options = new Microsoft.AspNetCore.Http.Json.JsonOptions().SerializerOptions;
        ServerApp.ConfigureJson(options);
        return options;
    }

    private static JsonNode Sample(string name) =>
        JsonNode.Parse(File.ReadAllText(Path.Combine(AppContext.BaseDirectory, "contract", name)))!;

    private static void AssertRoundTrip<T>(JsonNode sample)
    {
        T value = sample.Deserialize<T>(s_json)!;
        var written = JsonSerializer.SerializeToNode(value, s_json)!;
        Assert.True(JsonNode.DeepEquals(sample, written), $"{typeof(T).Name} writes\n{written.ToJsonString()}\nthe sample is\n{sample.ToJsonString()}");
    }

    [Fact]
    public void RunRequest_IsReadAndWrittenAsTheSample() => AssertRoundTrip<RunRequestBody>(Sample("run_request.json"));

    [Fact]
    public void RunResult_WithArtifactsAndMetrics_IsReadAndWrittenAsTheSample() => AssertRoundTrip<RunResultBody>(Sample("run_result.json"));

    [Fact]
    public void SandboxInfo_IsReadAndWrittenAsTheSample() => AssertRoundTrip<SandboxInfo>(Sample("sandbox_info.json"));

    [Fact]
    public void FileInfo_IsReadAndWrittenAsTheSample() => AssertRoundTrip<FileInfoDto>(Sample("file_info.json"));

    [Fact]
    public void StreamEvents_AreReadAndWrittenAsTheSample()
    {
        var events = Sample("stream_events.json").AsArray();
        foreach (var e in events)
        {
            var data = e!["data"]!;
            switch (e["event"]!.GetValue<string>())
            {
                case "stdout" or "stderr":
                    AssertRoundTrip<StreamText>(data);
                    break;
                case "artifact":
                    AssertRoundTrip<ArtifactInfoDto>(data);
                    break;
                default:
                    Assert.Fail($"the sample has an event the server does not send: {e.ToJsonString()}");
                    break;
            }
        }
        Assert.Equal(["stdout", "stderr", "artifact"], events.Select(e => e!["event"]!.GetValue<string>()));
    }

    [Fact]
    public void Problem_IsWrittenAsTheSample()
    {
        var sample = Sample("problem.json");
        var written = JsonSerializer.SerializeToNode(
            Problems.Create(400, ProblemCodes.UnknownTemplate, "template", "unknown template 'nope'"), s_json)!;

        Assert.True(JsonNode.DeepEquals(sample, written), written.ToJsonString());
        AssertRoundTrip<ProblemDetails>(sample);
    }
}
