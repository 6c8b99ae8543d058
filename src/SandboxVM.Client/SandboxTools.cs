using System.Text.Json;
using SandboxVM.Client.Internal;

namespace SandboxVM.Client;

/// <summary>
/// Web search and page fetch (<c>/v1/tools</c>, <see cref="SandboxClient.Tools"/>), run by the server inside its
/// <c>websearch-tools</c> sandbox: the page is fetched from there, through the server's egress policy (no private,
/// loopback or cloud metadata addresses), never from your machine.
/// </summary>
/// <example>
/// <code>
/// using var client = new SandboxClient("http://127.0.0.1:8000");
/// var found = await client.Tools.SearchAsync("firecracker microvm", maxResults: 3);
/// foreach (var hit in found.Results)
///     Console.WriteLine($"{hit.Title} {hit.Url}");
/// var page = await client.Tools.FetchAsync(found.Results[0].Url);
/// Console.WriteLine(page.Text);
/// </code>
/// </example>
public sealed class SandboxTools
{
    /// <summary>Results a search returns unless told otherwise.</summary>
    public const int DefaultMaxResults = 5;

    private readonly SandboxClient _client;

    internal SandboxTools(SandboxClient client) => _client = client;

    /// <summary>Searches the web (<c>POST /v1/tools/search</c>).</summary>
    /// <param name="query">What to search for; at most 2000 characters.</param>
    /// <param name="maxResults">How many results at most, 1 to 20.</param>
    /// <param name="cancellationToken">Abandons the call.</param>
    /// <returns>The results, best first, and the run's timings.</returns>
    /// <exception cref="ArgumentException"><paramref name="query"/> is null or empty.</exception>
    /// <exception cref="SandboxBadRequestException">The server refused the query or <paramref name="maxResults"/> (<c>invalid_argument</c>).</exception>
    /// <exception cref="SearchNotConfiguredException">The server has no search provider configured.</exception>
    /// <exception cref="ToolFailedException">The search service failed or timed out, or the tool itself failed.</exception>
    /// <exception cref="SandboxUnavailableException">The tools are not available on this server (<c>template_unavailable</c>), or too busy (<c>overloaded</c>).</exception>
    /// <exception cref="SandboxApiException">The server answered with another error.</exception>
    /// <exception cref="SandboxConnectionException">The server could not be reached or did not answer in time.</exception>
    public Task<SearchResults> SearchAsync(string query, int maxResults = DefaultMaxResults, CancellationToken cancellationToken = default)
    {
        ArgumentException.ThrowIfNullOrEmpty(query);
        var body = JsonSerializer.SerializeToUtf8Bytes(new SearchToolRequest { Query = query, MaxResults = maxResults }, SandboxJson.Default.SearchToolRequest);
        return _client.SendJsonAsync(HttpMethod.Post, "v1/tools/search", body, SandboxJson.Default.SearchResults, cancellationToken);
    }

    /// <summary>Fetches a web page and extracts its text and links (<c>POST /v1/tools/fetch</c>).</summary>
    /// <param name="url">An absolute <c>http://</c> or <c>https://</c> URL, at most 8 KiB.</param>
    /// <param name="cancellationToken">Abandons the call.</param>
    /// <returns>
    /// The page. An HTTP error of the site (404, 500) is still a result: check <see cref="FetchResult.Status"/>.
    /// </returns>
    /// <exception cref="ArgumentException"><paramref name="url"/> is null or empty.</exception>
    /// <exception cref="SandboxBadRequestException">The server refused the URL (<c>invalid_url</c>).</exception>
    /// <exception cref="EgressDeniedException">The sandbox may not connect to that host; <see cref="EgressDeniedException.Reason"/> says why.</exception>
    /// <exception cref="ToolFailedException">The site could not be fetched, answered too much or too late, or the tool itself failed.</exception>
    /// <exception cref="SandboxUnavailableException">The tools are not available on this server (<c>template_unavailable</c>), or too busy (<c>overloaded</c>).</exception>
    /// <exception cref="SandboxApiException">The server answered with another error.</exception>
    /// <exception cref="SandboxConnectionException">The server could not be reached or did not answer in time.</exception>
    public Task<FetchResult> FetchAsync(string url, CancellationToken cancellationToken = default)
    {
        ArgumentException.ThrowIfNullOrEmpty(url);
        var body = JsonSerializer.SerializeToUtf8Bytes(new FetchToolRequest { Url = url }, SandboxJson.Default.FetchToolRequest);
        return _client.SendJsonAsync(HttpMethod.Post, "v1/tools/fetch", body, SandboxJson.Default.FetchResult, cancellationToken);
    }

