using System.Net;
using System.Text.RegularExpressions;

namespace SandboxVM.Egress.Search;

/// <summary>
/// DuckDuckGo's HTML page: <c>GET {base}/html/?q=...</c>. Results are the anchors with class
/// <c>result__a</c> (title, link) followed by an element with class <c>result__snippet</c>; links that go
/// through the redirector (<c>/l/?uddg=ENCODED</c>) are unwrapped; ads (<c>result--ad</c>, <c>y.js</c>) are skipped.
/// </summary>
internal sealed partial class DuckDuckGoSearchProvider(Uri baseUri, SearchOptions options, HttpClient http) : HttpSearchProvider(baseUri, options, http)
{
    public override string Name => SearchProviderFactory.DuckDuckGo;

    protected override HttpRequestMessage CreateRequest(string query, int count)
    {
        var request = new HttpRequestMessage(HttpMethod.Get, $"{BaseUrl}/html/?q={Q(query)}");
        request.Headers.Accept.ParseAdd("text/html");
        return request;
    }

    protected override IReadOnlyList<SearchResult> Parse(string body, int count) => ParseHtml(body, count);

    internal static List<SearchResult> ParseHtml(string html, int count)
    {
        var list = new List<SearchResult>();
        string? title = null, url = null, snippet = null;
        var inAd = false;
        var currentIsAd = false;

        void Flush()
        {
            if (url is not null && !currentIsAd && list.Count < count && MakeResult(title, url, snippet) is { } r)
                list.Add(r);
            title = url = snippet = null;
        }

        foreach (Match tag in OpenTagRegex().Matches(html))
        {
            var classes = Attribute(tag.Groups["attrs"].Value, "class");
            if (classes is null)
                continue;
            var tokens = classes.Split((char[]?)null, StringSplitOptions.RemoveEmptyEntries);
            var name = tag.Groups["name"].Value.ToLowerInvariant();
            if (tokens.Contains("result") || tokens.Contains("results_links") || tokens.Contains("web-result"))
            {
                inAd = tokens.Contains("result--ad");
            }
            else if (tokens.Contains("result__a") && name == "a")
            {
                Flush();
                if (list.Count >= count)
                    break;
                var href = WebUtility.HtmlDecode(Attribute(tag.Groups["attrs"].Value, "href") ?? "");
                currentIsAd = inAd || href.Contains("/y.js", StringComparison.Ordinal) || href.Contains("ad_domain=", StringComparison.Ordinal);
                url = Unwrap(href);
                title = Inner(html, tag.Index + tag.Length, name);
            }
            else if (tokens.Contains("result__snippet") && url is not null && snippet is null)
            {
                snippet = Inner(html, tag.Index + tag.Length, name);
            }
        }

        Flush();
        return list;
    }

    /// <summary>The redirector's target (<c>uddg=</c>), or the link itself when absolute; protocol-relative links get https.</summary>
    internal static string? Unwrap(string href)
    {
        var q = href.IndexOf('?', StringComparison.Ordinal);
        if (q >= 0)
        {
            foreach (var pair in href[(q + 1)..].Split('&'))
            {
                if (pair.StartsWith("uddg=", StringComparison.Ordinal))
                    return Uri.UnescapeDataString(pair[5..]);
            }
        }

        if (href.StartsWith("//", StringComparison.Ordinal))
            return null; // A link to the search service itself, not a result.
        return href.StartsWith("http://", StringComparison.OrdinalIgnoreCase) || href.StartsWith("https://", StringComparison.OrdinalIgnoreCase) ? href : null;
    }

    /// <summary>The HTML between an opening tag's end and the next closing tag of the same name (capped).</summary>
    private static string Inner(string html, int start, string tagName)
    {
        var end = html.IndexOf("</" + tagName, start, StringComparison.OrdinalIgnoreCase);
        if (end < 0)
            end = Math.Min(html.Length, start + 2000);
        return html[start..Math.Min(end, start + 8000)];
    }

    private static string? Attribute(string attrs, string name)
    {
        foreach (Match m in AttributeRegex().Matches(attrs))
        {
            if (string.Equals(m.Groups["n"].Value, name, StringComparison.OrdinalIgnoreCase))
                return m.Groups["dq"].Success ? m.Groups["dq"].Value : m.Groups["sq"].Success ? m.Groups["sq"].Value : m.Groups["bare"].Value;
        }

        return null;
    }

    [GeneratedRegex(@"<(?<name>[a-zA-Z][a-zA-Z0-9]*)\b(?<attrs>[^<>]*)>", RegexOptions.None, matchTimeoutMilliseconds: 2000)]
    private static partial Regex OpenTagRegex();

    [GeneratedRegex("""(?<n>[a-zA-Z_:][-a-zA-Z0-9_:.]*)\s*=\s*(?:"(?<dq>[^"]*)"|'(?<sq>[^']*)'|(?<bare>[^\s"'>]+))""", RegexOptions.None, matchTimeoutMilliseconds: 1000)]
    private static partial Regex AttributeRegex();
}
