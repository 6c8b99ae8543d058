using System.Text.Json.Serialization;

namespace SandboxVM.Client.Internal;

/// <summary>Body of <c>GET /v1/templates</c>.</summary>
internal sealed class TemplateList
{
    public List<TemplateInfo>? Templates { get; init; }
}

/// <summary>Body of <c>POST /v1/sandboxes</c>.</summary>
internal sealed class CreateSandboxRequest
{
    public string? Template { get; init; }

    public string? FromSnapshot { get; init; }

    public double? TimeoutS { get; init; }

    public double? IdleTimeoutS { get; init; }

    public IReadOnlyDictionary<string, string>? Metadata { get; init; }

    public bool? KeepRunning { get; init; }

    public string? OnIdle { get; init; }

    public bool? AutoResume { get; init; }
}

/// <summary>Body of <c>POST /v1/sandboxes/{id}/fork</c>.</summary>
internal sealed class ForkRequest
{
    public int Count { get; init; }
}

/// <summary>Body of <c>POST /v1/sandboxes/{id}/run</c>.</summary>
internal sealed class SandboxRunRequest
{
    public required string Code { get; init; }

    public string? Stdin { get; init; }

    public IReadOnlyDictionary<string, string>? Env { get; init; }

    public double? TimeoutS { get; init; }

    public double? CompileTimeoutS { get; init; }
}

/// <summary>Body of <c>POST /v1/sandboxes/{id}/keepalive</c>.</summary>
internal sealed class KeepAliveRequest
{
    public double? TimeoutS { get; init; }
}

/// <summary>Body of <c>PATCH /v1/sandboxes/{id}</c>.</summary>
internal sealed class PatchSandboxRequest
{
    public double TimeoutS { get; init; }
}

/// <summary>Body of <c>POST /v1/sandboxes/{id}/snapshots</c>.</summary>
internal sealed class SnapshotRequest
{
    public required string Name { get; init; }
}

/// <summary>Body of <c>POST /v1/sandboxes/{id}/shares</c>.</summary>
internal sealed class ShareRequest
{
    public int Port { get; init; }
    public double ExpiresInS { get; init; }
}

/// <summary>Answer of <c>POST /v1/sandboxes/{id}/shares</c>: <c>url</c> relative to the server.</summary>
internal sealed class ShareAnswer
{
    public string? Url { get; init; }
    public DateTimeOffset ExpiresAt { get; init; }
}

/// <summary>Body of <c>GET /v1/snapshots</c>.</summary>
internal sealed class SnapshotList
{
    public List<SnapshotInfo>? Snapshots { get; init; }
}

/// <summary>Body of <c>GET /v1/sandboxes</c>.</summary>
internal sealed class SandboxList
{
    public List<SandboxInfo>? Sandboxes { get; init; }
}

/// <summary>Body of <c>GET /v1/sandboxes/{id}/files?list=true</c>.</summary>
internal sealed class FileList
{
    public string? Path { get; init; }

    public List<SandboxFileInfo>? Entries { get; init; }
}

/// <summary>Body of <c>GET /v1/sandboxes/{id}/artifacts</c>.</summary>
internal sealed class ArtifactList
{
    public List<Artifact>? Artifacts { get; init; }
}

/// <summary>Body of <c>POST /v1/tools/search</c>.</summary>
internal sealed class SearchToolRequest
{
    public required string Query { get; init; }

    public int MaxResults { get; init; }
}

/// <summary>Body of <c>POST /v1/tools/fetch</c>.</summary>
internal sealed class FetchToolRequest
{
    public required string Url { get; init; }
}

/// <summary>Data of the <c>stdout</c> and <c>stderr</c> stream events.</summary>
internal sealed class StreamText
{
    public string? Text { get; init; }
}

/// <summary>RFC 7807 problem details as SandboxVM sends them, plus fields other servers use for errors.</summary>
internal sealed class ProblemDetails
{
    public string? Type { get; init; }

