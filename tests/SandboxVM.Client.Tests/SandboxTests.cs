using System.Net;
using System.Net.Http.Headers;
using System.Text;
using System.Text.Json;

namespace SandboxVM.Client.Tests;

[Trait("tier", "unit")]
public class SandboxTests
{
    private static CancellationToken Ct => TestContext.Current.CancellationToken;

    [Fact]
    public async Task Create_PostsTemplateLifetimeAndMetadata_AndReadsSandboxInfo()
    {
        var server = new FakeSandboxServer();

        await using var sb = await Sandbox.CreateAsync("python-data-analysis", new SandboxCreateOptions
        {
            BaseUrl = "http://sandbox.test:8000",
            ApiKey = "k1",
            HttpMessageHandler = server,
            TimeoutS = 600,
            IdleTimeoutS = 90.5,
            Metadata = new Dictionary<string, string> { ["user"] = "ada", ["TaskId"] = "7" },
        }, Ct);

        var create = server.Requests[0];
        Assert.Equal(HttpMethod.Post, create.Method);
        Assert.Equal("/v1/sandboxes", create.PathAndQuery);
        Assert.Equal("http://sandbox.test:8000/v1/sandboxes", create.Request.RequestUri!.ToString());
        Assert.Equal("Bearer", create.Request.Headers.Authorization!.Scheme);
        Assert.Equal("k1", create.Request.Headers.Authorization.Parameter);
        Assert.Equal(
            """{"template":"python-data-analysis","timeout_s":600,"idle_timeout_s":90.5,"metadata":{"user":"ada","TaskId":"7"}}""",
            Encoding.UTF8.GetString(create.Body!));

        Assert.Equal("sb-1", sb.Id);
        Assert.Equal("python-data-analysis", sb.Template);
        Assert.Equal(SandboxState.Running, sb.Info.State);
        Assert.Equal(new DateTimeOffset(2026, 11, 28, 21, 30, 0, 123, TimeSpan.Zero), sb.Info.CreatedAt);
        Assert.Equal(new DateTimeOffset(2026, 11, 28, 21, 35, 0, 123, TimeSpan.Zero), sb.Info.ExpiresAt);
        Assert.Equal(600, sb.Info.TimeoutS);
        Assert.Equal(90.5, sb.Info.IdleTimeoutS);
        Assert.Equal("ada", sb.Info.Metadata["user"]);
        Assert.Equal("qemu", sb.Info.Runtime);
        Assert.Equal(VmSource.Pool, sb.Info.VmSource);
        Assert.Equal(12.5, sb.Info.StartupMs);
    }

    [Fact]
    public async Task Create_WithoutOptionalFields_SendsOnlyTheTemplate()
    {
        var server = new FakeSandboxServer();
        using var client = server.Client();

        await using var sb = await client.CreateSandboxAsync(cancellationToken: Ct);

        Assert.Equal("""{"template":"python-data-analysis"}""", Encoding.UTF8.GetString(server.Requests[0].Body!));
    }

    [Fact]
    public void ClientFor_WithoutBaseUrlOrKey_TakesThemFromTheEnvironmentThenTheDefault()
    {
        var env = new Dictionary<string, string?> { ["SANDBOXVM_BASE_URL"] = "http://env.test:9000", ["SANDBOXVM_API_KEY"] = "envkey" };

        var (fromEnv, owns) = Sandbox.ClientFor(new SandboxCreateOptions(), name => env.GetValueOrDefault(name));
        var (explicitUrl, _) = Sandbox.ClientFor(new SandboxCreateOptions { BaseUrl = "http://given.test" }, name => env.GetValueOrDefault(name));
        var (fallback, _) = Sandbox.ClientFor(new SandboxCreateOptions(), _ => null);

        Assert.True(owns);
        Assert.Equal("http://env.test:9000", fromEnv.BaseUrlText);
        Assert.Equal("http://given.test", explicitUrl.BaseUrlText);
        Assert.Equal("http://127.0.0.1:8000", fallback.BaseUrlText);
        fromEnv.Dispose();
        explicitUrl.Dispose();
        fallback.Dispose();
    }

