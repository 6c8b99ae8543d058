using System.Net;
using System.Net.Http.Headers;
using System.Net.Sockets;

namespace SandboxVM.Client.Tests;

[Trait("tier", "unit")]
public class ErrorTests
{
    private static SandboxClient ClientAnswering(HttpResponseMessage response) =>
        new(new SandboxClientOptions { HttpMessageHandler = new FakeHandler(_ => response) });

    [Fact]
    public async Task RunOnce_WhenServerReturnsProblem_ThrowsTypedExceptionWithCode()
    {
        var handler = new FakeHandler(_ => FakeHandler.Problem(
            HttpStatusCode.NotFound, "unknown_template", "template", "No template named 'nope'."));

        var ex = await Assert.ThrowsAsync<SandboxNotFoundException>(() => Sandbox.RunOnceThroughAsync(
            "print(1)", "nope", null, null, null, null, handler, TestContext.Current.CancellationToken));

        Assert.Equal(HttpStatusCode.NotFound, ex.StatusCode);
        Assert.Equal("unknown_template", ex.Code);
        Assert.Equal("template", ex.Field);
        Assert.Equal("Request failed", ex.Title);
        Assert.Equal("No template named 'nope'.", ex.Detail);
        Assert.Equal(
            "Request failed: No template named 'nope'. (HTTP 404, code unknown_template, field template)",
            ex.Message);
    }

    [Theory]
    [InlineData(HttpStatusCode.BadRequest, "empty_code", typeof(SandboxBadRequestException))]
    [InlineData(HttpStatusCode.RequestEntityTooLarge, "code_too_large", typeof(SandboxBadRequestException))]
    [InlineData(HttpStatusCode.UnprocessableEntity, "timeout_out_of_range", typeof(SandboxBadRequestException))]
    [InlineData(HttpStatusCode.Unauthorized, "unauthorized", typeof(SandboxAuthException))]
    [InlineData(HttpStatusCode.Forbidden, "forbidden", typeof(SandboxAuthException))]
    [InlineData(HttpStatusCode.NotFound, "unknown_template", typeof(SandboxNotFoundException))]
    [InlineData(HttpStatusCode.Conflict, "template_unavailable", typeof(SandboxUnavailableException))]
    [InlineData(HttpStatusCode.TooManyRequests, "rate_limited", typeof(SandboxUnavailableException))]
    [InlineData(HttpStatusCode.ServiceUnavailable, "pool_exhausted", typeof(SandboxUnavailableException))]
    [InlineData(HttpStatusCode.InternalServerError, "internal", typeof(SandboxApiException))]
    public async Task Run_WhenServerReturnsProblem_ThrowsExceptionTypeForStatus(HttpStatusCode status, string code, Type expected)
    {
        using var client = ClientAnswering(FakeHandler.Problem(status, code, field: "code"));

        var ex = await Assert.ThrowsAnyAsync<SandboxApiException>(
            () => client.RunAsync("x", cancellationToken: TestContext.Current.CancellationToken));

        Assert.IsType(expected, ex);
        Assert.Equal(status, ex.StatusCode);
        Assert.Equal(code, ex.Code);
        Assert.Equal("code", ex.Field);
    }

    [Theory]
    [InlineData(HttpStatusCode.NotFound, "sandbox_not_found", typeof(SandboxNotFoundException))]
    [InlineData(HttpStatusCode.NotFound, "unknown_template", typeof(SandboxNotFoundException))]
    [InlineData(HttpStatusCode.NotFound, "file_not_found", typeof(SandboxFileNotFoundException))]
    [InlineData(HttpStatusCode.TooManyRequests, "too_many_sandboxes", typeof(TooManySandboxesException))]
    [InlineData(HttpStatusCode.TooManyRequests, "overloaded", typeof(SandboxUnavailableException))]
    [InlineData(HttpStatusCode.RequestEntityTooLarge, "file_too_large", typeof(FileTooLargeException))]
    [InlineData(HttpStatusCode.BadRequest, "invalid_path", typeof(SandboxInvalidPathException))]
    [InlineData(HttpStatusCode.BadRequest, "malformed_json", typeof(SandboxBadRequestException))]
    [InlineData(HttpStatusCode.BadRequest, "timeout_out_of_range", typeof(SandboxBadRequestException))]
    public async Task SandboxCalls_MapTheProblemCodeToItsExceptionType(HttpStatusCode status, string code, Type expected)
    {
        using var client = ClientAnswering(FakeHandler.Problem(status, code, field: "path"));

        var ex = await Assert.ThrowsAnyAsync<SandboxApiException>(() => client.GetSandboxAsync("sb-1", TestContext.Current.CancellationToken));

        Assert.IsType(expected, ex);
        Assert.Equal(status, ex.StatusCode);
        Assert.Equal(code, ex.Code);
        Assert.Equal("path", ex.Field);
    }

    [Fact]
    public async Task TooManySandboxes_ExposesRetryAfter_AndIsStillAnUnavailableException()
    {
        var response = FakeHandler.Problem(HttpStatusCode.TooManyRequests, "too_many_sandboxes");
        response.Headers.RetryAfter = new RetryConditionHeaderValue(TimeSpan.FromSeconds(12));
        using var client = ClientAnswering(response);

        var ex = await Assert.ThrowsAsync<TooManySandboxesException>(
            () => client.CreateSandboxAsync(cancellationToken: TestContext.Current.CancellationToken));

        Assert.Equal(TimeSpan.FromSeconds(12), ex.RetryAfter);
        SandboxUnavailableException asBase = ex;
        Assert.Equal(TimeSpan.FromSeconds(12), asBase.RetryAfter);
    }

