using System.Net;
using System.Text.Json;
using SandboxVM.Core.Runs;

namespace SandboxVM.Server.Tests;

/// <summary>/v1/tools over HTTP with a fake runner: validation, what reaches the sandbox, what comes back.</summary>
[Trait("tier", "unit")]
public class ToolsEndpointTests
{
    private static async Task<JsonElement> JsonOf(HttpResponseMessage response)
    {
        string text = await response.Content.ReadAsStringAsync(TestContext.Current.CancellationToken);
        using var doc = JsonDocument.Parse(text);
        return doc.RootElement.Clone();
    }

    private static async Task AssertProblem(HttpResponseMessage response, HttpStatusCode status, string code, string? field = null)
    {
        var body = await JsonOf(response);
        Assert.True(status == response.StatusCode, $"expected {status}, got {response.StatusCode}: {body}");
        Assert.Equal("application/problem+json", response.Content.Headers.ContentType?.MediaType);
        Assert.Equal(code, body.GetProperty("code").GetString());
        Assert.Equal((int)status, body.GetProperty("status").GetInt32());
        if (field is not null)
        {
            Assert.Equal(field, body.GetProperty("field").GetString());
        }
    }

    [Fact]
    public async Task Search_RunsTheModuleInTheToolsTemplate_AndAnswersItsResultsWithTheRunsMetrics()
    {
        await using var server = await TestServer.StartAsync();
        server.Runner.Respond = _ => FakeToolRunner.Ok("""
            {"results": [{"title": "Example", "url": "https://example.com/", "snippet": "An example"},
                         {"title": "Other", "url": "https://other.example/", "snippet": ""}]}
            """);

        var response = await server.PostJsonAsync("/v1/tools/search", """{"query": "example domain", "max_results": 7}""");

        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        var body = await JsonOf(response);
        var results = body.GetProperty("results");
        Assert.Equal(2, results.GetArrayLength());
        Assert.Equal("Example", results[0].GetProperty("title").GetString());
        Assert.Equal("https://example.com/", results[0].GetProperty("url").GetString());
        Assert.Equal("An example", results[0].GetProperty("snippet").GetString());
        Assert.Equal(150, body.GetProperty("metrics").GetProperty("total_ms").GetDouble());
        Assert.Equal("singleton", body.GetProperty("metrics").GetProperty("vm_source").GetString());

        var request = server.Runner.LastRequest;
        Assert.Equal("websearch-tools", request.Template);
        Assert.Equal(WebsearchTools.Driver, request.Code);
        Assert.Equal(["search", "example domain", "--max-results", "7"], FakeToolRunner.ArgvOf(request));
        Assert.Equal("1", request.Env!["PYTHONUTF8"]);
    }

    [Fact]
    public async Task Search_DefaultsToFiveResults()
    {
        await using var server = await TestServer.StartAsync();

        var response = await server.PostJsonAsync("/v1/tools/search", """{"query": "q"}""");

        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        Assert.Equal(["search", "q", "--max-results", "5"], FakeToolRunner.ArgvOf(server.Runner.LastRequest));
        Assert.Equal(0, (await JsonOf(response)).GetProperty("results").GetArrayLength());
    }

    [Fact]
    public async Task Search_AQueryThatLooksLikeAnOption_GoesAfterDoubleDash()
    {
        await using var server = await TestServer.StartAsync();

        await server.PostJsonAsync("/v1/tools/search", """{"query": "--max-results 99", "max_results": 3}""");

        Assert.Equal(["search", "--max-results", "3", "--", "--max-results 99"], FakeToolRunner.ArgvOf(server.Runner.LastRequest));
    }

