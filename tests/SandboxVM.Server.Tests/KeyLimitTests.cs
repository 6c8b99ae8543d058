using System.Net;
using System.Text.Json;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Hosting.Server;
using Microsoft.AspNetCore.Hosting.Server.Features;
using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Time.Testing;
using SandboxVM.Protocol;
using SandboxVM.Testing;

namespace SandboxVM.Server.Tests;

/// <summary>
/// Per-key limits: past each one a 429 problem with Retry-After, for that key only. Budgets a minute
/// refill on the server's clock, here a fake one: a refill comes when the test moves the clock, never
/// because a loaded host made the test slower than a refill period.
/// </summary>
[Trait("tier", "unit")]
public class KeyLimitTests
{
    private static CancellationToken Ct => TestContext.Current.CancellationToken;

    private static async Task AssertTooMany(HttpResponseMessage response, string code)
    {
        string text = await response.Content.ReadAsStringAsync(Ct);
        Assert.True(response.StatusCode == HttpStatusCode.TooManyRequests, $"expected 429 {code}, got {(int)response.StatusCode}: {text}");
        Assert.Equal("application/problem+json", response.Content.Headers.ContentType?.MediaType);
        Assert.Equal(code, (await ApiServer.BodyOf(response)).GetProperty("code").GetString());
        var retry = response.Headers.RetryAfter?.Delta;
        Assert.True(retry is { TotalSeconds: >= 1 }, $"Retry-After: {response.Headers.RetryAfter}");
    }

    [Fact]
    public async Task LiveSandboxes_PastTheKeysLimit_Are429_ForThatKeyOnly()
    {
        using var keys = new TestKeys().WithDefaults(aliceLimits: new { sandboxes = 1 });
        await using var server = await ApiServer.StartAsync([keys.Arg]);
        string first = await server.CreateSandboxAsync(TestKeys.Alice);

        await AssertTooMany(await server.PostJsonAsync("/v1/sandboxes", """{"template": "py"}""", TestKeys.Alice), "too_many_sandboxes");
        Assert.Single(server.Runtime.Vms); // the refused one never took a VM

        await server.CreateSandboxAsync(TestKeys.Bob);
        Assert.Equal(HttpStatusCode.NoContent, (await server.SendAsync(HttpMethod.Delete, $"/v1/sandboxes/{first}", TestKeys.Alice)).StatusCode);
        await server.CreateSandboxAsync(TestKeys.Alice);
    }

    [Fact]
    public async Task RunsPerMinute_PastTheKeysLimit_Are429_WithRetryAfter()
    {
        using var keys = new TestKeys().WithDefaults(aliceLimits: new { runs_per_minute = 2 });
        var time = new FakeTimeProvider();
        await using var server = await ApiServer.StartAsync([keys.Arg], services: s => s.AddSingleton<TimeProvider>(time));
        string id = await server.CreateSandboxAsync(TestKeys.Alice);
        const string run = """{"template": "py", "code": "print(1)"}""";

        Assert.Equal(HttpStatusCode.OK, (await server.PostJsonAsync("/v1/run", run, TestKeys.Alice)).StatusCode);
        Assert.Equal(HttpStatusCode.OK, (await server.PostJsonAsync($"/v1/sandboxes/{id}/run", """{"code": "print(1)"}""", TestKeys.Alice)).StatusCode);

        await AssertTooMany(await server.PostJsonAsync("/v1/run", run, TestKeys.Alice), "rate_limited");
        await AssertTooMany(await server.PostJsonAsync($"/v1/sandboxes/{id}/run", """{"code": "print(1)"}""", TestKeys.Alice), "rate_limited");
        Assert.Equal(2, server.Runtime.Execs);
        Assert.Equal(HttpStatusCode.OK, (await server.PostJsonAsync("/v1/run", run, TestKeys.Bob)).StatusCode);

        // Two a minute refill one every 30 s: one more run then, not two.
        time.Advance(TimeSpan.FromSeconds(29));
        await AssertTooMany(await server.PostJsonAsync("/v1/run", run, TestKeys.Alice), "rate_limited");
        time.Advance(TimeSpan.FromSeconds(1));
        Assert.Equal(HttpStatusCode.OK, (await server.PostJsonAsync("/v1/run", run, TestKeys.Alice)).StatusCode);
        await AssertTooMany(await server.PostJsonAsync("/v1/run", run, TestKeys.Alice), "rate_limited");
    }

