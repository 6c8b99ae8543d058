using System.Globalization;
using System.Text.Json;

namespace SandboxVM.Egress.Search;

/// <summary>
/// Brave Search API: <c>GET {base}/res/v1/web/search?q=...&amp;count=N</c> with <c>X-Subscription-Token</c>,
/// results from <c>web.results[].title/url/description</c>. The API gives at most 20 per request.
/// </summary>
internal sealed class BraveSearchProvider(Uri baseUri, SearchOptions options, HttpClient http) : HttpSearchProvider(baseUri, options, http)
{
    private const int MaxCount = 20;

    public override string Name => SearchProviderFactory.Brave;

    protected override HttpRequestMessage CreateRequest(string query, int count)
    {
        var n = Math.Min(count, MaxCount).ToString(CultureInfo.InvariantCulture);
        var request = new HttpRequestMessage(HttpMethod.Get, $"{BaseUrl}/res/v1/web/search?q={Q(query)}&count={n}");
        request.Headers.Accept.ParseAdd("application/json");
        request.Headers.TryAddWithoutValidation("X-Subscription-Token", Options.ApiKey);
        return request;
    }

    protected override IReadOnlyList<SearchResult> Parse(string body, int count)
    {
        using var doc = JsonDocument.Parse(body);
        var list = new List<SearchResult>();
        if (doc.RootElement.ValueKind != JsonValueKind.Object)
            throw new FormatException("the answer is not a JSON object");

        // No "web" section means no web results (the API leaves it out then).
        if (!doc.RootElement.TryGetProperty("web", out var web) || web.ValueKind != JsonValueKind.Object
            || !web.TryGetProperty("results", out var results) || results.ValueKind != JsonValueKind.Array)
            return list;
        foreach (var r in results.EnumerateArray())
        {
            if (list.Count >= count)
                break;
            if (r.ValueKind == JsonValueKind.Object
                && MakeResult(SearXngSearchProvider.Str(r, "title"), SearXngSearchProvider.Str(r, "url"), SearXngSearchProvider.Str(r, "description")) is { } result)
                list.Add(result);
        }

        return list;
    }
}