    [Fact]
    public async Task Fetch_AUrlWithQuotesNewlinesAndCode_ArrivesAsOneArgument_AndNeverInTheCode()
    {
        await using var server = await TestServer.StartAsync();
        server.Runner.Respond = _ => FakeToolRunner.Ok("""{"status": 200, "url": "u", "final_url": "u", "content_type": "text/html", "title": null, "text": "", "links": [], "truncated": false, "bytes": 0}""");
        string url = "https://example.com/a?q=\"x\"'y'&z=`id`$(id)\n\"\"\"); import os; os.system('id') #\r\n\\\u00e9\u4e2d\U0001F600";

        var response = await server.PostJsonAsync("/v1/tools/fetch", JsonSerializer.Serialize(new { url }));

        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        var request = server.Runner.LastRequest;
        Assert.Equal(["fetch", url], FakeToolRunner.ArgvOf(request));
        Assert.Equal(WebsearchTools.Driver, request.Code);
        Assert.DoesNotContain("example.com", request.Code);
    }

    [Fact]
    public async Task Fetch_AnswersThePageAsTheModuleReportedIt()
    {
        await using var server = await TestServer.StartAsync();
        server.Runner.Respond = _ => FakeToolRunner.Ok("""
            {"status": 404, "url": "http://example.com/x", "final_url": "https://example.com/x/", "content_type": "text/html; charset=utf-8",
             "title": "Not found", "text": "Nothing here\nat all", "links": [{"url": "https://example.com/", "text": "Home"}],
             "truncated": true, "bytes": 123456, "extra_field_from_a_newer_module": 1}
            """);

        var response = await server.PostJsonAsync("/v1/tools/fetch", """{"url": "http://example.com/x"}""");

        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        var page = await JsonOf(response);
        Assert.Equal(404, page.GetProperty("status").GetInt32());
        Assert.Equal("http://example.com/x", page.GetProperty("url").GetString());
        Assert.Equal("https://example.com/x/", page.GetProperty("final_url").GetString());
        Assert.Equal("text/html; charset=utf-8", page.GetProperty("content_type").GetString());
        Assert.Equal("Not found", page.GetProperty("title").GetString());
        Assert.Equal("Nothing here\nat all", page.GetProperty("text").GetString());
        Assert.Equal("https://example.com/", page.GetProperty("links")[0].GetProperty("url").GetString());
        Assert.Equal("Home", page.GetProperty("links")[0].GetProperty("text").GetString());
        Assert.True(page.GetProperty("truncated").GetBoolean());
        Assert.Equal(123456, page.GetProperty("bytes").GetInt64());
        Assert.Equal(120, page.GetProperty("metrics").GetProperty("run_ms").GetDouble());
        Assert.False(page.TryGetProperty("extra_field_from_a_newer_module", out _));
    }

    [Fact]
    public async Task Fetch_ANullTitleStaysNull()
    {
        await using var server = await TestServer.StartAsync();
        server.Runner.Respond = _ => FakeToolRunner.Ok("""{"status": 200, "url": "https://e.example/", "final_url": "https://e.example/", "content_type": "text/plain", "title": null, "text": "hi", "links": [], "truncated": false, "bytes": 2}""");

        var page = await JsonOf(await server.PostJsonAsync("/v1/tools/fetch", """{"url": "https://e.example/"}"""));

        Assert.Equal(JsonValueKind.Null, page.GetProperty("title").ValueKind);
        Assert.Equal("hi", page.GetProperty("text").GetString());
    }

    [Theory]
    [InlineData("""{}""", "missing_field", "query")]
    [InlineData("""{"query": null}""", "missing_field", "query")]
    [InlineData("""{"query": "   "}""", "invalid_argument", "query")]
    [InlineData("""{"query": "x", "max_results": 0}""", "invalid_argument", "max_results")]
    [InlineData("""{"query": "x", "max_results": 21}""", "invalid_argument", "max_results")]
    [InlineData("""{"query": "x", "max_results": -1}""", "invalid_argument", "max_results")]
    [InlineData("""{"query": "a\u0000b"}""", "invalid_argument", "query")]
    [InlineData("""{"query": "x", "max_results": "5"}""", "malformed_json", "max_results")]
    [InlineData("""{"query": "x", "unknown": 1}""", "malformed_json", null)]
    [InlineData("""not json""", "malformed_json", null)]
    public async Task Search_RefusesBadRequests_WithoutRunningAnything(string json, string code, string? field)
    {
        await using var server = await TestServer.StartAsync();

        var response = await server.PostJsonAsync("/v1/tools/search", json);

        await AssertProblem(response, HttpStatusCode.BadRequest, code, field);
        Assert.Empty(server.Runner.Requests);
    }