    [Fact]
    public async Task Run_WhenUnavailableWithRetryAfter_ExposesRetryAfter()
    {
        var response = FakeHandler.Problem(HttpStatusCode.ServiceUnavailable, "template_unavailable");
        response.Headers.RetryAfter = new RetryConditionHeaderValue(TimeSpan.FromSeconds(7));
        using var client = ClientAnswering(response);

        var ex = await Assert.ThrowsAsync<SandboxUnavailableException>(
            () => client.RunAsync("x", cancellationToken: TestContext.Current.CancellationToken));

        Assert.Equal(TimeSpan.FromSeconds(7), ex.RetryAfter);
        Assert.Equal("template_unavailable", ex.Code);
    }

    [Fact]
    public async Task Run_WhenUnavailableWithoutRetryAfter_LeavesItNull()
    {
        using var client = ClientAnswering(FakeHandler.Problem(HttpStatusCode.Conflict, "template_unavailable"));

        var ex = await Assert.ThrowsAsync<SandboxUnavailableException>(
            () => client.RunAsync("x", cancellationToken: TestContext.Current.CancellationToken));

        Assert.Null(ex.RetryAfter);
    }

    [Fact]
    public async Task Run_WhenErrorBodyIsHtml_ThrowsWithStatusAndBodySnippet()
    {
        var html = "<html>\n  <body>\n    <h1>502 Bad Gateway</h1>\n" + new string('x', 1000) + "</body></html>";
        using var client = ClientAnswering(FakeHandler.Response(HttpStatusCode.BadGateway, html, "text/html"));

        var ex = await Assert.ThrowsAsync<SandboxApiException>(
            () => client.RunAsync("x", cancellationToken: TestContext.Current.CancellationToken));

        Assert.Equal(HttpStatusCode.BadGateway, ex.StatusCode);
        Assert.Null(ex.Code);
        Assert.StartsWith("<html> <body> <h1>502 Bad Gateway</h1>", ex.Detail, StringComparison.Ordinal);
        Assert.True(ex.Detail!.Length <= 301);
        Assert.StartsWith("Bad Gateway: <html>", ex.Message, StringComparison.Ordinal);
        Assert.EndsWith("(HTTP 502)", ex.Message, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Run_WhenErrorBodyIsEmpty_StillNamesTheStatus()
    {
        using var client = ClientAnswering(new HttpResponseMessage(HttpStatusCode.Unauthorized));

        var ex = await Assert.ThrowsAsync<SandboxAuthException>(
            () => client.RunAsync("x", cancellationToken: TestContext.Current.CancellationToken));

        Assert.Null(ex.Detail);
        Assert.Equal("Unauthorized (HTTP 401)", ex.Message);
    }

    [Fact]
    public async Task Run_WhenErrorBodyIsPlainJsonError_UsesItAsDetail()
    {
        using var client = ClientAnswering(FakeHandler.Response(HttpStatusCode.BadRequest, """{"error":"bad things"}"""));

        var ex = await Assert.ThrowsAsync<SandboxBadRequestException>(
            () => client.RunAsync("x", cancellationToken: TestContext.Current.CancellationToken));

        Assert.Equal("bad things", ex.Detail);
        Assert.Equal("Bad Request: bad things (HTTP 400)", ex.Message);
    }

    [Fact]
    public async Task RunOnce_WhenNobodyListens_ThrowsConnectionExceptionNamingBaseUrl()
    {
        var listener = new TcpListener(IPAddress.Loopback, 0);
        listener.Start();
        var port = ((IPEndPoint)listener.LocalEndpoint).Port;
        listener.Stop();
        var baseUrl = $"http://127.0.0.1:{port}";

        var ex = await Assert.ThrowsAsync<SandboxConnectionException>(() => Sandbox.RunOnceAsync(
            "print(sum(range(10)))", template: "python-data-analysis", baseUrl: baseUrl,
            cancellationToken: TestContext.Current.CancellationToken));

        Assert.Contains(baseUrl, ex.Message, StringComparison.Ordinal);
        Assert.IsType<HttpRequestException>(ex.InnerException);
        Assert.IsAssignableFrom<SandboxException>(ex);
    }

    [Fact]
    public async Task Run_WhenServerDoesNotAnswerWithinTimeout_ThrowsConnectionException()
    {
        var handler = new HangingHandler();
        using var client = new SandboxClient(new SandboxClientOptions
        {
            BaseUrl = "http://slow.test:8000",
            HttpMessageHandler = handler,
            Timeout = TimeSpan.FromMilliseconds(50),
        });

        var ex = await Assert.ThrowsAsync<SandboxConnectionException>(
            () => client.RunAsync("x", cancellationToken: TestContext.Current.CancellationToken));

        Assert.Contains("http://slow.test:8000", ex.Message, StringComparison.Ordinal);
        Assert.Contains("0.05 s", ex.Message, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Run_WhenCallerCancels_ThrowsOperationCanceledNotWrapped()
    {
        using var client = new SandboxClient(new SandboxClientOptions { HttpMessageHandler = new HangingHandler() });
        using var cts = CancellationTokenSource.CreateLinkedTokenSource(TestContext.Current.CancellationToken);
        cts.CancelAfter(50);

        await Assert.ThrowsAnyAsync<OperationCanceledException>(() => client.RunAsync("x", cancellationToken: cts.Token));
    }

    private sealed class HangingHandler : HttpMessageHandler
    {
        protected override async Task<HttpResponseMessage> SendAsync(HttpRequestMessage request, CancellationToken cancellationToken)
        {
            await Task.Delay(Timeout.Infinite, cancellationToken);
            throw new InvalidOperationException("unreachable");
        }
    }
}
