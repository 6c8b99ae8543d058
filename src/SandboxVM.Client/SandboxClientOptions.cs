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

    /// <summary>
    /// Options from the environment: <see cref="BaseUrl"/> from <c>SANDBOXVM_BASE_URL</c> (or <c>SANDBOXVM_URL</c>,
    /// the CLI's older name), else <see cref="DefaultBaseUrl"/>; <see cref="ApiKey"/> from <c>SANDBOXVM_API_KEY</c>.
    /// Empty variables count as unset.
    /// </summary>
    /// <returns>New options; change them as needed.</returns>
    public static SandboxClientOptions FromEnvironment() => FromEnvironment(Environment.GetEnvironmentVariable);

    internal static SandboxClientOptions FromEnvironment(Func<string, string?> getEnvironment)
    {
        static string? NonEmpty(string? value) => string.IsNullOrWhiteSpace(value) ? null : value.Trim();
        return new SandboxClientOptions
        {
            BaseUrl = NonEmpty(getEnvironment("SANDBOXVM_BASE_URL")) ?? NonEmpty(getEnvironment("SANDBOXVM_URL")) ?? DefaultBaseUrl,
            ApiKey = NonEmpty(getEnvironment("SANDBOXVM_API_KEY")),
        };
    }
}