    [Fact]
    public async Task Search_RefusesAQueryOverTheLimit()
    {
        await using var server = await TestServer.StartAsync();

        var response = await server.PostJsonAsync("/v1/tools/search", JsonSerializer.Serialize(new { query = new string('q', WebsearchTools.MaxQueryChars + 1) }));

        await AssertProblem(response, HttpStatusCode.BadRequest, "invalid_argument", "query");
        Assert.Empty(server.Runner.Requests);
    }

    [Theory]
    [InlineData("""{}""", "missing_field")]
    [InlineData("""{"url": ""}""", "missing_field")]
    [InlineData("""{"url": "example.com/page"}""", "invalid_url")]
    [InlineData("""{"url": "/etc/passwd"}""", "invalid_url")]
    [InlineData("""{"url": "file:///etc/passwd"}""", "invalid_url")]
    [InlineData("""{"url": "ftp://example.com/x"}""", "invalid_url")]
    [InlineData("""{"url": "javascript:alert(1)"}""", "invalid_url")]
    [InlineData("""{"url": "http://"}""", "invalid_url")]
    [InlineData("""{"url": "http://exa mple.com\u0000/"}""", "invalid_url")]
    public async Task Fetch_RefusesBadUrls_WithoutRunningAnything(string json, string code)
    {
        await using var server = await TestServer.StartAsync();

        var response = await server.PostJsonAsync("/v1/tools/fetch", json);

        await AssertProblem(response, HttpStatusCode.BadRequest, code, "url");
        Assert.Empty(server.Runner.Requests);
    }

    [Fact]
    public async Task Fetch_AcceptsAUrlOfExactlyTheLimit_AndRefusesOneByteMore()
    {
        await using var server = await TestServer.StartAsync();
        server.Runner.Respond = _ => FakeToolRunner.Ok("""{"status": 200}""");
        string prefix = "https://example.com/";
        string atLimit = prefix + new string('a', WebsearchTools.MaxUrlBytes - prefix.Length);

        var ok = await server.PostJsonAsync("/v1/tools/fetch", JsonSerializer.Serialize(new { url = atLimit }));
        var over = await server.PostJsonAsync("/v1/tools/fetch", JsonSerializer.Serialize(new { url = atLimit + "a" }));

        Assert.Equal(HttpStatusCode.OK, ok.StatusCode);
        await AssertProblem(over, HttpStatusCode.BadRequest, "invalid_url", "url");
        Assert.Single(server.Runner.Requests);
    }

    [Fact]
    public async Task Fetch_EgressDenied_Is403WithTheReason()
    {
        await using var server = await TestServer.StartAsync();
        server.Runner.Respond = _ => FakeToolRunner.Exited(2,
            """{"error": {"code": "egress_denied", "message": "10.0.0.1 is a private address", "reason": "private_address"}}""");

        var response = await server.PostJsonAsync("/v1/tools/fetch", """{"url": "http://10.0.0.1/"}""");

        await AssertProblem(response, HttpStatusCode.Forbidden, "egress_denied", "url");
        var problem = await JsonOf(response);
        Assert.Equal("private_address", problem.GetProperty("reason").GetString());
        Assert.Contains("private_address", problem.GetProperty("detail").GetString());
        Assert.Contains("10.0.0.1 is a private address", problem.GetProperty("detail").GetString());
        Assert.Equal("Forbidden", problem.GetProperty("title").GetString());
    }

