using System.Text;
using System.Text.Json;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Http.Json;
using Microsoft.AspNetCore.Routing;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.DependencyInjection.Extensions;
using Microsoft.Extensions.Options;
using SandboxVM.Core.Runs;

namespace SandboxVM.Server;

/// <summary>
/// /v1/tools: web search and page fetch, run by the <c>websearch</c> Python module inside the
/// <c>websearch-tools</c> sandbox (one long-lived VM whose only way out is the host's egress policy).
/// See docs/API.md.
/// </summary>
internal static class ToolsEndpoints
{
    public static void AddServices(IServiceCollection services)
    {
        services.TryAddSingleton<IToolRunner, RunServiceToolRunner>();
        services.TryAddSingleton<WebsearchTools>();
    }

    public static void Map(IEndpointRouteBuilder app)
    {
        app.MapPost("/v1/tools/search", SearchAsync).CountsAsRun();
        app.MapPost("/v1/tools/fetch", FetchAsync).CountsAsRun();
        Mcp.ToolDefinitions.Map(app);
    }

    /// <summary>The code a request refused while reading its body was answered with.</summary>
    private static string ReadRefusal(HttpContext context) =>
        context.Response.StatusCode == 415 ? HttpProblemCodes.UnsupportedMediaType : ProblemCodes.MalformedJson;

    private static async Task SearchAsync(HttpContext context, WebsearchTools tools, ServerMetrics metrics, SearchBudgets budgets, IOptions<JsonOptions> json)
    {
        var request = await Endpoints.ReadJsonAsync<SearchToolRequest>(context, json.Value.SerializerOptions, "search request");
        if (request is null)
        {
            metrics.RecordTool(WebsearchTools.Search, ReadRefusal(context));
            return;
        }
        await AnswerAsync(context, WebsearchTools.Search, metrics, json.Value.SerializerOptions, ct =>
        {
            var (query, maxResults) = WebsearchTools.ValidateSearch(request);
            // The caller's search budget; the tools sandbox's own budget applies when the module asks the host.
            if (budgets.TryTake(context.GetCaller()) is { } refused)
            {
                throw new ToolException(429, HttpProblemCodes.RateLimited, null, refused.Why + "; try again later", retryAfter: refused.RetryAfter);
            }
            return tools.SearchAsync(query, maxResults, ct);
        });
    }

    private static async Task FetchAsync(HttpContext context, WebsearchTools tools, ServerMetrics metrics, IOptions<JsonOptions> json)
    {
        var request = await Endpoints.ReadJsonAsync<FetchToolRequest>(context, json.Value.SerializerOptions, "fetch request");
        if (request is null)
        {
            metrics.RecordTool(WebsearchTools.Fetch, ReadRefusal(context));
            return;
        }
        await AnswerAsync(context, WebsearchTools.Fetch, metrics, json.Value.SerializerOptions, ct =>
            tools.FetchAsync(WebsearchTools.ValidateFetch(request), ct));
    }

    private static async Task AnswerAsync<T>(HttpContext context, string tool, ServerMetrics metrics, JsonSerializerOptions json, Func<CancellationToken, Task<T>> call)
    {
        T body;
        try
        {
            body = await call(context.RequestAborted);
        }
        catch (ToolException e)
        {
            metrics.RecordTool(tool, e.Code);
            await Problems.Write(context, e.Status, e.Code, e.Field, e.Message, e.RetryAfter, e.Extra);
            return;
        }
        metrics.RecordTool(tool, "ok");
        await context.Response.WriteAsJsonAsync(body, json, context.RequestAborted);
    }
}

/// <summary>Runs a tool's code; the endpoints' seam to the sandbox, faked in tests.</summary>
internal interface IToolRunner
{
    Task<RunResult> RunAsync(RunRequest request, CancellationToken cancellationToken);
}

/// <summary>Tools run as one-shot runs: in the singleton VM of their template, each in a fresh working directory.</summary>
internal sealed class RunServiceToolRunner(RunService runs) : IToolRunner
{
    public Task<RunResult> RunAsync(RunRequest request, CancellationToken cancellationToken) => runs.RunAsync(request, cancellationToken);
}

