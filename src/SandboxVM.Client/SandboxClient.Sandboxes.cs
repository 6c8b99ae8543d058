using System.Text.Json;
using SandboxVM.Client.Internal;

namespace SandboxVM.Client;

public sealed partial class SandboxClient
{
    /// <summary>
    /// Creates a sandbox (<c>POST /v1/sandboxes</c>): one VM of <paramref name="template"/> kept for you, whose files
    /// and (python) interpreter state survive from run to run. Disposing the returned <see cref="Sandbox"/> ends it;
    /// this client stays yours to dispose.
    /// </summary>
    /// <param name="template">Template name; default <c>python-data-analysis</c>.</param>
    /// <param name="timeoutS">Lifetime in seconds; null for the server's default.</param>
    /// <param name="idleTimeoutS">Seconds without calls after which the server ends it; null for the server's default.</param>
    /// <param name="metadata">Free-form labels stored with the sandbox.</param>
    /// <param name="cancellationToken">Abandons the call.</param>
    /// <returns>The running sandbox.</returns>
    /// <exception cref="TooManySandboxesException">The server runs as many sandboxes as it allows; see its RetryAfter.</exception>
    /// <exception cref="SandboxNotFoundException">The server has no such template (<c>unknown_template</c>).</exception>
    /// <exception cref="SandboxApiException">The server rejected the request for another reason.</exception>
    /// <exception cref="SandboxConnectionException">The server could not be reached or did not answer in time.</exception>
    public Task<Sandbox> CreateSandboxAsync(
        string template = Sandbox.DefaultTemplate,
        double? timeoutS = null,
        double? idleTimeoutS = null,
        IReadOnlyDictionary<string, string>? metadata = null,
        CancellationToken cancellationToken = default) =>
        CreateSandboxAsync(template, new SandboxCreateOptions { TimeoutS = timeoutS, IdleTimeoutS = idleTimeoutS, Metadata = metadata }, cancellationToken);

    /// <summary>
    /// Creates a sandbox (<c>POST /v1/sandboxes</c>) with the lifetime, idle behaviour (<see cref="SandboxCreateOptions.OnIdle"/>,
    /// <see cref="SandboxCreateOptions.AutoResume"/>) and metadata of <paramref name="options"/>; its connection members are ignored.
    /// </summary>
    /// <param name="template">Template name.</param>
    /// <param name="options">Lifetime, idle timeout, on_idle, auto_resume, keep_running and metadata.</param>
    /// <param name="cancellationToken">Abandons the call.</param>
    /// <returns>The running sandbox.</returns>
    /// <exception cref="TooManySandboxesException">The server runs as many sandboxes as it allows; see its RetryAfter.</exception>
    /// <exception cref="SandboxApiException">The server rejected the request (e.g. <c>pause_unsupported</c> for on_idle pause on the process runtime).</exception>
    /// <exception cref="SandboxConnectionException">The server could not be reached or did not answer in time.</exception>
    public async Task<Sandbox> CreateSandboxAsync(string template, SandboxCreateOptions options, CancellationToken cancellationToken = default)
    {
        if (options?.FromSnapshot is null)
        {
            ArgumentException.ThrowIfNullOrEmpty(template);
        }
        ArgumentNullException.ThrowIfNull(options);
        var body = JsonSerializer.SerializeToUtf8Bytes(
            new CreateSandboxRequest
            {
                Template = string.IsNullOrEmpty(template) ? null : template, FromSnapshot = options.FromSnapshot, TimeoutS = options.TimeoutS, IdleTimeoutS = options.IdleTimeoutS, Metadata = options.Metadata,
                OnIdle = options.OnIdle switch { null => null, SandboxIdleAction.Pause => "pause", _ => "kill" },
                AutoResume = options.AutoResume,
                KeepRunning = options.KeepRunning,
            },
            SandboxJson.Default.CreateSandboxRequest);
        var info = await SendAsync(HttpMethod.Post, "v1/sandboxes", body, SandboxJson.Default.SandboxInfo, cancellationToken)
            .ConfigureAwait(false);
        return new Sandbox(this, info, ownsClient: false, killOnDispose: true);
    }

