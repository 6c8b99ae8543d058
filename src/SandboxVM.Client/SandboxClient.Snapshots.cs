using SandboxVM.Client.Internal;

namespace SandboxVM.Client;

public sealed partial class SandboxClient
{
    /// <summary>Lists the caller's sandboxes that match <paramref name="filter"/> (<c>GET /v1/sandboxes?metadata.KEY=VALUE&amp;state=...</c>).</summary>
    /// <param name="filter">Metadata labels and states that must match.</param>
    /// <param name="cancellationToken">Abandons the call.</param>
    /// <returns>The matching sandboxes, oldest first.</returns>
    /// <exception cref="SandboxApiException">The server answered with an error (400 <c>invalid_filter</c>).</exception>
    /// <exception cref="SandboxConnectionException">The server could not be reached or did not answer in time.</exception>
    public async Task<IReadOnlyList<SandboxInfo>> ListSandboxesAsync(SandboxListFilter filter, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(filter);
        string query = filter.ToQuery();
        var list = await SendAsync(HttpMethod.Get, query.Length == 0 ? "v1/sandboxes" : "v1/sandboxes?" + query, null, SandboxJson.Default.SandboxList,
            cancellationToken).ConfigureAwait(false);
        return list.Sandboxes ?? [];
    }

    /// <summary>Creates a sandbox from the caller's named snapshot (<c>POST /v1/sandboxes {"from_snapshot"}</c>), as often as wanted.</summary>
    /// <param name="snapshot">The snapshot's name.</param>
    /// <param name="options">Lifetime, idle behaviour and metadata of the new sandbox; null for the server's defaults.</param>
    /// <param name="cancellationToken">Abandons the call.</param>
    /// <returns>The running sandbox, with the snapshot's files and interpreter state. Disposing it ends it.</returns>
    /// <exception cref="SandboxNotFoundException">No snapshot of that name (<c>snapshot_not_found</c>; another key's snapshots are not found either).</exception>
    /// <exception cref="SandboxApiException">409 <c>pause_unsupported</c> (the process runtime), 503 <c>sandbox_start_failed</c>.</exception>
    /// <exception cref="SandboxConnectionException">The server could not be reached or did not answer in time.</exception>
    public Task<Sandbox> CreateSandboxFromSnapshotAsync(string snapshot, SandboxCreateOptions? options = null, CancellationToken cancellationToken = default)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(snapshot);
        var o = options ?? new SandboxCreateOptions();
        return CreateSandboxAsync("", new SandboxCreateOptions
        {
            TimeoutS = o.TimeoutS, IdleTimeoutS = o.IdleTimeoutS, KeepRunning = o.KeepRunning, Metadata = o.Metadata, OnIdle = o.OnIdle,
            AutoResume = o.AutoResume, FromSnapshot = snapshot,
        }, cancellationToken);
    }

    /// <summary>The caller's named snapshots (<c>GET /v1/snapshots</c>), by name.</summary>
    /// <param name="cancellationToken">Abandons the call.</param>
    /// <returns>Name, template, size on disk, creation time and source sandbox of each.</returns>
    /// <exception cref="SandboxApiException">The server answered with an error.</exception>
    /// <exception cref="SandboxConnectionException">The server could not be reached or did not answer in time.</exception>
    public async Task<IReadOnlyList<SnapshotInfo>> ListSnapshotsAsync(CancellationToken cancellationToken = default)
    {
        var list = await SendAsync(HttpMethod.Get, "v1/snapshots", null, SandboxJson.Default.SnapshotList, cancellationToken).ConfigureAwait(false);
        return list.Snapshots ?? [];
    }

    /// <summary>Deletes one of the caller's named snapshots (<c>DELETE /v1/snapshots/{name}</c>); sandboxes made from it go on.</summary>
    /// <param name="name">The snapshot's name.</param>
    /// <param name="cancellationToken">Abandons the call.</param>
    /// <returns>True when this call deleted it; false when there was none of that name.</returns>
    /// <exception cref="SandboxApiException">409 <c>snapshot_busy</c> (a sandbox is being started from it), or another error.</exception>
    /// <exception cref="SandboxConnectionException">The server could not be reached or did not answer in time.</exception>
    public async Task<bool> DeleteSnapshotAsync(string name, CancellationToken cancellationToken = default)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(name);
        try
        {
            await SendNoContentAsync(HttpMethod.Delete, "v1/snapshots/" + Uri.EscapeDataString(name), cancellationToken).ConfigureAwait(false);
            return true;
        }
        catch (SandboxNotFoundException)
        {
            return false;
        }
    }
}
