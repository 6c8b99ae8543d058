using System.Net;
using System.Text;
using System.Text.RegularExpressions;

namespace SandboxVM.Egress.Search;

/// <summary>What the three providers share: one bounded GET (time and size), text clean-up, URL checks.</summary>
internal abstract partial class HttpSearchProvider : ISearchProvider
{
    private const int MaxTitleChars = 300;
    private const int MaxSnippetChars = 1000;

    private readonly HttpClient _http;

    protected HttpSearchProvider(Uri baseUri, SearchOptions options, HttpClient http)
    {
        BaseUrl = baseUri.GetLeftPart(UriPartial.Path).TrimEnd('/');
        Options = options;
        _http = http;
    }

    public abstract string Name { get; }

    /// <summary>The base URL without a trailing slash.</summary>
    protected string BaseUrl { get; }

    protected SearchOptions Options { get; }

    public async Task<IReadOnlyList<SearchResult>> SearchAsync(string query, int maxResults, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(query);
        var q = query.Trim();
        if (q.Length == 0)
            throw new ArgumentException("the search query is empty", nameof(query));
        if (q.Length > SearchOptions.MaxQueryLength)
            throw new ArgumentException($"the search query is longer than {SearchOptions.MaxQueryLength} characters", nameof(query));
        ArgumentOutOfRangeException.ThrowIfLessThan(maxResults, 1);
        var count = Math.Min(maxResults, SearchOptions.MaxResultsLimit);

        using var request = CreateRequest(q, count);
        request.Headers.UserAgent.ParseAdd(Options.UserAgent);
        var body = await GetBoundedAsync(request, cancellationToken);
        try
        {
            var results = Parse(body, count);
            return results.Count > count ? results.Take(count).ToArray() : results;
        }
        catch (Exception e) when (e is System.Text.Json.JsonException or InvalidOperationException or RegexMatchTimeoutException or FormatException)
        {
            throw new SearchFailedException($"{Name}: the answer could not be read: {e.Message}", e);
        }
    }

    /// <summary>The GET for <paramref name="query"/> (already trimmed and checked).</summary>
    protected abstract HttpRequestMessage CreateRequest(string query, int count);

    /// <summary>Results from the body; more than <paramref name="count"/> is fine (cut afterwards).</summary>
    protected abstract IReadOnlyList<SearchResult> Parse(string body, int count);

    private async Task<string> GetBoundedAsync(HttpRequestMessage request, CancellationToken cancellationToken)
    {
        using var timeout = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
        timeout.CancelAfter(Options.Timeout);
        try
        {
            using var response = await _http.SendAsync(request, HttpCompletionOption.ResponseHeadersRead, timeout.Token);
            if (!response.IsSuccessStatusCode)
                throw new SearchFailedException($"{Name}: the service answered HTTP {(int)response.StatusCode} {response.ReasonPhrase}")
                {
                    StatusCode = (int)response.StatusCode,
                };
            var max = Options.MaxResponseBytes;
            if (response.Content.Headers.ContentLength is { } length && length > max)
                throw new SearchFailedException($"{Name}: the answer ({length} bytes) is larger than the limit of {max} bytes");

            await using var stream = await response.Content.ReadAsStreamAsync(timeout.Token);
            var buffer = new MemoryStream();
            var chunk = new byte[16 * 1024];
            while (true)
            {
                var n = await stream.ReadAsync(chunk, timeout.Token);
                if (n == 0)
                    break;
                if (buffer.Length + n > max)
                    throw new SearchFailedException($"{Name}: the answer is larger than the limit of {max} bytes");
                buffer.Write(chunk, 0, n);
            }

            return Encoding.UTF8.GetString(buffer.GetBuffer(), 0, (int)buffer.Length);
        }
        catch (OperationCanceledException) when (cancellationToken.IsCancellationRequested)
        {
            throw;
        }
        catch (OperationCanceledException e)
        {
            throw new SearchFailedException($"{Name}: no complete answer within {Options.Timeout.TotalSeconds:0.###} s", new TimeoutException(e.Message, e));
        }
        catch (HttpRequestException e)
        {
            throw new SearchFailedException($"{Name}: the request failed: {e.Message}", e)
            {
                StatusCode = e.StatusCode is { } s ? (int)s : null,
            };
        }
        catch (IOException e)
        {
            throw new SearchFailedException($"{Name}: reading the answer failed: {e.Message}", e);
        }
    }

    /// <summary>Query string value, percent-encoded.</summary>
    protected static string Q(string value) => Uri.EscapeDataString(value);

    /// <summary>A result when the URL is absolute http(s) and the title is not empty after clean-up; null otherwise.</summary>
    protected static SearchResult? MakeResult(string? title, string? url, string? snippet)
    {
        if (string.IsNullOrWhiteSpace(url) || !Uri.TryCreate(url.Trim(), UriKind.Absolute, out var uri) || uri.Scheme is not ("http" or "https"))
            return null;
        var t = CleanText(title, MaxTitleChars);
        if (t.Length == 0)
            t = uri.Host;
        return new SearchResult(t, uri.AbsoluteUri, CleanText(snippet, MaxSnippetChars));
    }

    /// <summary>HTML fragment to plain text: tags removed, entities decoded, whitespace collapsed, length capped.</summary>
    internal static string CleanText(string? html, int maxChars)
    {
        if (string.IsNullOrEmpty(html))
            return "";
        var noTags = TagRegex().Replace(html, "");
        var text = WhitespaceRegex().Replace(WebUtility.HtmlDecode(noTags), " ").Trim();
        return text.Length <= maxChars ? text : text[..(maxChars - 1)].TrimEnd() + "…";
    }

    [GeneratedRegex("<[^>]*>", RegexOptions.None, matchTimeoutMilliseconds: 1000)]
    private static partial Regex TagRegex();

    [GeneratedRegex(@"\s+", RegexOptions.None, matchTimeoutMilliseconds: 1000)]
    private static partial Regex WhitespaceRegex();
}