    [Theory]
    [InlineData("search_not_configured", HttpStatusCode.ServiceUnavailable, "search_not_configured")]
    [InlineData("search_failed", HttpStatusCode.BadGateway, "search_failed")]
    [InlineData("fetch_failed", HttpStatusCode.BadGateway, "fetch_failed")]
    [InlineData("too_large", HttpStatusCode.BadGateway, "fetch_too_large")]
    [InlineData("timeout", HttpStatusCode.GatewayTimeout, "upstream_timeout")]
    [InlineData("invalid_argument", HttpStatusCode.BadRequest, "invalid_argument")]
    [InlineData("something_new", HttpStatusCode.BadGateway, "tool_failed")]
    public async Task ModuleErrors_MapToProblems(string moduleCode, HttpStatusCode status, string code)
    {
        await using var server = await TestServer.StartAsync();
        server.Runner.Respond = _ => FakeToolRunner.Exited(2, $$$"""{"error": {"code": "{{{moduleCode}}}", "message": "the module says {{{moduleCode}}}"}}""");

        var response = await server.PostJsonAsync("/v1/tools/search", """{"query": "q"}""");

        await AssertProblem(response, status, code);
        Assert.Contains($"the module says {moduleCode}", (await JsonOf(response)).GetProperty("detail").GetString());
    }

    [Fact]
    public async Task RunTimeout_Is504ToolTimeout_WithTheRunsError()
    {
        await using var server = await TestServer.StartAsync();
        server.Runner.Respond = _ => FakeToolRunner.Failed(RunStatus.Timeout, "no answer from the sandbox within 65 s; the host stopped it");

        var response = await server.PostJsonAsync("/v1/tools/fetch", """{"url": "https://slow.example/"}""");

        await AssertProblem(response, HttpStatusCode.GatewayTimeout, "tool_timeout");
        Assert.Contains("within 65 s", (await JsonOf(response)).GetProperty("detail").GetString());
    }

    [Fact]
    public async Task SandboxError_Is502_WithTheRunsError()
    {
        await using var server = await TestServer.StartAsync();
        server.Runner.Respond = _ => FakeToolRunner.Failed(RunStatus.SandboxError, "the sandbox could not be started: no kvm");

        var response = await server.PostJsonAsync("/v1/tools/search", """{"query": "q"}""");

        await AssertProblem(response, HttpStatusCode.BadGateway, "sandbox_error");
        Assert.Contains("no kvm", (await JsonOf(response)).GetProperty("detail").GetString());
    }

    [Fact]
    public async Task ACrashedModule_Is502ToolFailed_WithTheEndOfItsTraceback()
    {
        await using var server = await TestServer.StartAsync();
        server.Runner.Respond = _ => FakeToolRunner.Exited(1, "", "Traceback (most recent call last):\n  ...\nModuleNotFoundError: No module named 'websearch'\n");

        var response = await server.PostJsonAsync("/v1/tools/search", """{"query": "q"}""");

        await AssertProblem(response, HttpStatusCode.BadGateway, "tool_failed");
        string detail = (await JsonOf(response)).GetProperty("detail").GetString()!;
        Assert.Contains("exit code 1", detail);
        Assert.Contains("No module named 'websearch'", detail);
    }

    [Fact]
    public async Task ExitTwoWithoutTheErrorObject_IsToolFailed()
    {
        await using var server = await TestServer.StartAsync();
        server.Runner.Respond = _ => FakeToolRunner.Exited(2, "", "usage: websearch [-h] {fetch,search} ...\nwebsearch: error: unrecognized arguments");

        var response = await server.PostJsonAsync("/v1/tools/search", """{"query": "q"}""");

        await AssertProblem(response, HttpStatusCode.BadGateway, "tool_failed");
        Assert.Contains("unrecognized arguments", (await JsonOf(response)).GetProperty("detail").GetString());
    }

    [Theory]
    [InlineData("")]
    [InlineData("not json at all")]
    [InlineData("[1, 2]")]
    [InlineData("""{"no_results": true}""")]
    [InlineData("""{"results": "nope"}""")]
    [InlineData("""{"results": [1]}""")]
    public async Task UnexpectedModuleOutput_IsToolFailed(string stdout)
    {
        await using var server = await TestServer.StartAsync();
        server.Runner.Respond = _ => FakeToolRunner.Ok(stdout);

        var response = await server.PostJsonAsync("/v1/tools/search", """{"query": "q"}""");

        await AssertProblem(response, HttpStatusCode.BadGateway, "tool_failed");
    }

