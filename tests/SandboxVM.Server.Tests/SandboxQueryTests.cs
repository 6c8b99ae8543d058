using System.Net;
using SandboxVM.Client;
using SandboxVM.Testing;

namespace SandboxVM.Server.Tests;

/// <summary>
/// Finding sandboxes again (the filtered list, PATCH of the lifetime) and the snapshot endpoints' checks,
/// over HTTP and through the C# SDK. Saving itself needs a runtime that can save: Core and Functional tests.
/// </summary>
[Trait("tier", "unit")]
public class SandboxQueryTests
{
    private static CancellationToken Ct => TestContext.Current.CancellationToken;

    private static SandboxClient ClientFor(ApiServer server, string key) => new(new SandboxClientOptions { BaseUrl = server.BaseUrl, ApiKey = key });

    [Fact]
    public async Task TheList_FiltersByEveryMetadataLabelGiven_AndByState_OnlyTheCallersOwn()
    {
        using var keys = new TestKeys().WithDefaults();
        await using var server = await ApiServer.StartAsync([keys.Arg]);
        using var alice = ClientFor(server, TestKeys.Alice);
        using var bob = ClientFor(server, TestKeys.Bob);
        var labels = new SandboxCreateOptions { Metadata = new Dictionary<string, string> { ["run"] = "42", ["role"] = "worker" } };
        await using var a1 = await alice.CreateSandboxAsync(ApiServer.Template, labels, Ct);
        await using var a2 = await alice.CreateSandboxAsync(ApiServer.Template,
            new SandboxCreateOptions { Metadata = new Dictionary<string, string> { ["run"] = "42", ["role"] = "judge" } }, Ct);
        await using var b1 = await bob.CreateSandboxAsync(ApiServer.Template, labels, Ct);

        var run42 = await alice.ListSandboxesAsync(new SandboxListFilter { Metadata = new Dictionary<string, string> { ["run"] = "42" } }, Ct);
        var workers = await alice.ListSandboxesAsync(new SandboxListFilter { Metadata = new Dictionary<string, string> { ["run"] = "42", ["role"] = "worker" } }, Ct);
        var running = await alice.ListSandboxesAsync(new SandboxListFilter { States = [SandboxState.Running] }, Ct);
        var paused = await alice.ListSandboxesAsync(new SandboxListFilter { States = [SandboxState.Paused] }, Ct);
        var other = await alice.ListSandboxesAsync(new SandboxListFilter { Metadata = new Dictionary<string, string> { ["run"] = "43" } }, Ct);

        Assert.Equal(new[] { a1.Id, a2.Id }.Order(), run42.Select(s => s.Id).Order());
        Assert.Equal([a1.Id], workers.Select(s => s.Id));
        Assert.Equal("worker", workers[0].Metadata["role"]);
        Assert.Equal(new[] { a1.Id, a2.Id }.Order(), running.Select(s => s.Id).Order());
        Assert.Empty(paused);
        Assert.Empty(other);
        Assert.Equal([b1.Id], (await bob.ListSandboxesAsync(new SandboxListFilter { Metadata = new Dictionary<string, string> { ["run"] = "42" } }, Ct)).Select(s => s.Id));
    }

    [Theory]
    [InlineData("state=sleeping", "state")]
    [InlineData("state=1", "state")]
    [InlineData("owner=bob", "owner")]
    public async Task AnUnknownFilter_Is400_NamingIt(string query, string field)
    {
        await using var server = await ApiServer.StartAsync();

        var response = await server.GetAsync("/v1/sandboxes?" + query);

        Assert.Equal(HttpStatusCode.BadRequest, response.StatusCode);
        var body = await ApiServer.BodyOf(response);
        Assert.Equal(("invalid_filter", field), (body.GetProperty("code").GetString(), body.GetProperty("field").GetString()));
    }