    [Theory]
    [InlineData("http://a.test", "http://b.test", "http://a.test")]
    [InlineData(null, "http://b.test", "http://b.test")]
    [InlineData("", " ", SandboxClientOptions.DefaultBaseUrl)]
    [InlineData(null, null, SandboxClientOptions.DefaultBaseUrl)]
    public void FromEnvironment_PrefersBaseUrlVariableThenCliVariableThenDefault(string? baseUrl, string? url, string expected)
    {
        var env = new Dictionary<string, string?> { ["SANDBOXVM_BASE_URL"] = baseUrl, ["SANDBOXVM_URL"] = url, ["SANDBOXVM_API_KEY"] = "" };

        var options = SandboxClientOptions.FromEnvironment(name => env.GetValueOrDefault(name));

        Assert.Equal(expected, options.BaseUrl);
        Assert.Null(options.ApiKey);
    }

    [Fact]
    public async Task Create_WhenTooManySandboxes_ThrowsWithRetryAfterAndReleasesNothingTwice()
    {
        var response = FakeHandler.Problem(HttpStatusCode.TooManyRequests, "too_many_sandboxes", detail: "8 sandboxes are running");
        response.Headers.RetryAfter = new RetryConditionHeaderValue(TimeSpan.FromSeconds(30));
        var handler = new FakeHandler(_ => response);

        var ex = await Assert.ThrowsAsync<TooManySandboxesException>(() => Sandbox.CreateAsync(
            "python-data-analysis", new SandboxCreateOptions { HttpMessageHandler = handler, BaseUrl = "http://x.test" }, Ct));

        Assert.Equal(TimeSpan.FromSeconds(30), ex.RetryAfter);
        Assert.Equal("too_many_sandboxes", ex.Code);
        Assert.IsAssignableFrom<SandboxUnavailableException>(ex);
        Assert.Single(handler.Requests);
    }

    [Fact]
    public async Task Dispose_DeletesTheSandboxOnce()
    {
        var server = new FakeSandboxServer();
        var sb = await Sandbox.CreateAsync("python-data-analysis", server.Options(), Ct);

        await sb.DisposeAsync();
        await sb.DisposeAsync();

        Assert.Equal(1, server.Count(HttpMethod.Delete, "/v1/sandboxes/sb-1"));
        Assert.Equal("/v1/sandboxes/sb-1", server.Requests.Single(r => r.Method == HttpMethod.Delete).PathAndQuery);
    }

    [Fact]
    public async Task Dispose_WhenTheSandboxHasAlreadyEnded_DoesNotThrow()
    {
        var server = new FakeSandboxServer();
        var sb = await Sandbox.CreateAsync("python-data-analysis", server.Options(), Ct);
        server.NextDeleteResponse = FakeHandler.Problem(HttpStatusCode.NotFound, "sandbox_not_found");

        await sb.DisposeAsync();

        Assert.Equal(1, server.Count(HttpMethod.Delete, "/v1/sandboxes/"));
    }

    [Fact]
    public async Task Dispose_WhenTheServerFailsToEndIt_ThrowsSoTheLeakIsSeen()
    {
        var server = new FakeSandboxServer();
        var sb = await Sandbox.CreateAsync("python-data-analysis", server.Options(), Ct);
        server.NextDeleteResponse = FakeHandler.Problem(HttpStatusCode.InternalServerError, "internal");

        var ex = await Assert.ThrowsAsync<SandboxApiException>(async () => await sb.DisposeAsync());

        Assert.Equal(HttpStatusCode.InternalServerError, ex.StatusCode);
    }

    [Fact]
    public async Task Kill_EndsItOnce_ThenDisposeSendsNothingMore()
    {
        var server = new FakeSandboxServer();
        var sb = await Sandbox.CreateAsync("python-data-analysis", server.Options(), Ct);

        Assert.True(await sb.KillAsync(Ct));
        Assert.False(await sb.KillAsync(Ct));
        await sb.DisposeAsync();

        Assert.Equal(1, server.Count(HttpMethod.Delete, "/v1/sandboxes/"));
    }

    [Fact]
    public async Task KillSandbox_WhenUnknown_ReturnsFalse()
    {
        var server = new FakeSandboxServer();
        using var client = server.Client();

        Assert.False(await client.KillSandboxAsync("nope", Ct));
    }

    [Fact]
    public async Task Dispose_ReleasesTheClientItCreated()
    {
        var server = new FakeSandboxServer();
        var sb = await Sandbox.CreateAsync("python-data-analysis", server.Options(), Ct);

        await sb.DisposeAsync();

        await Assert.ThrowsAsync<ObjectDisposedException>(() => sb.GetInfoAsync(Ct));
    }

