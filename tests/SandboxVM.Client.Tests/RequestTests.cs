using System.Net;
using System.Text.Json;

namespace SandboxVM.Client.Tests;

[Trait("tier", "unit")]
public class RequestTests
{
    private const string OkResult = """{"stdout":"","stderr":"","output":"","exit_code":0,"status":"ok","artifacts":[],"metrics":{},"truncated":false}""";

    private static (SandboxClient Client, FakeHandler Handler) Create(string? apiKey = null, string baseUrl = "http://sandbox.test:8000")
    {
        var handler = new FakeHandler(HttpStatusCode.OK, OkResult);
        var client = new SandboxClient(new SandboxClientOptions { BaseUrl = baseUrl, ApiKey = apiKey, HttpMessageHandler = handler });
        return (client, handler);
    }

    [Fact]
    public async Task Run_PostsSnakeCaseJsonToV1Run()
    {
        var (client, handler) = Create();
        using var _ = client;

        await client.RunAsync(
            new RunRequest
            {
                Template = "cpp-algorithm",
                Code = "int main(){}",
                Stdin = "1 2\n",
                Env = new Dictionary<string, string> { ["MY_VAR"] = "1", ["camelCase"] = "x" },
                TimeoutS = 2.5,
                CompileTimeoutS = 30,
            },
            TestContext.Current.CancellationToken);

        Assert.Equal(HttpMethod.Post, handler.LastRequest.Method);
        Assert.Equal("http://sandbox.test:8000/v1/run", handler.LastRequest.RequestUri!.ToString());
        Assert.Equal("application/json", handler.LastRequest.Content!.Headers.ContentType!.MediaType);
        using var json = JsonDocument.Parse(handler.LastBody!);
        var root = json.RootElement;
        Assert.Equal(
            ["template", "code", "stdin", "env", "timeout_s", "compile_timeout_s"],
            root.EnumerateObject().Select(p => p.Name));
        Assert.Equal("cpp-algorithm", root.GetProperty("template").GetString());
        Assert.Equal("int main(){}", root.GetProperty("code").GetString());
        Assert.Equal("1 2\n", root.GetProperty("stdin").GetString());
        Assert.Equal(2.5, root.GetProperty("timeout_s").GetDouble());
        Assert.Equal(30, root.GetProperty("compile_timeout_s").GetDouble());
        Assert.Equal("1", root.GetProperty("env").GetProperty("MY_VAR").GetString());
        Assert.Equal("x", root.GetProperty("env").GetProperty("camelCase").GetString());
    }

    [Fact]
    public async Task Run_WhenOptionalFieldsAreNull_LeavesThemOut()
    {
        var (client, handler) = Create();
        using var _ = client;

        await client.RunAsync("print(1)", cancellationToken: TestContext.Current.CancellationToken);

        Assert.Equal("""{"template":"python-data-analysis","code":"print(1)"}""", handler.LastBody);
    }

    [Fact]
    public async Task Run_WhenApiKeySet_SendsBearerHeader()
    {
        var (client, handler) = Create(apiKey: "s3cret");
        using var _ = client;

        await client.RunAsync("print(1)", cancellationToken: TestContext.Current.CancellationToken);

        var auth = handler.LastRequest.Headers.Authorization;
        Assert.NotNull(auth);
        Assert.Equal("Bearer", auth.Scheme);
        Assert.Equal("s3cret", auth.Parameter);
    }

    [Fact]
    public async Task Run_WithoutApiKey_SendsNoAuthorizationHeader()
    {
        var (client, handler) = Create();
        using var _ = client;

        await client.RunAsync("print(1)", cancellationToken: TestContext.Current.CancellationToken);

        Assert.Null(handler.LastRequest.Headers.Authorization);
    }

    [Fact]
    public async Task Requests_WhenBaseUrlHasPathPrefix_KeepThePrefix()
    {
        var (client, handler) = Create(baseUrl: "https://proxy.test/sandbox");
        using var _ = client;

        await client.RunAsync("print(1)", cancellationToken: TestContext.Current.CancellationToken);

        Assert.Equal("https://proxy.test/sandbox/v1/run", handler.LastRequest.RequestUri!.ToString());
    }

    [Fact]
    public async Task RunOnce_SendsCodeTemplateStdinAndTimeoutToTheGivenServer()
    {
        var handler = new FakeHandler(HttpStatusCode.OK, OkResult);

        await Sandbox.RunOnceThroughAsync(
            "print(input())", "python-data-analysis", "http://10.0.0.5:9000", "hi", 3, "key", handler,
            TestContext.Current.CancellationToken);

        Assert.Equal("http://10.0.0.5:9000/v1/run", handler.LastRequest.RequestUri!.ToString());
        Assert.Equal("key", handler.LastRequest.Headers.Authorization!.Parameter);
        Assert.Equal(
            """{"template":"python-data-analysis","code":"print(input())","stdin":"hi","timeout_s":3}""",
            handler.LastBody);
    }

    [Fact]
    public async Task GetTemplate_EscapesTheNameInThePath()
    {
        var handler = new FakeHandler(HttpStatusCode.OK, """{"name":"a b"}""");
        using var client = new SandboxClient(new SandboxClientOptions { HttpMessageHandler = handler });

        await client.GetTemplateAsync("a b/c", TestContext.Current.CancellationToken);

        Assert.Equal("/v1/templates/a%20b%2Fc", handler.LastRequest.RequestUri!.AbsolutePath);
        Assert.Equal("127.0.0.1:8000", handler.LastRequest.RequestUri!.Authority);
    }

    [Theory]
    [InlineData("")]
    [InlineData("not a url")]
    [InlineData("ftp://host/")]
    [InlineData("/relative")]
    public void Constructor_WhenBaseUrlIsNotAbsoluteHttp_Throws(string baseUrl)
    {
        Assert.Throws<ArgumentException>(() => new SandboxClient(baseUrl));
    }

    [Fact]
    public async Task Client_AfterDispose_ThrowsObjectDisposed()
    {
        var (client, _) = Create();
        client.Dispose();

        await Assert.ThrowsAsync<ObjectDisposedException>(
            () => client.RunAsync("print(1)", cancellationToken: TestContext.Current.CancellationToken));
    }
}
