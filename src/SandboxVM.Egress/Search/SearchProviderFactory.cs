using System.Net;

namespace SandboxVM.Egress.Search;

/// <summary>Makes the configured <see cref="ISearchProvider"/>.</summary>
public static class SearchProviderFactory
{
    public const string SearXng = "searxng";
    public const string Brave = "brave";
    public const string DuckDuckGo = "duckduckgo";

    /// <summary>
    /// The provider <paramref name="options"/> name. Throws <see cref="SearchNotConfiguredException"/> when no
    /// provider is set, it is unknown, <see cref="SearchOptions.BaseUrl"/> is missing or not an http(s) URL, or
    /// brave has no API key. <paramref name="httpClient"/> defaults to <see cref="CreateHttpClient"/> with the
    /// environment's proxy settings.
    /// </summary>
    public static ISearchProvider Create(SearchOptions options, HttpClient? httpClient = null)
    {
        ArgumentNullException.ThrowIfNull(options);
        var provider = options.Provider?.Trim().ToLowerInvariant();
        if (string.IsNullOrEmpty(provider))
            throw new SearchNotConfiguredException($"web search is not configured: no search provider is set (one of {SearXng}, {Brave}, {DuckDuckGo}, with a base URL)");
        if (provider is not (SearXng or Brave or DuckDuckGo))
            throw new SearchNotConfiguredException($"web search is not configured: unknown search provider '{options.Provider}' (one of {SearXng}, {Brave}, {DuckDuckGo})");
        if (string.IsNullOrWhiteSpace(options.BaseUrl))
            throw new SearchNotConfiguredException($"web search is not configured: search provider {provider} needs a base URL");
        if (!Uri.TryCreate(options.BaseUrl.Trim(), UriKind.Absolute, out var baseUri) || baseUri.Scheme is not ("http" or "https")
            || !string.IsNullOrEmpty(baseUri.Query) || !string.IsNullOrEmpty(baseUri.Fragment))
            throw new SearchNotConfiguredException($"web search is not configured: base URL '{options.BaseUrl}' of {provider} is not an http(s) URL without query");
        if (provider == Brave && string.IsNullOrWhiteSpace(options.ApiKey))
            throw new SearchNotConfiguredException("web search is not configured: search provider brave needs an API key");
        if (options.Timeout <= TimeSpan.Zero || options.MaxResponseBytes < 1024)
            throw new SearchNotConfiguredException("web search is not configured: the timeout must be positive and the response limit at least 1024 bytes");

        var http = httpClient ?? CreateHttpClient();
        return provider switch
        {
            SearXng => new SearXngSearchProvider(baseUri, options, http),
            Brave => new BraveSearchProvider(baseUri, options, http),
            _ => new DuckDuckGoSearchProvider(baseUri, options, http),
        };
    }

    /// <summary>
    /// An <see cref="HttpClient"/> for search services: through <paramref name="upstreamProxy"/> when given,
    /// otherwise through the environment's proxy (<c>HTTPS_PROXY</c>, <c>HTTP_PROXY</c>, <c>NO_PROXY</c>, as
    /// <see cref="HttpClient.DefaultProxy"/> reads them); decompression on; the providers apply their own timeout.
    /// </summary>
    public static HttpClient CreateHttpClient(UpstreamProxy? upstreamProxy = null)
    {
        var handler = new SocketsHttpHandler
        {
            UseProxy = true,
            AutomaticDecompression = DecompressionMethods.All,
            ConnectTimeout = TimeSpan.FromSeconds(10),
            PooledConnectionLifetime = TimeSpan.FromMinutes(5),
            AllowAutoRedirect = true,
            MaxAutomaticRedirections = 3,
            MaxResponseHeadersLength = 64,
        };
        if (upstreamProxy is not null)
            handler.Proxy = upstreamProxy.AsWebProxy();
        return new HttpClient(handler) { Timeout = System.Threading.Timeout.InfiniteTimeSpan };
    }
}
