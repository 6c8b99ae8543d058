using System.Text.Json.Serialization;

namespace SandboxVM.Client.Internal;

/// <summary>Body of <c>GET /v1/templates</c>.</summary>
internal sealed class TemplateList
{
    public List<TemplateInfo>? Templates { get; init; }
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

    /// <summary>Not RFC 7807: some proxies and frameworks answer <c>{"error": "..."}</c>.</summary>
    public string? Error { get; init; }

    /// <summary>Not RFC 7807: some proxies and frameworks answer <c>{"message": "..."}</c>.</summary>
    public string? Message { get; init; }
}

/// <summary>Source-generated (reflection-free, AOT-safe) JSON for every body the SDK sends or reads.</summary>
[JsonSourceGenerationOptions(
    PropertyNamingPolicy = JsonKnownNamingPolicy.SnakeCaseLower,
    DefaultIgnoreCondition = JsonIgnoreCondition.WhenWritingNull,
    UnmappedMemberHandling = JsonUnmappedMemberHandling.Skip,
    NumberHandling = JsonNumberHandling.AllowReadingFromString)]
[JsonSerializable(typeof(RunRequest))]
[JsonSerializable(typeof(RunResult))]
[JsonSerializable(typeof(TemplateInfo))]
[JsonSerializable(typeof(TemplateList))]
[JsonSerializable(typeof(HealthStatus))]
[JsonSerializable(typeof(ProblemDetails))]
internal sealed partial class SandboxJson : JsonSerializerContext;
