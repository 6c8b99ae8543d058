namespace SandboxVM.Client;

/// <summary>A named snapshot of a sandbox (<c>GET /v1/snapshots</c>): new sandboxes start from it with <see cref="SandboxCreateOptions.FromSnapshot"/>.</summary>
public sealed class SnapshotInfo
{
    /// <summary>The name it was saved under, unique among the key's snapshots.</summary>
    public string Name { get; init; } = "";

    /// <summary>Template of the sandbox it was saved from; sandboxes made from it are of this template.</summary>
    public string Template { get; init; } = "";

    /// <summary>Size of the saved image on the server's disk.</summary>
    public long SizeBytes { get; init; }

    /// <summary>When it was saved.</summary>
    public DateTimeOffset CreatedAt { get; init; }

    /// <summary>Id of the sandbox it was saved from (which may have ended since).</summary>
    public string SourceSandbox { get; init; } = "";
}

/// <summary>Which sandboxes <see cref="SandboxClient.ListSandboxesAsync(SandboxListFilter, CancellationToken)"/> returns: all conditions must hold.</summary>
public sealed class SandboxListFilter
{
    /// <summary>Only sandboxes with each of these metadata labels (<c>metadata.KEY=VALUE</c>).</summary>
    public IReadOnlyDictionary<string, string>? Metadata { get; init; }

    /// <summary>Only sandboxes in one of these states (<c>state=...</c>); empty or null for any.</summary>
    public IReadOnlyCollection<SandboxState>? States { get; init; }

    /// <summary>The query string (without '?'), or "" for none.</summary>
    internal string ToQuery()
    {
        var parts = new List<string>();
        foreach (var (key, value) in Metadata ?? new Dictionary<string, string>())
        {
            parts.Add($"{Uri.EscapeDataString("metadata." + key)}={Uri.EscapeDataString(value)}");
        }
        if (States is { Count: > 0 } states)
        {
            if (states.Contains(SandboxState.Unknown) || states.Contains(SandboxState.Ended))
            {
                throw new ArgumentException("only running, pausing, paused and resuming sandboxes are listed", nameof(States));
            }
            parts.Add("state=" + string.Join(',', states.Select(s => s.ToString().ToLowerInvariant())));
        }
        return string.Join('&', parts);
    }
}
