using System.Net;
using SandboxVM.Testing;

namespace SandboxVM.Server.Tests;

/// <summary>The keys file is read again when it changes, while the server runs; keys never reach a log.</summary>
[Trait("tier", "unit")]
public class KeyRotationTests
{
    private static CancellationToken Ct => TestContext.Current.CancellationToken;

    private const string AliceNew = "svmk_alice_rotated_0123456789abcdefghijklmnopq";
    private const string Carol = "svmk_carol_k3y_0123456789abcdefghijklmnopqrstuv";

    [Fact]
    public async Task RewritingTheKeysFile_RotatesKeys_WithoutARestart()
    {
        using var keys = new TestKeys().WithDefaults();
        await using var server = await ApiServer.StartAsync([keys.Arg]);
        string id = await server.CreateSandboxAsync(TestKeys.Alice);

        // Alice gets a new key (same name: her sandboxes stay hers), bob is removed, carol is added.
        keys.Write(TestKeys.Entry("alice", AliceNew), TestKeys.Entry("carol", Carol), TestKeys.Entry("ops", TestKeys.Admin, admin: true));
        await WaitForStatusAsync(server, TestKeys.Alice, HttpStatusCode.Unauthorized);

        Assert.Equal(HttpStatusCode.OK, (await server.GetAsync($"/v1/sandboxes/{id}", AliceNew)).StatusCode);
        Assert.Equal(HttpStatusCode.Unauthorized, (await server.GetAsync("/v1/sandboxes", TestKeys.Bob)).StatusCode);
        Assert.Equal(HttpStatusCode.NotFound, (await server.GetAsync($"/v1/sandboxes/{id}", Carol)).StatusCode);
        // The reload's log line may follow the new keys by a moment.
        await KeyLimitTests.WaitUntilAsync(() => server.Logs.Lines.Any(l => l.Contains("keys file", StringComparison.Ordinal) && l.Contains("3 keys", StringComparison.Ordinal)));
    }

    [Fact]
    public async Task ABrokenKeysFile_KeepsTheKeysLoadedBefore_AndSaysWhatIsWrong()
    {
        using var keys = new TestKeys().WithDefaults();
        await using var server = await ApiServer.StartAsync([keys.Arg]);

        keys.WriteRaw("""{"keys": [{"name": "alice", "sha256": "not-hex", "admin": false}]}""");
        await KeyLimitTests.WaitUntilAsync(() => server.Logs.Lines.Any(l => l.Contains("sha256", StringComparison.Ordinal) && l.StartsWith("Error", StringComparison.Ordinal)));

        Assert.Equal(HttpStatusCode.OK, (await server.GetAsync("/v1/sandboxes", TestKeys.Alice)).StatusCode);
        Assert.Equal(HttpStatusCode.OK, (await server.GetAsync("/v1/sandboxes", TestKeys.Bob)).StatusCode);
        Assert.Contains(server.Logs.Lines, l => l.Contains(keys.Path, StringComparison.Ordinal) && l.Contains("keeping", StringComparison.Ordinal));

        // Fixed: read again.
        keys.Write(TestKeys.Entry("carol", Carol));
        await WaitForStatusAsync(server, Carol, HttpStatusCode.OK);
        Assert.Equal(HttpStatusCode.Unauthorized, (await server.GetAsync("/v1/sandboxes", TestKeys.Alice)).StatusCode);
    }

