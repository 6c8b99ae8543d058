using System.Net;
using System.Runtime.Versioning;
using System.Text.Json;

namespace SandboxVM.Server.Tests;

/// <summary>Making keys and keys file entries (what `sandboxvm keys new` does), and a server taking them.</summary>
[SupportedOSPlatform("linux")]
[Trait("tier", "unit")]
public class ApiKeysTests
{
    [Fact]
    public void ANewKey_Is256RandomBits_WithAPrefix_AndItsHashIsWhatAnOperatorComputes()
    {
        string a = ApiKeys.NewKey();
        string b = ApiKeys.NewKey();

        Assert.StartsWith(ApiKeys.Prefix, a);
        Assert.Equal(ApiKeys.Prefix.Length + 43, a.Length);
        Assert.All(a[ApiKeys.Prefix.Length..], c => Assert.True(char.IsAsciiLetterOrDigit(c) || c is '-' or '_', $"'{c}'"));
        Assert.NotEqual(a, b);
        Assert.Equal(TestKeys.Hash(a), ApiKeys.Hash(a));
    }

    [Fact]
    public async Task WriteEntry_AddsThenRotates_AndARunningServerTakesEachChange()
    {
        using var keys = new TestKeys().Write(TestKeys.Entry("ops", TestKeys.Admin, admin: true));
        await using var server = await ApiServer.StartAsync([keys.Arg]);
        string first = ApiKeys.NewKey();

        ApiKeys.WriteEntry(keys.Path, "alice", ApiKeys.Hash(first), admin: false, new ApiKeys.LimitsEntry { Sandboxes = 1 });
        await KeyLimitTests.WaitUntilAsync(async () => (await server.GetAsync("/v1/sandboxes", first)).StatusCode == HttpStatusCode.OK);
        string id = await server.CreateSandboxAsync(first);
        Assert.Equal(HttpStatusCode.TooManyRequests, (await server.PostJsonAsync("/v1/sandboxes", """{"template": "py"}""", first)).StatusCode);

        string second = ApiKeys.NewKey();
        ApiKeys.WriteEntry(keys.Path, "alice", ApiKeys.Hash(second), admin: false, null);
        await KeyLimitTests.WaitUntilAsync(async () => (await server.GetAsync("/v1/sandboxes", first)).StatusCode == HttpStatusCode.Unauthorized);

        Assert.Equal(HttpStatusCode.OK, (await server.GetAsync($"/v1/sandboxes/{id}", second)).StatusCode);
        Assert.Equal(HttpStatusCode.OK, (await server.GetAsync("/metrics", TestKeys.Admin)).StatusCode);
        using var doc = JsonDocument.Parse(File.ReadAllText(keys.Path));
        Assert.Equal(["ops", "alice"], doc.RootElement.GetProperty("keys").EnumerateArray().Select(k => k.GetProperty("name").GetString()));
        Assert.Equal(UnixFileMode.UserRead | UnixFileMode.UserWrite, File.GetUnixFileMode(keys.Path));
    }

    [Fact]
    public void WriteEntry_RefusesWhatAServerWouldRefuse_AndLeavesTheFileAsItWas()
    {
        using var keys = new TestKeys().Write(TestKeys.Entry("ops", TestKeys.Admin, admin: true));
        string before = File.ReadAllText(keys.Path);

        Assert.Throws<FormatException>(() => ApiKeys.WriteEntry(keys.Path, "bad name", ApiKeys.Hash("k"), false, null));
        Assert.Throws<FormatException>(() => ApiKeys.WriteEntry(keys.Path, "default", ApiKeys.Hash("k"), false, null));
        Assert.Throws<FormatException>(() => ApiKeys.WriteEntry(keys.Path, "x", ApiKeys.Hash("k"), false, new ApiKeys.LimitsEntry { RunsPerMinute = 0 }));

        Assert.Equal(before, File.ReadAllText(keys.Path));
    }

    [Fact]
    public void Parse_FillsMissingLimitsWithTheServersDefaults()
    {
        var defaults = new SandboxVM.Core.KeyLimitOptions { Sandboxes = 3, RunsPerMinute = 7, ConcurrentRuns = 2, SearchesPerMinute = 5 };
        var callers = ApiKeys.Parse($$$"""
            {
              // comments and trailing commas are fine in a hand-edited file
              "keys": [
                {"name": "alice", "sha256": "{{{TestKeys.Hash("a")}}}", "limits": {"runs_per_minute": 100}},
                {"name": "ops", "sha256": "{{{TestKeys.Hash("o").ToUpperInvariant()}}}", "admin": true},
              ]
            }
            """, "keys.json", defaults);

        var alice = callers[TestKeys.Hash("a")];
        Assert.Equal(new CallerLimits(3, 100, 2, 5), alice.Limits);
        Assert.False(alice.Admin);
        Assert.True(callers[TestKeys.Hash("o")].Admin);
    }
}
