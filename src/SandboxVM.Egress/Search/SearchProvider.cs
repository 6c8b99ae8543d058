namespace SandboxVM.Egress.Search;

/// <summary>One web search hit.</summary>
/// <param name="Title">Plain text (tags stripped, entities decoded).</param>
/// <param name="Url">Absolute http(s) URL of the page.</param>
/// <param name="Snippet">Plain text excerpt; may be empty.</param>
public sealed record SearchResult(string Title, string Url, string Snippet);

/// <summary>A web search service queried from the host.</summary>
public interface ISearchProvider
{
    /// <summary><c>searxng</c>, <c>brave</c> or <c>duckduckgo</c>.</summary>
    string Name { get; }

    /// <summary>
    /// Up to <paramref name="maxResults"/> results (clamped to <see cref="SearchOptions.MaxResultsLimit"/>).
    /// Throws <see cref="ArgumentException"/> for an empty or over-long query, <see cref="SearchFailedException"/>
    /// when the service fails, times out, answers too much or unreadably, and
    /// <see cref="OperationCanceledException"/> when <paramref name="cancellationToken"/> is cancelled.
    /// </summary>
    Task<IReadOnlyList<SearchResult>> SearchAsync(string query, int maxResults, CancellationToken cancellationToken);
}

/// <summary>Which search service, where, and the limits on asking it.</summary>
public sealed class SearchOptions
{
    /// <summary>Highest result count a caller can get.</summary>
    public const int MaxResultsLimit = 50;

    /// <summary>Longest accepted query, in characters.</summary>
    public const int MaxQueryLength = 2000;

    /// <summary><c>searxng</c>, <c>brave</c>, <c>duckduckgo</c>; null or empty means web search is not configured.</summary>
    public string? Provider { get; set; }

    /// <summary>
    /// Required absolute http(s) base URL of the service (may include a path prefix). The provider appends
    /// <c>/search</c> (searxng), <c>/res/v1/web/search</c> (brave) or <c>/html/</c> (duckduckgo).
    /// </summary>
    public string? BaseUrl { get; set; }

    /// <summary>API key (brave: required, sent as <c>X-Subscription-Token</c>); unused by the others.</summary>
    public string? ApiKey { get; set; }

    /// <summary>Longest time for one search, from sending the request to the last byte of the answer.</summary>
    public TimeSpan Timeout { get; set; } = TimeSpan.FromSeconds(10);

    /// <summary>Largest answer read (after decompression); larger answers fail.</summary>
    public int MaxResponseBytes { get; set; } = 2 * 1024 * 1024;

    /// <summary>User-Agent header sent to the service.</summary>
    public string UserAgent { get; set; } = "SandboxVM-Search/1.0";
}

/// <summary>Web search is not configured (no provider, unknown provider, or a required setting missing).</summary>
public sealed class SearchNotConfiguredException : InvalidOperationException
{
    public SearchNotConfiguredException()
        : base("web search is not configured")
    {
    }

    public SearchNotConfiguredException(string message)
        : base(message)
    {
    }

    public SearchNotConfiguredException(string message, Exception innerException)
        : base(message, innerException)
    {
    }
}

/// <summary>The search service failed: error status, timeout, answer too large or unreadable.</summary>
public sealed class SearchFailedException : Exception
{
    public SearchFailedException()
    {
    }

    public SearchFailedException(string message)
        : base(message)
    {
    }

    public SearchFailedException(string message, Exception? innerException)
        : base(message, innerException)
    {
    }

    /// <summary>The HTTP status the service answered with, when that was the failure.</summary>
    public int? StatusCode { get; init; }
}