    [Theory]
    [InlineData("""{"keys": [{"name": "a", "sha256": "00", "admin": false}]}""", "sha256")]
    [InlineData("""{"keys": [{"name": "a", "sha256": "0000000000000000000000000000000000000000000000000000000000000000"}, {"name": "a", "sha256": "1111111111111111111111111111111111111111111111111111111111111111"}]}""", "twice")]
    [InlineData("""{"keys": [{"name": "a", "sha256": "0000000000000000000000000000000000000000000000000000000000000000", "limits": {"sandboxes": 0}}]}""", "sandboxes")]
    [InlineData("""{"keys": [{"name": "a", "key": "plain-text-key"}]}""", "key")]
    [InlineData("""not json""", "JSON")]
    public void ABadKeysFile_StopsTheServerAtStart_NamingTheProblem(string text, string named)
    {
        using var keys = new TestKeys();
        keys.WriteRaw(text);

        var e = Assert.ThrowsAny<Exception>(() => ApiServer.Build([keys.Arg], new FakeAgentRuntime(), new LogCapture()));

        Assert.Contains(keys.Path, e.Message);
        Assert.Contains(named, e.Message);
    }

    [Fact]
    public void AMissingKeysFile_StopsTheServerAtStart()
    {
        using var keys = new TestKeys();

        var e = Assert.ThrowsAny<Exception>(() => ApiServer.Build([keys.Arg], new FakeAgentRuntime(), new LogCapture()));

        Assert.Contains(keys.Path, e.Message);
    }

    [Fact]
    public async Task NoKeyOrHash_EverReachesALogLineOrAnAnswer()
    {
        using var keys = new TestKeys().WithDefaults(aliceLimits: new { runs_per_minute = 1 });
        var runtime = new FakeAgentRuntime();
        runtime.InitialFiles["/tmp/outputs/r.txt"] = "x"u8.ToArray();
        await using var server = await ApiServer.StartAsync([keys.Arg], runtime: runtime);
        var answers = new List<string>();
        async Task CallAsync(HttpMethod method, string path, string? key, HttpContent? content = null)
        {
            var response = await server.SendAsync(method, path, key, content);
            answers.Add(response.ToString() + await response.Content.ReadAsStringAsync(Ct));
        }

        string id = await server.CreateSandboxAsync(TestKeys.Alice);
        await CallAsync(HttpMethod.Post, $"/v1/sandboxes/{id}/run", TestKeys.Alice, ApiServer.Json("""{"code": "print(1)"}"""));
        await CallAsync(HttpMethod.Post, $"/v1/sandboxes/{id}/run", TestKeys.Alice, ApiServer.Json("""{"code": "print(1)"}""")); // 429
        await CallAsync(HttpMethod.Get, $"/v1/sandboxes/{id}/artifacts/r.txt", TestKeys.Alice);
        await CallAsync(HttpMethod.Get, $"/v1/sandboxes/{id}", TestKeys.Bob);                       // 404
        await CallAsync(HttpMethod.Get, "/metrics", TestKeys.Bob);                                    // 403
        await CallAsync(HttpMethod.Get, "/v1/sandboxes", TestKeys.Alice + "x");                     // 401
        await CallAsync(HttpMethod.Get, "/v1/sandboxes", "Basic " + TestKeys.Alice);
        await CallAsync(HttpMethod.Get, "/v1/admin/keys", TestKeys.Admin);
        await CallAsync(HttpMethod.Delete, $"/v1/sandboxes/{id}", TestKeys.Alice);
        keys.Write(TestKeys.Entry("alice", AliceNew));
        await WaitForStatusAsync(server, AliceNew, HttpStatusCode.OK);

        string logs = server.Logs.All;
        Assert.NotEmpty(server.Logs.Lines);
        foreach (string secret in new[] { TestKeys.Alice, TestKeys.Bob, TestKeys.Admin, AliceNew })
        {
            Assert.DoesNotContain(secret, logs);
            Assert.DoesNotContain(TestKeys.Hash(secret), logs);
            Assert.DoesNotContain(secret[..16], logs); // not even a prefix
            foreach (string answer in answers)
            {
                Assert.DoesNotContain(secret, answer);
                Assert.DoesNotContain(TestKeys.Hash(secret), answer);
            }
        }
    }

    private static async Task WaitForStatusAsync(ApiServer server, string key, HttpStatusCode status) =>
        await KeyLimitTests.WaitUntilAsync(async () => (await server.GetAsync("/v1/sandboxes", key)).StatusCode == status);
}