/// <summary>Problem codes of /v1/tools besides the shared ones (missing_field, malformed_json, template_unavailable, overloaded).</summary>
internal static class ToolProblemCodes
{
    public const string InvalidUrl = "invalid_url";
    public const string InvalidArgument = "invalid_argument";
    public const string EgressDenied = "egress_denied";
    public const string SearchNotConfigured = "search_not_configured";
    public const string SearchFailed = "search_failed";
    public const string FetchFailed = "fetch_failed";
    public const string FetchTooLarge = "fetch_too_large";
    /// <summary>The remote site or search service did not answer in time (the module's <c>timeout</c>).</summary>
    public const string UpstreamTimeout = "upstream_timeout";
    /// <summary>The tool's run hit its time limit in the sandbox.</summary>
    public const string ToolTimeout = "tool_timeout";
    /// <summary>The module crashed, exited oddly or printed something that is not its JSON.</summary>
    public const string ToolFailed = "tool_failed";
    /// <summary>The sandbox itself failed (could not start, broke during the run).</summary>
    public const string SandboxError = "sandbox_error";
}

/// <summary>A tools call answered with a problem.</summary>
internal sealed class ToolException(int status, string code, string? field, string message, IReadOnlyDictionary<string, object?>? extra = null, TimeSpan? retryAfter = null)
    : Exception(message)
{
    public int Status { get; } = status;
    public string Code { get; } = code;
    public string? Field { get; } = field;
    /// <summary>Members added to the problem, e.g. <c>reason</c> for <c>egress_denied</c>.</summary>
    public IReadOnlyDictionary<string, object?>? Extra { get; } = extra;
    public TimeSpan? RetryAfter { get; } = retryAfter;
}

internal sealed class SearchToolRequest
{
    public string? Query { get; set; }
    public int? MaxResults { get; set; }
}

internal sealed class FetchToolRequest
{
    public string? Url { get; set; }
}

internal sealed class SearchHit
{
    public string Title { get; set; } = "";
    public string Url { get; set; } = "";
    public string Snippet { get; set; } = "";
}

internal sealed class SearchToolResponse
{
    public List<SearchHit> Results { get; set; } = [];
    public RunMetricsBody Metrics { get; set; } = new();
}

internal sealed class PageLink
{
    public string Url { get; set; } = "";
    public string Text { get; set; } = "";
}

internal sealed class FetchToolResponse
{
    /// <summary>The HTTP status of the page's final answer.</summary>
    public int Status { get; set; }
    public string Url { get; set; } = "";
    public string FinalUrl { get; set; } = "";
    public string ContentType { get; set; } = "";
    public string? Title { get; set; }
    public string Text { get; set; } = "";
    public List<PageLink> Links { get; set; } = [];
    public bool Truncated { get; set; }
    public long Bytes { get; set; }
    public RunMetricsBody Metrics { get; set; } = new();
}

/// <summary>
/// Search and fetch through <c>python3 -m websearch</c> in the <c>websearch-tools</c> sandbox. The code
/// run there is fixed; the caller's query or URL travels as JSON on the run's stdin and reaches the
/// module as one argv element, never as source text.
/// </summary>
internal sealed class WebsearchTools(IToolRunner runner, ServerMetrics metrics)
{
    public const string Template = "websearch-tools";
    public const string Search = "search";
    public const string Fetch = "fetch";
    public const int DefaultMaxResults = 5;
    public const int MaxMaxResults = 20;
    public const int MaxQueryChars = 2000;
    public const int MaxUrlBytes = 8 * 1024;
    /// <summary>The run's time limit; the module's own network timeouts are meant to end a call before it.</summary>
    public const double TimeoutS = 60;

    /// <summary>
    /// Reads {"argv": [...]} from stdin and runs the module with exactly those arguments; its stdout,
    /// stderr and exit status are the run's. UTF-8 mode (PYTHONUTF8) keeps non-ASCII arguments intact
    /// whatever the guest's locale.
    /// </summary>
    internal const string Driver = """
        import json, subprocess, sys
        argv = json.loads(sys.stdin.buffer.read())["argv"]
        if not isinstance(argv, list) or not all(isinstance(a, str) for a in argv):
            sys.exit("bad driver input")
        sys.exit(subprocess.run([sys.executable, "-m", "websearch", *argv], stdin=subprocess.DEVNULL).returncode)

        """;

    private const int MaxDetailChars = 600;

    private static readonly JsonSerializerOptions s_stdinJson = new();