    [Fact]
    public async Task Patch_SetsANewLifetimeFromNow_AndAnOutOfRangeOrMissingOneIs400()
    {
        await using var server = await ApiServer.StartAsync();
        using var client = new SandboxClient(new SandboxClientOptions { BaseUrl = server.BaseUrl });
        await using var sandbox = await client.CreateSandboxAsync(ApiServer.Template, new SandboxCreateOptions { TimeoutS = 30 }, Ct);
        var before = DateTimeOffset.UtcNow;

        var info = await sandbox.SetTimeoutAsync(3000, Ct);
        var missing = await server.SendAsync(HttpMethod.Patch, $"/v1/sandboxes/{sandbox.Id}", content: ApiServer.Json("{}"));
        var negative = await Assert.ThrowsAnyAsync<SandboxApiException>(() => sandbox.SetTimeoutAsync(-5, Ct));

        Assert.Equal(3000, info.TimeoutS);
        Assert.InRange(info.ExpiresAt!.Value, before.AddSeconds(2990), DateTimeOffset.UtcNow.AddSeconds(3010));
        Assert.Equal(info.ExpiresAt, (await client.GetSandboxAsync(sandbox.Id, Ct)).ExpiresAt);
        Assert.Equal(HttpStatusCode.BadRequest, missing.StatusCode);
        Assert.Equal("missing_field", (await ApiServer.BodyOf(missing)).GetProperty("code").GetString());
        Assert.Equal("timeout_out_of_range", negative.Code);
    }

    [Theory]
    [InlineData("PATCH", "", """{"timeout_s": 60}""")]
    [InlineData("POST", "/snapshots", """{"name": "stolen"}""")]
    public async Task AnotherKeysSandbox_Is404ForPatchAndSnapshot_ExactlyLikeAnUnknownId(string method, string suffix, string body)
    {
        using var keys = new TestKeys().WithDefaults();
        await using var server = await ApiServer.StartAsync([keys.Arg]);
        string id = await server.CreateSandboxAsync(TestKeys.Alice);
        const string unknown = "sbx_00000000000000000000";

        var asBob = await server.SendAsync(new HttpMethod(method), $"/v1/sandboxes/{id}{suffix}", TestKeys.Bob, ApiServer.Json(body));
        var unknownAsBob = await server.SendAsync(new HttpMethod(method), $"/v1/sandboxes/{unknown}{suffix}", TestKeys.Bob, ApiServer.Json(body));

        Assert.Equal(HttpStatusCode.NotFound, asBob.StatusCode);
        Assert.Equal((await unknownAsBob.Content.ReadAsStringAsync(Ct)).Replace(unknown, id, StringComparison.Ordinal), await asBob.Content.ReadAsStringAsync(Ct));
        Assert.Equal(3600, (await ApiServer.BodyOf(await server.GetAsync($"/v1/sandboxes/{id}", TestKeys.Alice))).GetProperty("timeout_s").GetDouble());
    }

    [Fact]
    public async Task ARuntimeThatCannotSave_AnswersSnapshotsWithPauseUnsupported_AndTheListIsEmpty()
    {
        await using var server = await ApiServer.StartAsync();
        using var client = new SandboxClient(new SandboxClientOptions { BaseUrl = server.BaseUrl });
        await using var sandbox = await client.CreateSandboxAsync(ApiServer.Template, new SandboxCreateOptions(), Ct);

        var save = await Assert.ThrowsAnyAsync<SandboxApiException>(() => sandbox.SnapshotAsync("base", Ct));
        var create = await Assert.ThrowsAnyAsync<SandboxApiException>(() => client.CreateSandboxFromSnapshotAsync("base", null, Ct));
        var badName = await server.PostJsonAsync($"/v1/sandboxes/{sandbox.Id}/snapshots", """{"name": "../up"}""");

        Assert.Equal((HttpStatusCode.Conflict, "pause_unsupported"), (save.StatusCode, save.Code));
        Assert.Equal((HttpStatusCode.Conflict, "pause_unsupported"), (create.StatusCode, create.Code));
        Assert.Equal(HttpStatusCode.Conflict, badName.StatusCode); // the runtime is checked first: nothing to name
        Assert.Empty(await client.ListSnapshotsAsync(Ct));
        Assert.False(await client.DeleteSnapshotAsync("base", Ct));
    }
}
