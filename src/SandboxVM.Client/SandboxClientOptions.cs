namespace SandboxVM.Client;

/// <summary>Where the SandboxVM server is and how to talk to it.</summary>
public sealed class SandboxClientOptions
{
    /// <summary>The default <see cref="BaseUrl"/>: a server on this machine.</summary>
    public const string DefaultBaseUrl = "http://127.0.0.1:8000";

    /// <summary>Base URL of the server (a path prefix is kept); default <c>http://127.0.0.1:8000</c>.</summary>
    public string BaseUrl { get; set; } = DefaultBaseUrl;

    /// <summary>API key sent as <c>Authorization: Bearer &lt;key&gt;</c>; null or empty sends none.</summary>
    public string? ApiKey { get; set; }

    /// <summary>
    /// Longest wait for one HTTP call, including the run itself; default 5 minutes.
    /// <see cref="System.Threading.Timeout.InfiniteTimeSpan"/> waits forever.
    /// </summary>
    public TimeSpan Timeout { get; set; } = TimeSpan.FromMinutes(5);

    /// <summary>
    /// An HttpClient to send requests with; the client does not dispose it. Its BaseAddress is ignored
    /// (<see cref="BaseUrl"/> is used) and its own Timeout applies on top of <see cref="Timeout"/>.
    /// Takes precedence over <see cref="HttpMessageHandler"/>.
    /// </summary>
    public HttpClient? HttpClient { get; set; }

    /// <summary>A handler to send requests through, e.g. a fake in tests. The client does not dispose it.</summary>
    public HttpMessageHandler? HttpMessageHandler { get; set; }
}