    /// <summary>The query and result count of a search request, or a 400 problem.</summary>
    public static (string Query, int MaxResults) ValidateSearch(SearchToolRequest request)
    {
        if (request.Query is null)
        {
            throw new ToolException(400, ProblemCodes.MissingField, "query", "field 'query' is required");
        }
        if (string.IsNullOrWhiteSpace(request.Query))
        {
            throw new ToolException(400, ToolProblemCodes.InvalidArgument, "query", "field 'query' is empty");
        }
        if (request.Query.Length > MaxQueryChars)
        {
            throw new ToolException(400, ToolProblemCodes.InvalidArgument, "query", $"the query is {request.Query.Length} characters; the limit is {MaxQueryChars}");
        }
        if (request.Query.Contains('\0') || HasLoneSurrogate(request.Query))
        {
            throw new ToolException(400, ToolProblemCodes.InvalidArgument, "query", "the query contains a NUL character or invalid UTF-16");
        }
        int max = request.MaxResults ?? DefaultMaxResults;
        if (max is < 1 or > MaxMaxResults)
        {
            throw new ToolException(400, ToolProblemCodes.InvalidArgument, "max_results", $"max_results must be between 1 and {MaxMaxResults} (got {max})");
        }
        return (request.Query, max);
    }

    /// <summary>The URL of a fetch request, as given, or a 400 problem.</summary>
    public static string ValidateFetch(FetchToolRequest request)
    {
        string? url = request.Url;
        if (string.IsNullOrEmpty(url))
        {
            throw new ToolException(400, ProblemCodes.MissingField, "url", "field 'url' is required");
        }
        int bytes = Encoding.UTF8.GetByteCount(url);
        if (bytes > MaxUrlBytes)
        {
            throw new ToolException(400, ToolProblemCodes.InvalidUrl, "url", $"the URL is {bytes} bytes; the limit is {MaxUrlBytes}");
        }
        if (url.Contains('\0') || HasLoneSurrogate(url))
        {
            throw new ToolException(400, ToolProblemCodes.InvalidUrl, "url", "the URL contains a NUL character or invalid UTF-16");
        }
        if (!Uri.TryCreate(url, UriKind.Absolute, out var uri)
            || (uri.Scheme != Uri.UriSchemeHttp && uri.Scheme != Uri.UriSchemeHttps)
            || string.IsNullOrEmpty(uri.Host))
        {
            throw new ToolException(400, ToolProblemCodes.InvalidUrl, "url", "only absolute http:// and https:// URLs can be fetched");
        }
        return url;
    }

    /// <summary>True when <paramref name="s"/> is not valid UTF-16 (it could not become a process argument).</summary>
    private static bool HasLoneSurrogate(string s)
    {
        for (int i = 0; i < s.Length; i++)
        {
            if (char.IsHighSurrogate(s[i]) && i + 1 < s.Length && char.IsLowSurrogate(s[i + 1]))
            {
                i++;
            }
            else if (char.IsSurrogate(s[i]))
            {
                return true;
            }
        }
        return false;
    }

    /// <summary>
    /// The module's arguments for a search. A query that looks like an option goes after <c>--</c>, so it
    /// stays the query.
    /// </summary>
    public static List<string> SearchArgs(string query, int maxResults)
    {
        string max = maxResults.ToString(System.Globalization.CultureInfo.InvariantCulture);
        return query.StartsWith('-')
            ? [Search, "--max-results", max, "--", query]
            : [Search, query, "--max-results", max];
    }

    public static List<string> FetchArgs(string url) => [Fetch, url];

    /// <summary>The one-shot run that executes the module with <paramref name="argv"/>.</summary>
    public static RunRequest BuildRequest(IReadOnlyList<string> argv) => new()
    {
        Template = Template,
        Code = Driver,
        Stdin = JsonSerializer.Serialize(new Dictionary<string, IReadOnlyList<string>> { ["argv"] = argv }, s_stdinJson),
        Env = new() { ["PYTHONUTF8"] = "1" },
        TimeoutS = TimeoutS,
    };

    public async Task<SearchToolResponse> SearchAsync(string query, int maxResults, CancellationToken cancellationToken)
    {
        var (root, runMetrics) = await RunModuleAsync(SearchArgs(query, maxResults), "query", cancellationToken);
        return ParseSearch(root, runMetrics);
    }