    [Fact]
    public async Task Dispose_OfASandboxFromAGivenClient_LeavesTheClientUsable()
    {
        var server = new FakeSandboxServer();
        using var client = server.Client();
        var sb = await Sandbox.CreateAsync("python-data-analysis", new SandboxCreateOptions { Client = client }, Ct);

        await sb.DisposeAsync();

        Assert.Empty(await client.ListSandboxesAsync(Ct));
    }

    [Fact]
    public async Task Connect_FindsTheSandbox_AndDisposeDoesNotEndIt()
    {
        var server = new FakeSandboxServer();
        using var client = server.Client();
        await using var created = await client.CreateSandboxAsync("cpp-algorithm", cancellationToken: Ct);

        var attached = await client.ConnectSandboxAsync(created.Id, Ct);
        await attached.DisposeAsync();

        Assert.Equal("cpp-algorithm", attached.Template);
        Assert.False(attached.KillOnDispose);
        Assert.Equal(0, server.Count(HttpMethod.Delete, "/v1/sandboxes/"));
        Assert.Equal(SandboxState.Running, (await client.GetSandboxAsync(created.Id, Ct)).State);
    }

    [Fact]
    public async Task Connect_WhenUnknown_ThrowsSandboxNotFound()
    {
        var server = new FakeSandboxServer();
        using var client = server.Client();

        var ex = await Assert.ThrowsAsync<SandboxNotFoundException>(() => client.ConnectSandboxAsync("gone", Ct));

        Assert.Equal("sandbox_not_found", ex.Code);
    }

    [Fact]
    public async Task Calls_OnAnEndedSandbox_ThrowSandboxNotFound()
    {
        var server = new FakeSandboxServer();
        await using var sb = await Sandbox.CreateAsync("python-data-analysis", server.Options(), Ct);
        await sb.KillAsync(Ct);

        await Assert.ThrowsAsync<SandboxNotFoundException>(() => sb.RunAsync("1", cancellationToken: Ct));
        await Assert.ThrowsAsync<SandboxNotFoundException>(() => sb.Files.ReadAsync("a.txt", Ct));
        await Assert.ThrowsAsync<SandboxNotFoundException>(() => sb.KeepAliveAsync(cancellationToken: Ct));
    }

    [Fact]
    public async Task SandboxIds_AreEscapedInThePath()
    {
        var handler = new FakeHandler(HttpStatusCode.OK, """{"id":"a b/c","template":"t","state":"ended"}""");
        using var client = new SandboxClient(new SandboxClientOptions { HttpMessageHandler = handler });

        var info = await client.GetSandboxAsync("a b/c", Ct);

        Assert.Equal("/v1/sandboxes/a%20b%2Fc", handler.LastRequest.RequestUri!.AbsolutePath);
        Assert.Equal(SandboxState.Ended, info.State);
    }

    [Fact]
    public async Task ListSandboxes_ReadsEverySandbox()
    {
        var server = new FakeSandboxServer();
        using var client = server.Client();
        await using var a = await client.CreateSandboxAsync("python-data-analysis", cancellationToken: Ct);
        await using var b = await client.CreateSandboxAsync("go-algorithm", cancellationToken: Ct);

        var list = await client.ListSandboxesAsync(Ct);

        Assert.Equal(["sb-1", "sb-2"], list.Select(s => s.Id));
        Assert.Equal(["python-data-analysis", "go-algorithm"], list.Select(s => s.Template));
        Assert.Equal(HttpMethod.Get, server.Last.Method);
        Assert.Equal("/v1/sandboxes", server.Last.PathAndQuery);
    }

