using System.Net;
using System.Text.Json;
using SandboxVM.Core.Runs;

namespace SandboxVM.Server.Tests;

/// <summary>
/// Problems as a client reads them, whatever it asked for in Accept: application/problem+json with
/// exactly the members the API documents, in that order, and nothing of the framework's own.
/// </summary>
[Trait("tier", "unit")]
public sealed class ProblemTests
{
    private static CancellationToken Ct => TestContext.Current.CancellationToken;

    private static async Task<(HttpResponseMessage Response, JsonElement Body)> SendAsync(ApiServer server, HttpMethod method, string path,
        string? accept = null, string? json = null)
    {
        var response = await server.SendAsync(method, path, content: json is null ? null : ApiServer.Json(json), configure: r =>
        {
            if (accept is not null)
            {
                r.Headers.Accept.ParseAdd(accept);
            }
        });
        return (response, await ApiServer.BodyOf(response));
    }

    [Theory]
    [InlineData(null)]
    [InlineData("application/json")]
    [InlineData("text/plain")]
    [InlineData("text/event-stream")]
    public async Task AProblem_IsProblemJson_WithTheDocumentedMembersOnly_WhateverTheClientAccepts(string? accept)
    {
        await using var server = await ApiServer.StartAsync();

        var (response, body) = await SendAsync(server, HttpMethod.Get, "/v1/templates/nope", accept);

        Assert.Equal(HttpStatusCode.NotFound, response.StatusCode);
        Assert.Equal("application/problem+json", response.Content.Headers.ContentType?.MediaType);
        Assert.Equal(["type", "title", "status", "detail", "code", "field"], body.EnumerateObject().Select(p => p.Name));
        Assert.Equal("urn:sandboxvm:problem:unknown_template", body.GetProperty("type").GetString());
        Assert.Equal("Not found", body.GetProperty("title").GetString());
        Assert.Equal(404, body.GetProperty("status").GetInt32());
        Assert.Equal("unknown template 'nope'", body.GetProperty("detail").GetString());
        Assert.Equal("unknown_template", body.GetProperty("code").GetString());
        Assert.Equal("name", body.GetProperty("field").GetString());
    }

    [Fact]
    public async Task AStreamedRunRefusedBeforeItStarts_IsAProblem_NotAStream()
    {
        await using var server = await ApiServer.StartAsync();

        var (response, body) = await SendAsync(server, HttpMethod.Post, "/v1/run", "text/event-stream", """{"template": "py", "code": ""}""");

        Assert.Equal(HttpStatusCode.BadRequest, response.StatusCode);
        Assert.Equal("application/problem+json", response.Content.Headers.ContentType?.MediaType);
        Assert.Equal("empty_code", body.GetProperty("code").GetString());
        Assert.Equal("code", body.GetProperty("field").GetString());
    }

    [Fact]
    public async Task AProblemWithoutAField_HasFieldNull()
    {
        await using var server = await ApiServer.StartAsync();

        var (response, body) = await SendAsync(server, HttpMethod.Get, "/v1/sandboxes/sb-none");

        Assert.Equal(HttpStatusCode.NotFound, response.StatusCode);
        Assert.Equal("sandbox_not_found", body.GetProperty("code").GetString());
        Assert.Equal(JsonValueKind.Null, body.GetProperty("field").ValueKind);
    }

    [Theory]
    [InlineData(RefusalKind.Invalid, 400)]
    [InlineData(RefusalKind.Forbidden, 403)]
    [InlineData(RefusalKind.NotFound, 404)]
    [InlineData(RefusalKind.Conflict, 409)]
    [InlineData(RefusalKind.TooLarge, 413)]
    [InlineData(RefusalKind.Busy, 429)]
    [InlineData(RefusalKind.SandboxFailed, 502)]
    [InlineData(RefusalKind.Unavailable, 503)]
    public void EachRefusalOfCore_HasItsStatus(RefusalKind kind, int status) => Assert.Equal(status, ProblemStatus.Of(kind));

    [Fact]
    public void NoRefusalOfCore_IsA500() =>
        Assert.All(Enum.GetValues<RefusalKind>(), kind => Assert.NotEqual(500, ProblemStatus.Of(kind)));
}