    public async Task<FetchToolResponse> FetchAsync(string url, CancellationToken cancellationToken)
    {
        var (root, runMetrics) = await RunModuleAsync(FetchArgs(url), "url", cancellationToken);
        var page = ParseFetch(root, runMetrics);
        if (page.Url.Length == 0)
        {
            page.Url = url;
        }
        if (page.FinalUrl.Length == 0)
        {
            page.FinalUrl = page.Url;
        }
        return page;
    }

    private async Task<(JsonElement Root, RunMetrics Metrics)> RunModuleAsync(List<string> argv, string field, CancellationToken cancellationToken)
    {
        RunResult result;
        try
        {
            result = await runner.RunAsync(BuildRequest(argv), cancellationToken);
        }
        catch (RunRequestException e)
        {
            throw FromRunRequest(e);
        }
        metrics.RecordRun(Template, ServerMetrics.KindTool, result);
        return (Interpret(result, field), result.Metrics);
    }

    /// <summary>A refusal of the tool's run, as the caller of the tool should see it (the run's fields are not theirs).</summary>
    internal static ToolException FromRunRequest(RunRequestException e) => e.Code switch
    {
        ProblemCodes.UnknownTemplate => new ToolException(409, ProblemCodes.TemplateUnavailable, null,
            $"web tools are not available: this server has no template '{Template}'"),
        ProblemCodes.TemplateUnavailable => new ToolException(409, ProblemCodes.TemplateUnavailable, null, "web tools are not available: " + e.Message),
        _ => new ToolException(ProblemStatus.Of(e.Kind), e.Code, null, e.Message, retryAfter: e.RetryAfter),
    };

    /// <summary>
    /// The module's JSON answer from a finished run, or the problem the run amounts to. <paramref name="field"/>
    /// is the request field a refused argument is blamed on.
    /// </summary>
    internal static JsonElement Interpret(RunResult result, string field)
    {
        switch (result.Status)
        {
            case RunStatus.Ok:
                return ParseObject(result.Stdout) is { } answer
                    ? answer
                    : throw new ToolException(502, ToolProblemCodes.ToolFailed, null,
                        "the websearch module's output is not a JSON object: " + Tail(result.Stdout.Length > 0 ? result.Stdout : result.Stderr));
            case RunStatus.Error when result.ExitCode == 2 && ParseObject(result.Stdout) is { } failure
                                      && failure.TryGetProperty("error", out var error) && error.ValueKind == JsonValueKind.Object:
                throw ModuleError(error, field);
            case RunStatus.Timeout:
                throw new ToolException(504, ToolProblemCodes.ToolTimeout, null, result.Error ?? $"the tool did not finish within {TimeoutS} s");
            case RunStatus.SandboxError:
                throw new ToolException(502, ToolProblemCodes.SandboxError, null, result.Error ?? "the sandbox failed");
            case RunStatus.Oom or RunStatus.OutputLimit:
                throw new ToolException(502, ToolProblemCodes.ToolFailed, null, result.Error ?? $"the tool's run ended with {ServerMetrics.StatusName(result.Status)}");
            default:
                string exit = result.ExitCode is int code ? $"exit code {code}" : ServerMetrics.StatusName(result.Status);
                string why = result.Stderr.Trim().Length > 0 ? result.Stderr : result.Stdout;
                throw new ToolException(502, ToolProblemCodes.ToolFailed, null,
                    $"the websearch module failed ({exit})" + (why.Trim().Length > 0 ? ": " + Tail(why) : ""));
        }
    }

    /// <summary>Maps the module's <c>{"error": {"code", "message", "reason"?}}</c> to a problem.</summary>
    internal static ToolException ModuleError(JsonElement error, string field)
    {
        string code = Text(error, "code") ?? "";
        string message = Text(error, "message") ?? "no message";
        string? reason = Text(error, "reason");
        return code switch
        {
            "egress_denied" => new ToolException(403, ToolProblemCodes.EgressDenied, field == "url" ? field : null,
                reason is null ? $"the sandbox may not connect there: {message}" : $"the sandbox may not connect there ({reason}): {message}",
                new Dictionary<string, object?> { ["reason"] = reason }),
            "search_not_configured" => new ToolException(503, ToolProblemCodes.SearchNotConfigured, null, message),
            "search_failed" => new ToolException(502, ToolProblemCodes.SearchFailed, null, message),
            "fetch_failed" => new ToolException(502, ToolProblemCodes.FetchFailed, null, message),
            "too_large" => new ToolException(502, ToolProblemCodes.FetchTooLarge, null, message),
            "timeout" => new ToolException(504, ToolProblemCodes.UpstreamTimeout, null, message),
            "invalid_argument" => new ToolException(400, ToolProblemCodes.InvalidArgument, field, message),
            _ => new ToolException(502, ToolProblemCodes.ToolFailed, null, $"the websearch module failed with '{code}': {message}"),
        };
    }