    public string? Title { get; init; }

    public int? Status { get; init; }

    public string? Detail { get; init; }

    public string? Code { get; init; }

    public string? Field { get; init; }

    /// <summary>SandboxVM, <c>egress_denied</c>: the egress policy's reason code.</summary>
    public string? Reason { get; init; }

    /// <summary>Not RFC 7807: some proxies and frameworks answer <c>{"error": "..."}</c>.</summary>
    public string? Error { get; init; }

    /// <summary>Not RFC 7807: some proxies and frameworks answer <c>{"message": "..."}</c>.</summary>
    public string? Message { get; init; }
}

/// <summary>Body of <c>POST /v1/sandboxes/{id}/commands</c>.</summary>
internal sealed class CommandStartRequest
{
    public System.Text.Json.JsonElement Cmd { get; init; }

    public string? Cwd { get; init; }

    public IReadOnlyDictionary<string, string>? Env { get; init; }

    public double? TimeoutS { get; init; }

    public bool Background { get; init; }

    public string? Stdin { get; init; }
}

/// <summary>Body of <c>POST /v1/sandboxes/{id}/commands/{cid}/stdin</c>.</summary>
internal sealed class CommandStdinRequest
{
    public string Data { get; init; } = "";

    public bool Eof { get; init; }
}

/// <summary>Body of <c>GET /v1/sandboxes/{id}/commands</c>.</summary>
internal sealed class CommandList
{
    public List<SandboxCommand>? Commands { get; init; }
}

/// <summary>Source-generated (reflection-free, AOT-safe) JSON for every body the SDK sends or reads.</summary>
[JsonSourceGenerationOptions(
    PropertyNamingPolicy = JsonKnownNamingPolicy.SnakeCaseLower,
    DefaultIgnoreCondition = JsonIgnoreCondition.WhenWritingNull,
    UnmappedMemberHandling = JsonUnmappedMemberHandling.Skip,
    NumberHandling = JsonNumberHandling.AllowReadingFromString)]
[JsonSerializable(typeof(RunRequest))]
[JsonSerializable(typeof(CommandStartRequest))]
[JsonSerializable(typeof(CommandStdinRequest))]
[JsonSerializable(typeof(CommandList))]
[JsonSerializable(typeof(SandboxCommand))]
[JsonSerializable(typeof(string))]
[JsonSerializable(typeof(List<string>))]
[JsonSerializable(typeof(RunResult))]
[JsonSerializable(typeof(TemplateInfo))]
[JsonSerializable(typeof(TemplateList))]
[JsonSerializable(typeof(HealthStatus))]
[JsonSerializable(typeof(ProblemDetails))]
[JsonSerializable(typeof(CreateSandboxRequest))]
[JsonSerializable(typeof(SandboxRunRequest))]
[JsonSerializable(typeof(KeepAliveRequest))]
[JsonSerializable(typeof(ForkRequest))]
[JsonSerializable(typeof(PatchSandboxRequest))]
[JsonSerializable(typeof(SnapshotRequest))]
[JsonSerializable(typeof(ShareRequest))]
[JsonSerializable(typeof(ShareAnswer))]
[JsonSerializable(typeof(SnapshotList))]
[JsonSerializable(typeof(SnapshotInfo))]
[JsonSerializable(typeof(SandboxInfo))]
[JsonSerializable(typeof(SandboxList))]
[JsonSerializable(typeof(SandboxFileInfo))]
[JsonSerializable(typeof(FileList))]
[JsonSerializable(typeof(Artifact))]
[JsonSerializable(typeof(ArtifactList))]
[JsonSerializable(typeof(StreamText))]
[JsonSerializable(typeof(SearchToolRequest))]
[JsonSerializable(typeof(FetchToolRequest))]
[JsonSerializable(typeof(SearchResults))]
[JsonSerializable(typeof(FetchResult))]
internal sealed partial class SandboxJson : JsonSerializerContext;