    private const string Run = """{"template": "py", "code": "print(1)"}""";

    /// <summary>Alice may run one at a time; every exec waits for the gate.</summary>
    private static async Task<(ApiServer Server, TestKeys Keys, TaskCompletionSource Gate)> StartOneRunAtATimeAsync()
    {
        var keys = new TestKeys().WithDefaults(aliceLimits: new { concurrent_runs = 1 });
        var gate = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var runtime = new FakeAgentRuntime { ExecGate = () => gate.Task };
        return (await ApiServer.StartAsync([keys.Arg], runtime: runtime), keys, gate);
    }

    [Fact]
    public async Task ConcurrentRuns_PastTheKeysLimit_Are429_UntilOneEnds()
    {
        var (server, keys, gate) = await StartOneRunAtATimeAsync();
        using var _ = keys;
        await using var __ = server;
        var runtime = server.Runtime;
        const string run = Run;

        var held = server.PostJsonAsync("/v1/run", run, TestKeys.Alice);
        await WaitUntilAsync(() => runtime.Execs == 1);

        await AssertTooMany(await server.PostJsonAsync("/v1/run", run, TestKeys.Alice), "too_many_runs");
        gate.SetResult();
        Assert.Equal(HttpStatusCode.OK, (await held).StatusCode);
        Assert.Equal(HttpStatusCode.OK, (await server.PostJsonAsync("/v1/run", run, TestKeys.Alice)).StatusCode);
    }

    [Fact]
    public async Task ConcurrentRuns_OfOtherKeys_AreNotCounted()
    {
        var (server, keys, gate) = await StartOneRunAtATimeAsync();
        using var _ = keys;
        await using var __ = server;
        var runtime = server.Runtime;
        const string run = Run;

        var alice = server.PostJsonAsync("/v1/run", run, TestKeys.Alice);
        var bob = server.PostJsonAsync("/v1/run", run, TestKeys.Bob);
        await WaitUntilAsync(() => runtime.Execs == 2);
        gate.SetResult();

        Assert.Equal(HttpStatusCode.OK, (await alice).StatusCode);
        Assert.Equal(HttpStatusCode.OK, (await bob).StatusCode);
    }

    [Fact]
    public async Task ToolSearches_PastTheKeysSearchBudget_Are429()
    {
        using var keys = new TestKeys().WithDefaults(aliceLimits: new { searches_per_minute = 1 });
        var tools = new FakeToolRunner
        {
            Respond = r => FakeToolRunner.ArgvOf(r)[0] == "fetch"
                ? FakeToolRunner.Ok("""{"status": 200, "url": "https://example.com/", "text": "page"}""")
                : FakeToolRunner.Ok("""{"results": []}"""),
        };
        var time = new FakeTimeProvider();
        await using var server = await ApiServer.StartAsync([keys.Arg], services: s => s.AddSingleton<IToolRunner>(tools).AddSingleton<TimeProvider>(time));

        Assert.Equal(HttpStatusCode.OK, (await server.PostJsonAsync("/v1/tools/search", """{"query": "a"}""", TestKeys.Alice)).StatusCode);
        await AssertTooMany(await server.PostJsonAsync("/v1/tools/search", """{"query": "b"}""", TestKeys.Alice), "rate_limited");

        Assert.Single(tools.Requests); // the refused search never reached the tools sandbox
        Assert.Equal(HttpStatusCode.OK, (await server.PostJsonAsync("/v1/tools/search", """{"query": "c"}""", TestKeys.Bob)).StatusCode);
        // A fetch is not a search.
        Assert.Equal(HttpStatusCode.OK, (await server.PostJsonAsync("/v1/tools/fetch", """{"url": "https://example.com/"}""", TestKeys.Alice)).StatusCode);

        // A minute later Alice may search again.
        time.Advance(TimeSpan.FromMinutes(1));
        Assert.Equal(HttpStatusCode.OK, (await server.PostJsonAsync("/v1/tools/search", """{"query": "d"}""", TestKeys.Alice)).StatusCode);
        Assert.Equal(3, tools.Requests.Count(r => FakeToolRunner.ArgvOf(r)[0] != "fetch"));
    }

