using System.Net;
using System.Text;
using SandboxVM.Testing;

namespace SandboxVM.Server.Tests;

/// <summary>
/// Callers with different keys share a server, never each other's sandboxes: another key's sandbox
/// is indistinguishable from one that does not exist.
/// </summary>
[Trait("tier", "unit")]
public class CallerIsolationTests
{
    private static CancellationToken Ct => TestContext.Current.CancellationToken;

    /// <summary>Every call that names a sandbox: method, path after /v1/sandboxes/{id}, JSON or raw body.</summary>
    public static TheoryData<string, string, string?> SandboxCalls => new()
    {
        { "GET", "", null },
        { "DELETE", "", null },
        { "POST", "/keepalive", """{"timeout_s": 60}""" },
        { "POST", "/run", """{"code": "print(open('/home/sandbox/secret.txt').read())"}""" },
        { "PUT", "/files?path=secret.txt", "raw:overwritten" },
        { "GET", "/files?path=secret.txt", null },
        { "GET", "/files?path=.&list=true", null },
        { "DELETE", "/files?path=secret.txt", null },
        { "POST", "/files/mkdir?path=planted", null },
        { "GET", "/artifacts", null },
        { "GET", "/artifacts/report.html", null },
    };

    private static HttpContent? Body(string? body) => body switch
    {
        null => null,
        _ when body.StartsWith("raw:", StringComparison.Ordinal) => new ByteArrayContent(Encoding.UTF8.GetBytes(body[4..])),
        _ => ApiServer.Json(body),
    };

    private static FakeAgentRuntime RuntimeWithASecret()
    {
        var runtime = new FakeAgentRuntime();
        runtime.InitialFiles["/home/sandbox/secret.txt"] = "alice's data"u8.ToArray();
        runtime.InitialFiles["/tmp/outputs/report.html"] = "<p>alice's report</p>"u8.ToArray();
        return runtime;
    }

    [Theory]
    [MemberData(nameof(SandboxCalls))]
    public async Task AnotherKeysSandbox_Is404_ExactlyLikeAnUnknownId(string method, string suffix, string? body)
    {
        using var keys = new TestKeys().WithDefaults();
        var runtime = RuntimeWithASecret();
        await using var server = await ApiServer.StartAsync([keys.Arg], runtime: runtime);
        string id = await server.CreateSandboxAsync(TestKeys.Alice);
        const string unknown = "sbx_00000000000000000000";

        var asBob = await server.SendAsync(new HttpMethod(method), $"/v1/sandboxes/{id}{suffix}", TestKeys.Bob, Body(body));
        var unknownAsBob = await server.SendAsync(new HttpMethod(method), $"/v1/sandboxes/{unknown}{suffix}", TestKeys.Bob, Body(body));

        string bobText = await asBob.Content.ReadAsStringAsync(Ct);
        Assert.True(asBob.StatusCode == HttpStatusCode.NotFound, $"{method} {suffix} as bob answered {(int)asBob.StatusCode}: {bobText}");
        Assert.Equal("sandbox_not_found", (await ApiServer.BodyOf(asBob)).GetProperty("code").GetString());
        // Byte for byte the answer for an id that never existed: nothing tells bob the sandbox is there.
        Assert.Equal((await unknownAsBob.Content.ReadAsStringAsync(Ct)).Replace(unknown, id, StringComparison.Ordinal), bobText);
        Assert.Equal(unknownAsBob.Content.Headers.ContentType, asBob.Content.Headers.ContentType);

        // Alice's sandbox is untouched: alive, her file as it was, nothing run in it.
        var vm = Assert.Single(runtime.Vms);
        Assert.Equal("alice's data", Encoding.UTF8.GetString(vm.Guest.Files["/home/sandbox/secret.txt"]));
        Assert.False(vm.Guest.Files.ContainsKey("/home/sandbox/planted"));
        Assert.Equal(0, vm.Guest.Execs);
        Assert.Equal(HttpStatusCode.OK, (await server.GetAsync($"/v1/sandboxes/{id}", TestKeys.Alice)).StatusCode);
    }

    [Theory]
    [MemberData(nameof(SandboxCalls))]
    public async Task TheOwner_CanMakeEveryCall(string method, string suffix, string? body)
    {
        using var keys = new TestKeys().WithDefaults();
        await using var server = await ApiServer.StartAsync([keys.Arg], runtime: RuntimeWithASecret());
        string id = await server.CreateSandboxAsync(TestKeys.Alice);

        var response = await server.SendAsync(new HttpMethod(method), $"/v1/sandboxes/{id}{suffix}", TestKeys.Alice, Body(body));

        Assert.True(response.IsSuccessStatusCode, $"{method} {suffix} as alice answered {(int)response.StatusCode}: {await response.Content.ReadAsStringAsync(Ct)}");
    }

    [Fact]
    public async Task TheList_ShowsOnlyTheCallersOwnSandboxes()
    {
        using var keys = new TestKeys().WithDefaults();
        await using var server = await ApiServer.StartAsync([keys.Arg]);
        string a1 = await server.CreateSandboxAsync(TestKeys.Alice);
        string a2 = await server.CreateSandboxAsync(TestKeys.Alice);
        string b1 = await server.CreateSandboxAsync(TestKeys.Bob);

        async Task<string[]> ListAsync(string key) =>
            [.. (await ApiServer.BodyOf(await server.GetAsync("/v1/sandboxes", key))).GetProperty("sandboxes").EnumerateArray()
                .Select(s => s.GetProperty("id").GetString()!).Order()];

        Assert.Equal(new[] { a1, a2 }.Order(), await ListAsync(TestKeys.Alice));
        Assert.Equal([b1], await ListAsync(TestKeys.Bob));
        Assert.Empty(await ListAsync(TestKeys.Admin)); // an admin's own list is its own too
    }

