using System.Net;
using System.Net.Http.Json;
using System.Text;
using System.Text.Json;
using System.Text.RegularExpressions;
using SandboxVM.Client;
using SandboxVM.Testing;

namespace SandboxVM.Functional.Tests;

/// <summary>
/// Commands and terminals in a sandbox on every runtime: a foreground command runs as the sandbox user, a
/// background one keeps the sandbox from being frozen until it is killed, and a terminal is a real
/// pseudo-terminal in the guest (the C# SDK's client over the WebSocket).
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
    public async Task Terminal_IsAPseudoTerminalOfTheSandboxUser_FollowsResize_AndEndsWithItsExitCode()
    {
        using var client = new SandboxClient(server.BaseUrl);
        await using var sb = await client.CreateSandboxAsync("python-data-analysis", cancellationToken: Ct);
        await using var term = await sb.OpenTerminalAsync(cols: 100, rows: 30, cancellationToken: Ct);
        var output = new StringBuilder();

        // The shell echoes what it is sent: the mark is computed so that only the answer matches.
        await term.WriteAsync("tty; id -u; stty size; echo mark-$((40+2))\n", Ct);
        string text = await ReadUntilAsync(term, output, new Regex("mark-42"));
        Assert.Matches(@"/dev/pts/\d+", text);
        Assert.Matches(@"(?m)^1000\r?$", text);
        Assert.Contains("30 100", text);

        await term.ResizeAsync(120, 40, Ct);
        output.Clear();
        await term.WriteAsync("stty size; echo mark-$((40+3))\n", Ct);
        Assert.Contains("40 120", await ReadUntilAsync(term, output, new Regex("mark-43")));

        await term.WriteAsync("exit 3\n", Ct);
        byte[] rest = new byte[4096];
        while (await term.ReadAsync(rest, Ct) > 0)
        {
        }
        Assert.Equal(3, term.ExitCode);
    }

    private static Task<string> ReadUntilAsync(SandboxTerminal term, StringBuilder output, Regex pattern) =>
        TerminalOutput.ReadUntilAsync(term, output, pattern, Ct);

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