    [Fact]
    public async Task SearchesFromInsideASandbox_HaveAPerSandboxAndAPerKeyBudget()
    {
        await using var search = await FakeSearchService.StartAsync();
        using var keys = new TestKeys().WithDefaults(aliceLimits: new { searches_per_minute = 3 });
        var time = new FakeTimeProvider();
        await using var server = await ApiServer.StartAsync(
        [
            keys.Arg, "--SandboxVM:SearchesPerMinutePerSandbox=2", "--SandboxVM:SearchProvider=searxng", "--SandboxVM:SearchBaseUrl=" + search.BaseUrl,
        ], services: s => s.AddSingleton<TimeProvider>(time));

        await server.CreateSandboxAsync(TestKeys.Alice, ApiServer.WebTemplate);
        await server.CreateSandboxAsync(TestKeys.Alice, ApiServer.WebTemplate);
        await server.CreateSandboxAsync(TestKeys.Bob, ApiServer.WebTemplate);
        var vms = server.Runtime.Vms.ToArray();

        Assert.Equal(FrameType.Response, (await vms[0].Guest.SearchAsync("one", Ct)).Type);
        Assert.Equal(FrameType.Response, (await vms[0].Guest.SearchAsync("two", Ct)).Type);
        AssertRefused(await vms[0].Guest.SearchAsync("three", Ct), "sandbox");  // this sandbox's 2 a minute
        Assert.Equal(FrameType.Response, (await vms[1].Guest.SearchAsync("four", Ct)).Type);
        AssertRefused(await vms[1].Guest.SearchAsync("five", Ct), "key");       // alice's 3 a minute
        Assert.Equal(FrameType.Response, (await vms[2].Guest.SearchAsync("six", Ct)).Type); // bob's own budget
        Assert.Equal(4, search.Queries.Count);

        // 30 s later: one more search for the first sandbox (2 a minute) and one for alice (3 a minute: one
        // every 20 s), so the second sandbox, within its own budget, is refused for alice's.
        time.Advance(TimeSpan.FromSeconds(30));
        Assert.Equal(FrameType.Response, (await vms[0].Guest.SearchAsync("seven", Ct)).Type);
        AssertRefused(await vms[1].Guest.SearchAsync("eight", Ct), "key");
        Assert.Equal(5, search.Queries.Count);
    }

    private static void AssertRefused(Frame frame, string which)
    {
        Assert.Equal(FrameType.Error, frame.Type);
        var error = JsonSerializer.Deserialize(frame.Payload.Span, ProtocolJson.Default.ErrorBody)!;
        Assert.Equal("rate_limited", error.Code);
        Assert.Contains(which, error.Message);
        Assert.DoesNotContain(which == "key" ? "sandbox" : "key", error.Message);
    }

    internal static Task WaitUntilAsync(Func<bool> condition) => WaitUntilAsync(() => Task.FromResult(condition()));

    internal static async Task WaitUntilAsync(Func<Task<bool>> condition)
    {
        var deadline = DateTime.UtcNow + TimeSpan.FromSeconds(20);
        while (!await condition())
        {
            Assert.True(DateTime.UtcNow < deadline, "the condition did not become true within 20 s");
            await Task.Delay(20, Ct);
        }
    }
}

/// <summary>A searxng-compatible search service on loopback that records every query.</summary>
internal sealed class FakeSearchService : IAsyncDisposable
{
    private readonly WebApplication _app;

    private FakeSearchService(WebApplication app, string baseUrl)
    {
        _app = app;
        BaseUrl = baseUrl;
    }

    public string BaseUrl { get; }

    public System.Collections.Concurrent.ConcurrentQueue<string> Queries { get; } = new();

    public static async Task<FakeSearchService> StartAsync()
    {
        var builder = WebApplication.CreateSlimBuilder();
        builder.WebHost.UseUrls("http://127.0.0.1:0");
        builder.Logging.ClearProviders();
        var app = builder.Build();
        FakeSearchService? self = null;
        app.MapGet("/search", (HttpContext context) =>
        {
            self!.Queries.Enqueue(context.Request.Query["q"].ToString());
            return Results.Json(new { results = new[] { new { title = "t", url = "https://example.com/", content = "c" } } });
        });
        await app.StartAsync(TestContext.Current.CancellationToken);
        string address = app.Services.GetRequiredService<IServer>().Features.Get<IServerAddressesFeature>()!.Addresses.First();
        self = new FakeSearchService(app, address);
        return self;
    }

    public async ValueTask DisposeAsync()
    {
        await _app.StopAsync(CancellationToken.None);
        await _app.DisposeAsync();
    }
}
