using System.Text.Json;
using SandboxVM.Client.Internal;

namespace SandboxVM.Client;

public sealed partial class Sandbox
{
    /// <summary>Lists the caller's sandboxes, those matching <paramref name="filter"/> when given (<c>GET /v1/sandboxes</c>).</summary>
    /// <param name="filter">Metadata labels and states that must match; null for all.</param>
    /// <param name="options">Server and API key; null for <see cref="SandboxClientOptions.FromEnvironment()"/>.</param>
    /// <param name="cancellationToken">Abandons the call.</param>
    /// <returns>The sandboxes, oldest first; <see cref="ConnectAsync"/> attaches to one.</returns>
    /// <exception cref="SandboxApiException">The server answered with an error (400 <c>invalid_filter</c>).</exception>
    /// <exception cref="SandboxConnectionException">The server could not be reached or did not answer in time.</exception>
    public static async Task<IReadOnlyList<SandboxInfo>> ListAsync(SandboxListFilter? filter = null, SandboxClientOptions? options = null,
        CancellationToken cancellationToken = default)
    {
        using var client = new SandboxClient(options ?? SandboxClientOptions.FromEnvironment());
        return await client.ListSandboxesAsync(filter ?? new SandboxListFilter(), cancellationToken).ConfigureAwait(false);
    }

    /// <summary>
    /// Gives the sandbox a new lifetime (<c>PATCH /v1/sandboxes/{id}</c>): it expires <paramref name="timeoutS"/> seconds from now,
    /// and later keepalives without a timeout extend it by as much. Updates <see cref="Info"/>.
    /// </summary>
    /// <param name="timeoutS">Seconds from now (more than 0, at most the server's maximum).</param>
    /// <param name="cancellationToken">Abandons the call.</param>
    /// <returns>The sandbox with its new <see cref="SandboxInfo.ExpiresAt"/> and <see cref="SandboxInfo.TimeoutS"/>.</returns>
    /// <exception cref="SandboxNotFoundException">The sandbox has ended.</exception>
    /// <exception cref="SandboxApiException">400 <c>timeout_out_of_range</c>; 409 <c>sandbox_paused</c> (resume it first).</exception>
    /// <exception cref="SandboxConnectionException">The server could not be reached or did not answer in time.</exception>
    public async Task<SandboxInfo> SetTimeoutAsync(double timeoutS, CancellationToken cancellationToken = default)
    {
        var body = JsonSerializer.SerializeToUtf8Bytes(new PatchSandboxRequest { TimeoutS = timeoutS }, SandboxJson.Default.PatchSandboxRequest);
        var info = await _client.SendJsonAsync(HttpMethod.Patch, SandboxClient.SandboxPath(Id), body, SandboxJson.Default.SandboxInfo, cancellationToken)
            .ConfigureAwait(false);
        Volatile.Write(ref _info, info);
        return info;
    }

    /// <summary>
    /// A link that serves <paramref name="port"/> of this sandbox to anyone who has it, without an API key, until
    /// <paramref name="expiresIn"/> has passed or the sandbox ends (<c>POST /v1/sandboxes/{id}/shares</c>); a path under
    /// the link reaches the same path on the port.
    /// </summary>
    /// <param name="port">The port a server in the sandbox listens on (1..65535).</param>
    /// <param name="expiresIn">The link's lifetime: 1 s to 7 days; null for 1 hour.</param>
    /// <param name="cancellationToken">Abandons the call.</param>
    /// <returns>The absolute URL of the link and when it expires.</returns>
    /// <exception cref="SandboxNotFoundException">The sandbox has ended.</exception>
    /// <exception cref="SandboxApiException">400 <c>invalid_port</c> or <c>invalid_expiry</c>.</exception>
    /// <exception cref="SandboxConnectionException">The server could not be reached or did not answer in time.</exception>
    public async Task<(Uri Url, DateTimeOffset ExpiresAt)> SharePortAsync(int port, TimeSpan? expiresIn = null, CancellationToken cancellationToken = default)
    {
        var body = JsonSerializer.SerializeToUtf8Bytes(new ShareRequest { Port = port, ExpiresInS = (expiresIn ?? TimeSpan.FromHours(1)).TotalSeconds },
            SandboxJson.Default.ShareRequest);
        var answer = await _client.SendJsonAsync(HttpMethod.Post, SandboxClient.SandboxPath(Id, "/shares"), body, SandboxJson.Default.ShareAnswer, cancellationToken)
            .ConfigureAwait(false);
        if (answer.Url is not { Length: > 0 } url)
        {
            throw new SandboxApiException(System.Net.HttpStatusCode.OK, "invalid answer", "the server's share answer has no url", null, null);
        }
        return (new Uri(_client.BaseUrlText + url), answer.ExpiresAt);
    }

    /// <summary>
    /// Saves the sandbox's state now (memory, files, interpreter) as the caller's snapshot <paramref name="name"/>
    /// (<c>POST /v1/sandboxes/{id}/snapshots</c>); it keeps running. New sandboxes start from it with
    /// <see cref="SandboxClient.CreateSandboxFromSnapshotAsync"/>, as often as wanted, until it is deleted.
    /// </summary>
    /// <param name="name">1 to 64 letters, digits, '.', '_' or '-', starting with a letter or digit; unique among the key's snapshots.</param>
    /// <param name="cancellationToken">Abandons the call (the save goes on on the server).</param>
    /// <returns>The snapshot, with its size on disk.</returns>
    /// <exception cref="SandboxNotFoundException">The sandbox has ended.</exception>
    /// <exception cref="SandboxApiException">
    /// 400 <c>invalid_snapshot_name</c>; 409 <c>snapshot_exists</c>, <c>too_many_snapshots</c>, <c>pause_unsupported</c> (the process runtime);
    /// 503 <c>snapshot_failed</c> (the sandbox keeps running).
    /// </exception>
    /// <exception cref="SandboxConnectionException">The server could not be reached or did not answer in time.</exception>
    public Task<SnapshotInfo> SnapshotAsync(string name, CancellationToken cancellationToken = default)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(name);
        var body = JsonSerializer.SerializeToUtf8Bytes(new SnapshotRequest { Name = name }, SandboxJson.Default.SnapshotRequest);
        return _client.SendJsonAsync(HttpMethod.Post, SandboxClient.SandboxPath(Id, "/snapshots"), body, SandboxJson.Default.SnapshotInfo, cancellationToken);
    }
}
