using System.Text.Json;

namespace SandboxVM.Egress.Search;

/// <summary>SearXNG: <c>GET {base}/search?q=...&amp;format=json</c>, results from <c>results[].title/url/content</c>.</summary>
internal sealed class SearXngSearchProvider(Uri baseUri, SearchOptions options, HttpClient http) : HttpSearchProvider(baseUri, options, http)
{
    public override string Name => SearchProviderFactory.SearXng;

    protected override HttpRequestMessage CreateRequest(string query, int count)
    {
        var request = new HttpRequestMessage(HttpMethod.Get, $"{BaseUrl}/search?q={Q(query)}&format=json");
        request.Headers.Accept.ParseAdd("application/json");
        return request;
    }

    protected override IReadOnlyList<SearchResult> Parse(string body, int count)
    {
        using var doc = JsonDocument.Parse(body);
        var list = new List<SearchResult>();
        if (doc.RootElement.ValueKind != JsonValueKind.Object || !doc.RootElement.TryGetProperty("results", out var results)
            || results.ValueKind != JsonValueKind.Array)
            throw new FormatException("no 'results' array");
        foreach (var r in results.EnumerateArray())
        {
            if (list.Count >= count)
                break;
            if (r.ValueKind == JsonValueKind.Object && MakeResult(Str(r, "title"), Str(r, "url"), Str(r, "content")) is { } result)
                list.Add(result);
        }

        return list;
    }

    internal static string? Str(JsonElement e, string name) =>
        e.TryGetProperty(name, out var v) && v.ValueKind == JsonValueKind.String ? v.GetString() : null;
}
