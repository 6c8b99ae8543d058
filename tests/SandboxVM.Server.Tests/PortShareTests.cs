using System.Net;
using System.Net.Http.Json;
using System.Text.Json;
using Microsoft.Extensions.Time.Testing;
using SandboxVM.Client;
using SandboxVM.Core.Runs;

namespace SandboxVM.Server.Tests;

/// <summary>Share links (<see cref="PortShares"/>): the token alone, on a fake clock.</summary>
[Trait("tier", "unit")]
public sealed class PortShareTokenTests
{
    private readonly FakeTimeProvider _time = new(DateTimeOffset.Parse("2026-12-06T07:00:00Z", System.Globalization.CultureInfo.InvariantCulture));

    private static string Code(Action check) => Assert.Throws<RunRequestException>(check).Code;

    [Fact]
    public void AToken_NamesItsSandboxAndPort_UntilItExpires()
    {
        var shares = new PortShares(_time);
        string token = shares.Mint("sbx_1", 8000, _time.GetUtcNow().AddSeconds(60));

        Assert.Equal(("sbx_1", 8000), shares.Check(token));
        _time.Advance(TimeSpan.FromSeconds(59));
        Assert.Equal(("sbx_1", 8000), shares.Check(token));
        _time.Advance(TimeSpan.FromSeconds(1));
        var expired = Assert.Throws<RunRequestException>(() => shares.Check(token));
        Assert.Equal(ProblemCodes.ShareExpired, expired.Code);
        Assert.Equal(RefusalKind.Gone, expired.Kind);
    }

    [Fact]
    public void AChangedMadeUpOrOtherServersToken_IsNotFound()
    {
        var shares = new PortShares(_time);
        string token = shares.Mint("sbx_1", 8000, _time.GetUtcNow().AddHours(1));
        string signature = token[(token.IndexOf('.') + 1)..];
        // Another port (or sandbox, or a later expiry) with the signature of the real one.
        string otherPort = System.Buffers.Text.Base64Url.EncodeToString(
            System.Text.Encoding.UTF8.GetBytes($"sbx_1:22:{_time.GetUtcNow().AddHours(1).ToUnixTimeSeconds()}")) + "." + signature;

        Assert.Equal(ProblemCodes.ShareNotFound, Code(() => shares.Check(otherPort)));
        Assert.Equal(ProblemCodes.ShareNotFound, Code(() => new PortShares(_time).Check(token))); // a restarted server
        Assert.Equal(ProblemCodes.ShareNotFound, Code(() => shares.Check("garbage")));
        Assert.Equal(ProblemCodes.ShareNotFound, Code(() => shares.Check("!!.??")));
        Assert.Equal(ProblemCodes.ShareNotFound, Code(() => shares.Check(token[..^2])));
    }
}

/// <summary>A share link through the real server: a port served without the key, and nothing else.</summary>
[Trait("tier", "integration")]
public sealed class PortShareEndpointTests(LocalAgentServer server) : IClassFixture<LocalAgentServer>
{
    private static CancellationToken Ct => TestContext.Current.CancellationToken;

    private readonly LocalAgentServer _server = server.OrSkip();


    private async Task<JsonElement> ShareAsync(string id, object body, HttpStatusCode expected)
    {
        using var response = await _server.Http.PostAsJsonAsync($"v1/sandboxes/{id}/shares", body, Ct);
        string text = await response.Content.ReadAsStringAsync(Ct);
        Assert.True(response.StatusCode == expected, $"{(int)response.StatusCode}: {text}");
        return JsonDocument.Parse(text).RootElement.Clone();
    }

    [Fact]
    public async Task ALink_ServesThatPortWithoutTheKey_UntilTheSandboxEnds()
    {
        var sb = await _server.Client.CreateSandboxAsync(LocalAgentServer.Python, cancellationToken: Ct);
        string id = sb.Id;
        try
        {
            await sb.Files.WriteAsync("site/hello.txt", "shared\n", Ct);
            int port = LocalAgentServer.FreePort();
            await sb.Commands.StartAsync(["python3", "-m", "http.server", port.ToString(), "--bind", "127.0.0.1"], new CommandOptions { Cwd = "site" }, Ct);
            var before = DateTimeOffset.UtcNow;
            var (link, expiresAt) = await sb.SharePortAsync(port, TimeSpan.FromMinutes(10), Ct);
            string url = link.AbsolutePath;
            Assert.Equal(_server.Http.BaseAddress!.Authority, link.Authority);
            Assert.StartsWith("/shared/", url);
            Assert.InRange(expiresAt, before.AddMinutes(9), before.AddMinutes(11));

            // Anyone with the link: no Authorization header at all.
            using var anyone = new HttpClient { BaseAddress = _server.Http.BaseAddress };
            HttpResponseMessage got;
            var deadline = DateTime.UtcNow + TimeSpan.FromSeconds(60);
            while (true)
            {
                got = await anyone.GetAsync(url.TrimStart('/') + "hello.txt", Ct);
                if (got.StatusCode != HttpStatusCode.BadGateway || DateTime.UtcNow > deadline)
                {
                    break;
                }
                got.Dispose();
                await Task.Delay(200, Ct);
            }
            Assert.Equal(HttpStatusCode.OK, got.StatusCode);
            Assert.Equal("shared\n", await got.Content.ReadAsStringAsync(Ct));
            got.Dispose();

            // One character changed in the token: not a link of this server.
            string token = url.Split('/')[2];
            string changed = token[..5] + (token[5] == 'A' ? 'B' : 'A') + token[6..];
            using (var tampered = await anyone.GetAsync($"shared/{changed}/hello.txt", Ct))
            {
                Assert.Equal(HttpStatusCode.NotFound, tampered.StatusCode);
                Assert.Equal("share_not_found", (await tampered.Content.ReadFromJsonAsync<JsonElement>(Ct)).GetProperty("code").GetString());
            }

            await sb.DisposeAsync();
            using var ended = await anyone.GetAsync(url.TrimStart('/') + "hello.txt", Ct);
            Assert.Equal(HttpStatusCode.NotFound, ended.StatusCode);
            Assert.Equal("sandbox_not_found", (await ended.Content.ReadFromJsonAsync<JsonElement>(Ct)).GetProperty("code").GetString());
        }
        finally
        {
            await sb.DisposeAsync();
        }
    }

    [Fact]
    public async Task BadRequests_AreProblemsNamingTheField()
    {
        await using var sb = await _server.Client.CreateSandboxAsync(LocalAgentServer.Python, cancellationToken: Ct);

        var noPort = await ShareAsync(sb.Id, new { expires_in_s = 60 }, HttpStatusCode.BadRequest);
        var tooLong = await ShareAsync(sb.Id, new { port = 8000, expires_in_s = 30 * 24 * 3600 }, HttpStatusCode.BadRequest);
        var unknown = await ShareAsync("sbx_unknown", new { port = 8000 }, HttpStatusCode.NotFound);

        Assert.Equal("invalid_port", noPort.GetProperty("code").GetString());
        Assert.Equal("invalid_expiry", tooLong.GetProperty("code").GetString());
        Assert.Equal("expires_in_s", tooLong.GetProperty("field").GetString());
        Assert.Equal("sandbox_not_found", unknown.GetProperty("code").GetString());
    }
}