    /// <summary>
    /// Attaches to an existing sandbox by id (it is looked up with <c>GET /v1/sandboxes/{id}</c>). Disposing the
    /// returned <see cref="Sandbox"/> does not end it unless <see cref="Sandbox.KillOnDispose"/> is set.
    /// </summary>
    /// <param name="id">The sandbox's id.</param>
    /// <param name="cancellationToken">Abandons the call.</param>
    /// <returns>The sandbox, with <see cref="Sandbox.Info"/> as the server sees it now.</returns>
    /// <exception cref="SandboxNotFoundException">No such sandbox, or it has ended.</exception>
    /// <exception cref="SandboxApiException">The server answered with another error.</exception>
    /// <exception cref="SandboxConnectionException">The server could not be reached or did not answer in time.</exception>
    public async Task<Sandbox> ConnectSandboxAsync(string id, CancellationToken cancellationToken = default)
    {
        var info = await GetSandboxAsync(id, cancellationToken).ConfigureAwait(false);
        return new Sandbox(this, info, ownsClient: false, killOnDispose: false);
    }

    /// <summary>Lists the sandboxes on the server (<c>GET /v1/sandboxes</c>).</summary>
    /// <param name="cancellationToken">Abandons the call.</param>
    /// <returns>Every sandbox the server reports.</returns>
    /// <exception cref="SandboxApiException">The server answered with an error.</exception>
    /// <exception cref="SandboxConnectionException">The server could not be reached or did not answer in time.</exception>
    public async Task<IReadOnlyList<SandboxInfo>> ListSandboxesAsync(CancellationToken cancellationToken = default)
    {
        var list = await SendAsync(HttpMethod.Get, "v1/sandboxes", null, SandboxJson.Default.SandboxList, cancellationToken)
            .ConfigureAwait(false);
        return list.Sandboxes ?? [];
    }

    /// <summary>Describes one sandbox (<c>GET /v1/sandboxes/{id}</c>).</summary>
    /// <param name="id">The sandbox's id.</param>
    /// <param name="cancellationToken">Abandons the call.</param>
    /// <returns>The sandbox's state, lifetime and VM.</returns>
    /// <exception cref="SandboxNotFoundException">No such sandbox, or it has ended.</exception>
    /// <exception cref="SandboxApiException">The server answered with another error.</exception>
    /// <exception cref="SandboxConnectionException">The server could not be reached or did not answer in time.</exception>
    public Task<SandboxInfo> GetSandboxAsync(string id, CancellationToken cancellationToken = default) =>
        SendAsync(HttpMethod.Get, SandboxPath(id), null, SandboxJson.Default.SandboxInfo, cancellationToken);

    /// <summary>Ends a sandbox at once (<c>DELETE /v1/sandboxes/{id}</c>).</summary>
    /// <param name="id">The sandbox's id.</param>
    /// <param name="cancellationToken">Abandons the call.</param>
    /// <returns>True when this call ended it; false when the server did not know it (already ended, or never existed).</returns>
    /// <exception cref="SandboxApiException">The server answered with another error.</exception>
    /// <exception cref="SandboxConnectionException">The server could not be reached or did not answer in time.</exception>
    public async Task<bool> KillSandboxAsync(string id, CancellationToken cancellationToken = default)
    {
        try
        {
            await SendNoContentAsync(HttpMethod.Delete, SandboxPath(id), cancellationToken).ConfigureAwait(false);
            return true;
        }
        catch (SandboxNotFoundException)
        {
            return false;
        }
    }

    /// <summary><c>v1/sandboxes/{id}</c> plus <paramref name="rest"/>, the id escaped.</summary>
    internal static string SandboxPath(string id, string rest = "")
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(id);
        return "v1/sandboxes/" + Uri.EscapeDataString(id) + rest;
    }
}