    [Fact]
    public async Task WithoutAKey_OrWithAnUnknownOne_EveryCallIs401()
    {
        using var keys = new TestKeys().WithDefaults();
        await using var server = await ApiServer.StartAsync([keys.Arg]);

        foreach (string? key in new[] { null, "svmk_not_a_key", TestKeys.Hash(TestKeys.Alice), "" })
        {
            var response = await server.SendAsync(HttpMethod.Post, "/v1/run", key, ApiServer.Json("""{"template": "py", "code": "print(1)"}"""));
            Assert.Equal(HttpStatusCode.Unauthorized, response.StatusCode);
            Assert.Equal("unauthorized", (await ApiServer.BodyOf(response)).GetProperty("code").GetString());
        }
        Assert.Equal(0, server.Runtime.Execs);
        Assert.Equal(HttpStatusCode.OK, (await server.GetAsync("/healthz")).StatusCode);
    }

    [Fact]
    public async Task MetricsAndAdminCalls_AreOnlyForAnAdminKey()
    {
        using var keys = new TestKeys().WithDefaults();
        await using var server = await ApiServer.StartAsync([keys.Arg]);
        string a = await server.CreateSandboxAsync(TestKeys.Alice);
        string b = await server.CreateSandboxAsync(TestKeys.Bob);

        foreach (string path in new[] { "/metrics", "/v1/admin/sandboxes", "/v1/admin/keys" })
        {
            var asBob = await server.GetAsync(path, TestKeys.Bob);
            Assert.True(asBob.StatusCode == HttpStatusCode.Forbidden, $"{path} as bob: {(int)asBob.StatusCode}");
            Assert.Equal("admin_required", (await ApiServer.BodyOf(asBob)).GetProperty("code").GetString());
            Assert.Equal(HttpStatusCode.OK, (await server.GetAsync(path, TestKeys.Admin)).StatusCode);
        }

        var all = await ApiServer.BodyOf(await server.GetAsync("/v1/admin/sandboxes", TestKeys.Admin));
        var owners = all.GetProperty("sandboxes").EnumerateArray().ToDictionary(s => s.GetProperty("id").GetString()!, s => s.GetProperty("owner").GetString());
        Assert.Equal("alice", owners[a]);
        Assert.Equal("bob", owners[b]);
        var listed = await ApiServer.BodyOf(await server.GetAsync("/v1/admin/keys", TestKeys.Admin));
        Assert.Equal(["alice", "bob", "ops"], listed.GetProperty("keys").EnumerateArray().Select(k => k.GetProperty("name").GetString()!).Order());
        Assert.DoesNotContain(TestKeys.Hash(TestKeys.Alice), listed.ToString());

        // An admin ends any sandbox; the owner then sees it gone.
        Assert.Equal(HttpStatusCode.NoContent, (await server.SendAsync(HttpMethod.Delete, $"/v1/admin/sandboxes/{b}", TestKeys.Admin)).StatusCode);
        Assert.Equal(HttpStatusCode.NotFound, (await server.GetAsync($"/v1/sandboxes/{b}", TestKeys.Bob)).StatusCode);
        Assert.Equal(HttpStatusCode.Forbidden, (await server.SendAsync(HttpMethod.Delete, $"/v1/admin/sandboxes/{a}", TestKeys.Bob)).StatusCode);
    }

    [Fact]
    public async Task TheSingleConfiguredKey_IsStillOneAdminCaller()
    {
        const string key = "legacy-key-0123456789";
        await using var server = await ApiServer.StartAsync(["--SandboxVM:ApiKey=" + key]);

        string id = await server.CreateSandboxAsync(key);

        Assert.Equal(HttpStatusCode.OK, (await server.GetAsync($"/v1/sandboxes/{id}", key)).StatusCode);
        Assert.Equal(HttpStatusCode.OK, (await server.GetAsync("/metrics", key)).StatusCode);
        Assert.Equal(HttpStatusCode.Unauthorized, (await server.GetAsync($"/v1/sandboxes/{id}")).StatusCode);
        Assert.Equal(HttpStatusCode.Unauthorized, (await server.GetAsync("/metrics", key + "x")).StatusCode);
    }

    [Fact]
    public async Task WithoutKeysOnLoopback_EveryCallerIsTheSameAnonymousOne_AsBefore()
    {
        await using var server = await ApiServer.StartAsync();

        string id = await server.CreateSandboxAsync();

        Assert.Equal(HttpStatusCode.OK, (await server.GetAsync($"/v1/sandboxes/{id}")).StatusCode);
        Assert.Equal(HttpStatusCode.OK, (await server.GetAsync($"/v1/sandboxes/{id}", "any-header-is-ignored")).StatusCode);
        Assert.Equal(HttpStatusCode.OK, (await server.GetAsync("/metrics")).StatusCode);
        Assert.Equal(HttpStatusCode.OK, (await server.GetAsync("/v1/admin/sandboxes")).StatusCode);
    }
}
