using System.Net;
using System.Net.Http.Json;
using System.Text;
using System.Text.Json;

namespace SandboxVM.Functional.Tests;

/// <summary>
/// In a VM the agent is root (init) but the code it runs is not: it runs as the sandbox user 1000:1000
/// with no supplementary groups, so it cannot kill the agent and the per-run process cap binds.
/// </summary>
[Collection(QemuServer.Collection)]
[Trait("tier", "vm")]
public class QemuGuestUserTests(QemuServer server)
{
    private const string Template = "python-data-analysis";

    private static CancellationToken Ct => TestContext.Current.CancellationToken;

    [Fact]
    public async Task Code_RunsAsTheSandboxUser_CannotKillTheAgent_AndThePoolGoesOn()
    {
        await PoolScenarios.WaitForFullPoolAsync(server, Template, TimeSpan.FromSeconds(180));

        var r = await server.RunAsync(new
        {
            template = Template,
            code = "import os\nprint(os.getuid(), os.getgid(), os.getgroups(), flush=True)\nos.kill(1, 9)\n",
        }, Ct);
        var next = await server.RunAsync(new { template = Template, code = "print('still here')" }, Ct);

        Assert.Equal("pool", r.Metrics["vm_source"].GetString());
        Assert.Equal("1000 1000 []\n", r.Stdout);
        Assert.True(r.Status == "error" && r.Stderr.Contains("PermissionError", StringComparison.Ordinal), r.ToString());
        Assert.True(next.Status == "ok" && next.Stdout == "still here\n", next.ToString());
    }

    [Fact]
    public async Task ForkBomb_MeetsTheProcessCap_AndTheNextRunWorks()
    {
        // Children sleep so they count until the run ends; as root the cap would not bind and this
        // would fork until the guest ran out of memory or time.
        const string code = """
            import os, time
            n = 0
            try:
                while n < 2000:
                    if os.fork() == 0:
                        time.sleep(60)
                        os._exit(0)
                    n += 1
            except OSError as e:
                print("capped after", n, type(e).__name__, flush=True)
                raise SystemExit(3)
            print("not capped", n)
            """;

        var r = await server.RunAsync(new { template = Template, code, timeout_s = 60 }, Ct);
        var next = await server.RunAsync(new { template = Template, code = "print(6 * 7)" }, Ct);

        Assert.True(r.Status == "error" && r.ExitCode == 3, r.ToString());
        Assert.StartsWith("capped after", r.Stdout);
        Assert.True(int.Parse(r.Stdout.Split(' ')[2], System.Globalization.CultureInfo.InvariantCulture) < 64, r.Stdout);
        Assert.True(next.Status == "ok" && next.Stdout == "42\n", next.ToString());
    }

    [Fact]
    public async Task Session_UploadIsTheCodes_ToReadAndOverwrite_AndWhatItWritesDownloads()
    {
        using var created = await server.Http.PostAsJsonAsync("/v1/sandboxes", new { template = Template }, ServerFixture.Json, Ct);
        string text = await created.Content.ReadAsStringAsync(Ct);
        Assert.True(created.StatusCode == HttpStatusCode.Created, text);
        string id;
        using (var doc = JsonDocument.Parse(text))
        {
            id = doc.RootElement.GetProperty("id").GetString()!;
        }
        try
        {
            string url = $"/v1/sandboxes/{id}";
            using (var put = await server.Http.PutAsync($"{url}/files?path=data/input.txt", new ByteArrayContent("from the caller\n"u8.ToArray()), Ct))
            {
                Assert.True(put.IsSuccessStatusCode, await put.Content.ReadAsStringAsync(Ct));
            }
            const string code = """
                import os
                print(os.stat("data/input.txt").st_uid, os.stat("data").st_uid, os.getuid())
                print(open("data/input.txt").read(), end="")
                with open("data/input.txt", "w") as f:
                    f.write("overwritten by the code\n")
                with open("data/made.txt", "w") as f:
                    f.write("made by the code\n")
                """;
            using var run = await server.Http.PostAsJsonAsync($"{url}/run", new { code }, ServerFixture.Json, Ct);
            var r = JsonSerializer.Deserialize<RunResultDto>(await run.Content.ReadAsStringAsync(Ct), ServerFixture.Json)!;

            Assert.True(r.Status == "ok", r.ToString());
            Assert.Equal("1000 1000 1000\nfrom the caller\n", r.Stdout);
            Assert.Equal("overwritten by the code\n", Encoding.UTF8.GetString(await server.Http.GetByteArrayAsync($"{url}/files?path=data/input.txt", Ct)));
            Assert.Equal("made by the code\n", Encoding.UTF8.GetString(await server.Http.GetByteArrayAsync($"{url}/files?path=data/made.txt", Ct)));
        }
        finally
        {
            using var _ = await server.Http.DeleteAsync($"/v1/sandboxes/{id}", CancellationToken.None);
        }
    }
}