    [Fact]
    public async Task StrayOutputBeforeTheJson_IsTolerated()
    {
        await using var server = await TestServer.StartAsync();
        server.Runner.Respond = _ => FakeToolRunner.Ok("some library warning\n{\"results\": [{\"title\": \"t\", \"url\": \"https://t.example/\", \"snippet\": \"s\"}]}\n");

        var response = await server.PostJsonAsync("/v1/tools/search", """{"query": "q"}""");

        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        Assert.Equal("t", (await JsonOf(response)).GetProperty("results")[0].GetProperty("title").GetString());
    }

    [Fact]
    public async Task AFetchAnswerWithoutAStatus_IsToolFailed()
    {
        await using var server = await TestServer.StartAsync();
        server.Runner.Respond = _ => FakeToolRunner.Ok("""{"url": "https://e.example/", "text": "hi"}""");

        var response = await server.PostJsonAsync("/v1/tools/fetch", """{"url": "https://e.example/"}""");

        await AssertProblem(response, HttpStatusCode.BadGateway, "tool_failed");
    }

    [Fact]
    public async Task AnUnknownToolsTemplate_Is409TemplateUnavailable()
    {
        await using var server = await TestServer.StartAsync();
        server.Runner.Respond = _ => throw new RunRequestException(ProblemCodes.UnknownTemplate, "template", "unknown template 'websearch-tools'");

        var response = await server.PostJsonAsync("/v1/tools/search", """{"query": "q"}""");

        await AssertProblem(response, HttpStatusCode.Conflict, "template_unavailable");
        Assert.Equal(JsonValueKind.Null, (await JsonOf(response)).GetProperty("field").ValueKind);
    }

    [Fact]
    public async Task AnUnavailableToolsTemplate_Is409_AsRunServiceSaysIt()
    {
        await using var server = await TestServer.StartAsync();
        server.Runner.Respond = _ => throw new RunRequestException(ProblemCodes.TemplateUnavailable, "template",
            "template 'websearch-tools' is unavailable: needs network proxy support", RefusalKind.Conflict);

        var response = await server.PostJsonAsync("/v1/tools/fetch", """{"url": "https://e.example/"}""");

        await AssertProblem(response, HttpStatusCode.Conflict, "template_unavailable");
        Assert.Contains("needs network proxy support", (await JsonOf(response)).GetProperty("detail").GetString());
    }

    [Fact]
    public async Task AFullQueue_Is429WithRetryAfter()
    {
        await using var server = await TestServer.StartAsync();
        server.Runner.Respond = _ => throw new RunRequestException(ProblemCodes.Overloaded, null, "the websearch-tools sandbox has 64 requests waiting", RefusalKind.Busy);

        var response = await server.PostJsonAsync("/v1/tools/search", """{"query": "q"}""");

        await AssertProblem(response, HttpStatusCode.TooManyRequests, "overloaded");
        Assert.Equal(TimeSpan.FromSeconds(1), response.Headers.RetryAfter?.Delta);
    }

    [Fact]
    public async Task WithAnApiKey_ToolsNeedIt()
    {
        await using var server = await TestServer.StartAsync(apiKey: "s3cret");

        var without = await server.PostJsonAsync("/v1/tools/search", """{"query": "q"}""");
        var wrong = await server.PostJsonAsync("/v1/tools/search", """{"query": "q"}""", apiKey: "nope");
        var right = await server.PostJsonAsync("/v1/tools/search", """{"query": "q"}""", apiKey: "s3cret");

        await AssertProblem(without, HttpStatusCode.Unauthorized, "unauthorized");
        await AssertProblem(wrong, HttpStatusCode.Unauthorized, "unauthorized");
        Assert.Equal(HttpStatusCode.OK, right.StatusCode);
        Assert.Single(server.Runner.Requests);
    }
}
