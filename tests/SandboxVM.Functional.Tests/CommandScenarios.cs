using System.Net;
using System.Net.Http.Json;
using System.Text.Json;

namespace SandboxVM.Functional.Tests;

/// <summary>
/// Commands in a sandbox on every runtime: a foreground command runs as the sandbox user, and a background
/// one keeps the sandbox from being frozen until it is killed.
/// </summary>
public abstract class CommandScenarios(ServerFixture server)
{
    private static CancellationToken Ct => TestContext.Current.CancellationToken;

    // The server freezes a sandbox idle for SandboxFreezeAfterS (2 s) on its reaper's 1 s tick; a loaded host takes longer.
    private static readonly TimeSpan FreezeWithin = TimeSpan.FromSeconds(60);

    private async Task<JsonElement> SendAsync(HttpMethod method, string url, object? body, HttpStatusCode expected)
    {
        using var request = new HttpRequestMessage(method, url);
        if (body is not null)
        {
            request.Content = JsonContent.Create(body, options: ServerFixture.Json);
        }
        using var response = await server.Http.SendAsync(request, Ct);
        string text = await response.Content.ReadAsStringAsync(Ct);
        Assert.True(response.StatusCode == expected, $"{method} {url} answered {(int)response.StatusCode}: {text}");
        return JsonDocument.Parse(text).RootElement.Clone();
    }

    private async Task<bool> FrozenAsync(string id) =>
        (await SendAsync(HttpMethod.Get, $"/v1/sandboxes/{id}", null, HttpStatusCode.OK)).GetProperty("frozen").GetBoolean();

    [Fact]
    public async Task Commands_RunAsTheSandboxUser_AndABackgroundOneKeepsTheSandboxAwakeUntilKilled()
    {
        var created = await SendAsync(HttpMethod.Post, "/v1/sandboxes", new { template = "python-data-analysis" }, HttpStatusCode.Created);
        string id = created.GetProperty("id").GetString()!;
        try
        {
            var ran = await SendAsync(HttpMethod.Post, $"/v1/sandboxes/{id}/commands",
                new { cmd = "id -u; python3 -c 'print(6 * 7)'" }, HttpStatusCode.OK);
            Assert.Equal("exited", ran.GetProperty("status").GetString());
            Assert.Equal(0, ran.GetProperty("exit_code").GetInt32());
            Assert.Equal("1000\n42\n", ran.GetProperty("stdout").GetString());

            var started = await SendAsync(HttpMethod.Post, $"/v1/sandboxes/{id}/commands",
                new { cmd = new[] { "sleep", "1000" }, background = true }, HttpStatusCode.Created);
            string cid = started.GetProperty("id").GetString()!;
            Assert.True(started.GetProperty("running").GetBoolean());

            // Idle for longer than a sandbox needs to be frozen; nothing but GET info touches it meanwhile.
            await Task.Delay(TimeSpan.FromSeconds(8), Ct);
            Assert.False(await FrozenAsync(id), "a sandbox with a running background command was frozen");

            var killed = await SendAsync(HttpMethod.Delete, $"/v1/sandboxes/{id}/commands/{cid}", null, HttpStatusCode.OK);
            Assert.Equal("signal", killed.GetProperty("status").GetString());
            Assert.Equal(15, killed.GetProperty("signal").GetInt32());

            var deadline = DateTime.UtcNow + FreezeWithin;
            while (!await FrozenAsync(id))
            {
                Assert.True(DateTime.UtcNow < deadline, $"the sandbox was not frozen within {FreezeWithin.TotalSeconds} s after its command ended");
                await Task.Delay(TimeSpan.FromMilliseconds(250), Ct);
            }
            // A call thaws it: its commands are still listed.
            var list = await SendAsync(HttpMethod.Get, $"/v1/sandboxes/{id}/commands", null, HttpStatusCode.OK);
            Assert.Equal(2, list.GetProperty("commands").GetArrayLength());
        }
        finally
        {
            using var _ = await server.Http.DeleteAsync($"/v1/sandboxes/{id}", CancellationToken.None);
        }
    }
}

[Collection(ProcessServer.Collection)]
[Trait("tier", "vm")]
public sealed class ProcessCommandTests(ProcessServer server) : CommandScenarios(server);

[Collection(QemuServer.Collection)]
[Trait("tier", "vm")]
public sealed class QemuCommandTests(QemuServer server) : CommandScenarios(server);

[Collection(GvisorServer.Collection)]
[Trait("tier", "vm")]
public sealed class GvisorCommandTests(GvisorServer server) : CommandScenarios(server.OrSkip());