    internal static SearchToolResponse ParseSearch(JsonElement root, RunMetrics runMetrics)
    {
        if (!root.TryGetProperty("results", out var results) || results.ValueKind != JsonValueKind.Array)
        {
            throw Unexpected("a search answer without a 'results' list");
        }
        var hits = new List<SearchHit>();
        foreach (var r in results.EnumerateArray())
        {
            if (r.ValueKind != JsonValueKind.Object)
            {
                throw Unexpected("a search result that is not an object");
            }
            hits.Add(new SearchHit { Title = Text(r, "title") ?? "", Url = Text(r, "url") ?? "", Snippet = Text(r, "snippet") ?? "" });
        }
        return new SearchToolResponse { Results = hits, Metrics = RunMetricsBody.From(runMetrics) };
    }

    internal static FetchToolResponse ParseFetch(JsonElement root, RunMetrics runMetrics)
    {
        if (!root.TryGetProperty("status", out var status) || status.ValueKind != JsonValueKind.Number || !status.TryGetInt32(out int code))
        {
            throw Unexpected("a fetch answer without an integer 'status'");
        }
        var links = new List<PageLink>();
        if (root.TryGetProperty("links", out var list) && list.ValueKind == JsonValueKind.Array)
        {
            foreach (var l in list.EnumerateArray().Where(l => l.ValueKind == JsonValueKind.Object))
            {
                links.Add(new PageLink { Url = Text(l, "url") ?? "", Text = Text(l, "text") ?? "" });
            }
        }
        return new FetchToolResponse
        {
            Status = code,
            Url = Text(root, "url") ?? "",
            FinalUrl = Text(root, "final_url") ?? "",
            ContentType = Text(root, "content_type") ?? "",
            Title = Text(root, "title"),
            Text = Text(root, "text") ?? "",
            Links = links,
            Truncated = root.TryGetProperty("truncated", out var t) && t.ValueKind == JsonValueKind.True,
            Bytes = root.TryGetProperty("bytes", out var b) && b.ValueKind == JsonValueKind.Number && b.TryGetInt64(out long n) ? n : 0,
            Metrics = RunMetricsBody.From(runMetrics),
        };
    }

    /// <summary>The JSON object the module printed: all of stdout, or else its last non-empty line (stray prints before it).</summary>
    internal static JsonElement? ParseObject(string stdout)
    {
        string text = stdout.Trim();
        if (TryParse(text) is { } whole)
        {
            return whole;
        }
        int lastLine = text.LastIndexOf('\n');
        return lastLine >= 0 ? TryParse(text[(lastLine + 1)..].Trim()) : null;
    }

    private static JsonElement? TryParse(string text)
    {
        if (!text.StartsWith('{'))
        {
            return null;
        }
        try
        {
            using var doc = JsonDocument.Parse(text);
            return doc.RootElement.ValueKind == JsonValueKind.Object ? doc.RootElement.Clone() : null;
        }
        catch (JsonException)
        {
            return null;
        }
    }

    private static string? Text(JsonElement obj, string name) =>
        obj.TryGetProperty(name, out var v) && v.ValueKind == JsonValueKind.String ? v.GetString() : null;

    private static ToolException Unexpected(string what) =>
        new(502, ToolProblemCodes.ToolFailed, null, $"the websearch module gave {what}");

    /// <summary>The end of a long text (a traceback's last lines say most), on at most <see cref="MaxDetailChars"/> characters.</summary>
    private static string Tail(string text)
    {
        text = text.Trim();
        return text.Length <= MaxDetailChars ? text : "…" + text[^MaxDetailChars..];
    }
}