    /// <summary>Fetches a web page (<c>POST /v1/tools/fetch</c>); see <see cref="FetchAsync(string, CancellationToken)"/>.</summary>
    /// <param name="url">An absolute http or https URL.</param>
    /// <param name="cancellationToken">Abandons the call.</param>
    /// <returns>The page.</returns>
    public Task<FetchResult> FetchAsync(Uri url, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(url);
        return FetchAsync(url.OriginalString, cancellationToken);
    }
}

/// <summary>The answer of a web search.</summary>
public sealed class SearchResults
{
    /// <summary>The results, best first; empty when nothing was found.</summary>
    public IReadOnlyList<SearchHit> Results { get; init => field = value ?? []; } = [];

    /// <summary>Timings of the tool's run on the server.</summary>
    public RunMetrics Metrics { get; init => field = value ?? new RunMetrics(); } = new();
}

/// <summary>One search result.</summary>
public sealed class SearchHit
{
    /// <summary>The page's title.</summary>
    public string Title { get; init => field = value ?? ""; } = "";

    /// <summary>The page's address.</summary>
    public string Url { get; init => field = value ?? ""; } = "";

    /// <summary>A short extract, plain text; may be empty.</summary>
    public string Snippet { get; init => field = value ?? ""; } = "";

    /// <inheritdoc/>
    public override string ToString() => $"{Title} <{Url}>";
}

/// <summary>A fetched page: its text and links as the tool extracted them.</summary>
public sealed class FetchResult
{
    /// <summary>HTTP status of the site's final answer (after redirects), e.g. 200 or 404.</summary>
    public int Status { get; init; }

    /// <summary>The URL asked for.</summary>
    public string Url { get; init => field = value ?? ""; } = "";

    /// <summary>The URL the page came from after redirects.</summary>
    public string FinalUrl { get; init => field = value ?? ""; } = "";

    /// <summary>The page's Content-Type, e.g. <c>text/html; charset=utf-8</c>.</summary>
    public string ContentType { get; init => field = value ?? ""; } = "";

    /// <summary>The page's title; null when it has none.</summary>
    public string? Title { get; init; }

    /// <summary>The page's readable text.</summary>
    public string Text { get; init => field = value ?? ""; } = "";

    /// <summary>The page's links, absolute, in page order.</summary>
    public IReadOnlyList<PageLink> Links { get; init => field = value ?? []; } = [];

    /// <summary>True when the page was longer than the tool keeps and <see cref="Text"/> is its beginning.</summary>
    public bool Truncated { get; init; }

    /// <summary>Bytes of the page the tool read.</summary>
    public long Bytes { get; init; }

    /// <summary>Timings of the tool's run on the server.</summary>
    public RunMetrics Metrics { get; init => field = value ?? new RunMetrics(); } = new();

    /// <summary>True for a 2xx status.</summary>
    public bool IsSuccess => Status is >= 200 and < 300;
}

/// <summary>A link on a fetched page.</summary>
public sealed class PageLink
{
    /// <summary>Where it points, absolute.</summary>
    public string Url { get; init => field = value ?? ""; } = "";

    /// <summary>Its text; may be empty.</summary>
    public string Text { get; init => field = value ?? ""; } = "";

    /// <inheritdoc/>
    public override string ToString() => $"{Text} <{Url}>";
}
