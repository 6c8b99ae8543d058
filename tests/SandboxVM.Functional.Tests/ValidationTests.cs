using System.Net;
using System.Net.Http.Json;
using System.Text;
using System.Text.Json;

namespace SandboxVM.Functional.Tests;

/// <summary>Bad input gets a 400-class problem+json naming what is wrong; nothing reaches a sandbox.</summary>
[Collection(ProcessServer.Collection)]
[Trait("tier", "vm")]
public class ValidationTests(ProcessServer server)
{
    private static CancellationToken Ct => TestContext.Current.CancellationToken;

    private async Task<(HttpStatusCode Status, JsonElement Problem, string ContentType)> PostAsync(HttpContent content)
    {
        using var response = await server.Http.PostAsync("/v1/run", content, Ct);
        string body = await response.Content.ReadAsStringAsync(Ct);
        return (response.StatusCode, JsonDocument.Parse(body).RootElement.Clone(), response.Content.Headers.ContentType?.MediaType ?? "");
    }

    private Task<(HttpStatusCode Status, JsonElement Problem, string ContentType)> PostJsonAsync(object body) =>
        PostAsync(JsonContent.Create(body, options: ServerFixture.Json));

    [Theory]
    [InlineData("no-such-template", "print(1)", null, "unknown_template", "template")]
    [InlineData("python-data-analysis", "", null, "empty_code", "code")]
    [InlineData("python-data-analysis", "print(1)", 0.0, "timeout_out_of_range", "timeout_s")]
    [InlineData("python-data-analysis", "print(1)", 100000.0, "timeout_out_of_range", "timeout_s")]
    public async Task BadRunRequest_Is400ProblemNamingCodeAndField(string template, string code, double? timeout, string expectedCode, string field)
    {
        var (status, problem, contentType) = await PostJsonAsync(new { template, code, timeout_s = timeout });
        Assert.Equal(HttpStatusCode.BadRequest, status);
        Assert.Equal("application/problem+json", contentType);
        Assert.Equal(expectedCode, problem.GetProperty("code").GetString());
        Assert.Equal(field, problem.GetProperty("field").GetString());
        Assert.False(string.IsNullOrEmpty(problem.GetProperty("detail").GetString()));
    }

    [Fact]
    public async Task CodeOverTheSizeLimit_Is400CodeTooLarge()
    {
        var (status, problem, _) = await PostJsonAsync(new { template = "python-data-analysis", code = "#" + new string('x', 2 << 20) });
        Assert.Equal(HttpStatusCode.BadRequest, status);
        Assert.Equal("code_too_large", problem.GetProperty("code").GetString());
        Assert.Equal("code", problem.GetProperty("field").GetString());
    }

    [Theory]
    [InlineData("{\"template\": \"python-data-analysis\", \"code\": ")]
    [InlineData("not json at all")]
    [InlineData("{\"template\": \"python-data-analysis\", \"code\": 5}")]
    public async Task MalformedJson_Is400MalformedJson(string body)
    {
        var (status, problem, contentType) = await PostAsync(new StringContent(body, Encoding.UTF8, "application/json"));
        Assert.Equal(HttpStatusCode.BadRequest, status);
        Assert.Equal("application/problem+json", contentType);
        Assert.Equal("malformed_json", problem.GetProperty("code").GetString());
    }

    [Fact]
    public async Task UnknownField_IsRejectedNamingTheField()
    {
        var (status, problem, _) = await PostJsonAsync(new { template = "python-data-analysis", code = "print(1)", timeout = 5 });
        Assert.Equal(HttpStatusCode.BadRequest, status);
        Assert.Equal("malformed_json", problem.GetProperty("code").GetString());
        Assert.Contains("timeout", problem.GetProperty("detail").GetString());
    }

    [Fact]
    public async Task Templates_AreListedWithRuntimeIsolationAndAvailability()
    {
        var doc = JsonDocument.Parse(await server.Http.GetStringAsync("/v1/templates", Ct));
        var templates = doc.RootElement.GetProperty("templates").EnumerateArray().ToDictionary(t => t.GetProperty("name").GetString()!);
        foreach (string name in new[] { "cpp-algorithm", "go-algorithm", "python-data-analysis" })
        {
            Assert.True(templates[name].GetProperty("available").GetBoolean(), name);
            Assert.True(templates[name].GetProperty("built").GetBoolean(), name);
            Assert.Equal("process", templates[name].GetProperty("runtime").GetString());
            Assert.Equal("shared-kernel", templates[name].GetProperty("isolation").GetString());
        }
        Assert.True(templates["websearch-tools"].GetProperty("available").GetBoolean());
        Assert.Equal("proxy", templates["websearch-tools"].GetProperty("network").GetString());

        using var one = await server.Http.GetAsync("/v1/templates/cpp-algorithm", Ct);
        Assert.Equal(HttpStatusCode.OK, one.StatusCode);
        using var missing = await server.Http.GetAsync("/v1/templates/nope", Ct);
        Assert.Equal(HttpStatusCode.NotFound, missing.StatusCode);
        Assert.Equal("application/problem+json", missing.Content.Headers.ContentType?.MediaType);
    }
}