    [Fact]
    public async Task Run_PostsCodeAndOptionsToTheSandbox_AndReadsResultStateResetAndBuildCached()
    {
        var server = new FakeSandboxServer
        {
            RunResultJson = """{"stdout":"","output":"","exit_code":0,"status":"ok","result":"6","build_cached":true,"state_reset":true}""",
        };
        await using var sb = await Sandbox.CreateAsync("python-data-analysis", server.Options(), Ct);

        var result = await sb.RunAsync("df.y.sum()", new RunOptions
        {
            Stdin = "in",
            Env = new Dictionary<string, string> { ["A"] = "1" },
            TimeoutS = 10,
            CompileTimeoutS = 20,
        }, Ct);

        Assert.Equal(HttpMethod.Post, server.Last.Method);
        Assert.Equal("/v1/sandboxes/sb-1/run", server.Last.PathAndQuery);
        Assert.Equal("application/json", server.Last.Request.Headers.Accept.First().MediaType);
        Assert.Equal(
            """{"code":"df.y.sum()","stdin":"in","env":{"A":"1"},"timeout_s":10,"compile_timeout_s":20}""",
            Encoding.UTF8.GetString(server.Last.Body!));
        Assert.Equal("6", result.Result);
        Assert.True(result.BuildCached);
        Assert.True(result.StateReset);
        Assert.Contains("(interpreter state was reset)", result.ToString(), StringComparison.Ordinal);
    }

    [Fact]
    public async Task Run_WithoutOptions_SendsOnlyTheCode_AndStateResetDefaultsToFalse()
    {
        var server = new FakeSandboxServer { RunResultJson = """{"status":"ok"}""" };
        await using var sb = await Sandbox.CreateAsync("python-data-analysis", server.Options(), Ct);

        var result = await sb.RunAsync("x = 1", cancellationToken: Ct);

        Assert.Equal("""{"code":"x = 1"}""", Encoding.UTF8.GetString(server.Last.Body!));
        Assert.False(result.StateReset);
        Assert.Null(result.Result);
    }

    [Fact]
    public async Task KeepAlive_WithATimeout_SendsIt_AndUpdatesInfo()
    {
        var server = new FakeSandboxServer();
        await using var sb = await Sandbox.CreateAsync("python-data-analysis", server.Options(), Ct);

        var info = await sb.KeepAliveAsync(120, Ct);

        Assert.Equal(HttpMethod.Post, server.Last.Method);
        Assert.Equal("/v1/sandboxes/sb-1/keepalive", server.Last.PathAndQuery);
        Assert.Equal("""{"timeout_s":120}""", Encoding.UTF8.GetString(server.Last.Body!));
        Assert.Equal(new DateTimeOffset(2026, 11, 28, 21, 32, 0, TimeSpan.Zero), info.ExpiresAt);
        Assert.Same(info, sb.Info);
    }

    [Fact]
    public async Task KeepAlive_WithoutATimeout_SendsNoBody()
    {
        var server = new FakeSandboxServer();
        await using var sb = await Sandbox.CreateAsync("python-data-analysis", server.Options(), Ct);

        await sb.KeepAliveAsync(cancellationToken: Ct);

        Assert.Null(server.Last.Body);
    }

    [Fact]
    public async Task GetInfo_RefreshesInfo()
    {
        var server = new FakeSandboxServer();
        await using var sb = await Sandbox.CreateAsync("python-data-analysis", server.Options(), Ct);
        var before = sb.Info;

        var info = await sb.GetInfoAsync(Ct);

        Assert.Equal(HttpMethod.Get, server.Last.Method);
        Assert.Equal("/v1/sandboxes/sb-1", server.Last.PathAndQuery);
        Assert.NotSame(before, sb.Info);
        Assert.Same(info, sb.Info);
    }

    [Fact]
    public async Task Create_WhenNobodyListens_ThrowsConnectionExceptionNamingTheUrl()
    {
        var listener = new System.Net.Sockets.TcpListener(IPAddress.Loopback, 0);
        listener.Start();
        var port = ((IPEndPoint)listener.LocalEndpoint).Port;
        listener.Stop();
        var baseUrl = $"http://127.0.0.1:{port}";

        var ex = await Assert.ThrowsAsync<SandboxConnectionException>(
            () => Sandbox.CreateAsync("python-data-analysis", new SandboxCreateOptions { BaseUrl = baseUrl }, Ct));

        Assert.Contains(baseUrl, ex.Message, StringComparison.Ordinal);
        Assert.Contains("POST /v1/sandboxes", ex.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void SandboxInfo_ParsesUnknownStateAsUnknownAndNullMetadataAsEmpty()
    {
        var info = JsonSerializer.Deserialize(
            """{"id":"x","state":"hibernating","metadata":null,"created_at":null}""",
            Internal.SandboxJson.Default.SandboxInfo)!;

        Assert.Equal(SandboxState.Unknown, info.State);
        Assert.Empty(info.Metadata);
        Assert.Null(info.CreatedAt);
    }
}
