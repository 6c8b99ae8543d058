using System.Text.Json.Serialization;

namespace SandboxVM.Client;

/// <summary>Answer of the server's health check (<c>GET /healthz</c>).</summary>
public sealed class HealthStatus
{
    /// <summary>The status string, <c>ok</c> when the server is healthy.</summary>
    public string Status { get; init => field = value ?? ""; } = "";

    /// <summary>True when <see cref="Status"/> is <c>ok</c>.</summary>
    [JsonIgnore]
    public bool IsOk => string.Equals(Status, "ok", StringComparison.OrdinalIgnoreCase);
}
