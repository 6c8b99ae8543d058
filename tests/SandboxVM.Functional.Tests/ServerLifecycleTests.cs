using System.Diagnostics;
using System.Net;
using System.Net.Sockets;
using System.Text.Json;

namespace SandboxVM.Functional.Tests;

/// <summary>
/// No VM is left behind: a server stopped normally ends its VMs; after a server is killed with SIGKILL,
/// the next one finds the VMs it left and ends them. Runs the real `sandboxvm serve` as a child process.
/// </summary>
[Collection(QemuServer.Collection)]
public class ServerLifecycleTests
{
    private static CancellationToken Ct => TestContext.Current.CancellationToken;

    [Fact]
    public async Task KilledServer_LeavesVms_ThatTheNextServerEnds_AndAStoppedServerLeavesNone()
    {
        int port = FreePort();
        using var first = StartServer(port);
        List<int> leftovers;
        try
        {
            await WaitForFullPoolsAsync(port);
            leftovers = QemuChildrenOf(first.Id);
            Assert.NotEmpty(leftovers);
        }
        finally
        {
            first.Kill(); // SIGKILL: no chance to clean up
            await first.WaitForExitAsync(Ct);
        }
        Assert.All(leftovers, pid => Assert.True(IsAlive(pid), $"qemu {pid} died with its server; nothing to prove"));

        using var second = StartServer(port);
        try
        {
            await WaitUntilAsync(() => leftovers.All(pid => !IsAlive(pid)), TimeSpan.FromSeconds(60), "leftover VMs were not ended");
            await WaitForFullPoolsAsync(port);
            var own = QemuChildrenOf(second.Id);
            Assert.NotEmpty(own);

            Process.Start("kill", ["-TERM", second.Id.ToString()])!.WaitForExit();
            Assert.True(second.WaitForExit(TimeSpan.FromSeconds(60)), "server did not stop on SIGTERM");
            await WaitUntilAsync(() => own.All(pid => !IsAlive(pid)), TimeSpan.FromSeconds(10), "a stopped server left VMs running");
        }
        finally
        {
            if (!second.HasExited)
            {
                second.Kill();
            }
        }
    }

    private static Process StartServer(int port)
    {
        string cli = Path.Combine(ServerFixture.RepoRoot(), "artifacts", "cli", "sandboxvm");
        if (!File.Exists(cli))
        {
            throw new InvalidOperationException($"the CLI is not published at {cli}: run scripts/test.sh (or scripts/build.sh) first");
        }
        var psi = new ProcessStartInfo(cli) { RedirectStandardOutput = true, RedirectStandardError = true };
        foreach (string a in (string[])["serve", "--url", $"http://127.0.0.1:{port}", "--runtime", "qemu"])
        {
            psi.ArgumentList.Add(a);
        }
        psi.Environment["SANDBOXVM_ACCEL"] = "tcg";
        psi.Environment["SANDBOXVM_AGENT"] = Environment.GetEnvironmentVariable("SANDBOXVM_AGENT")
            ?? Path.Combine(ServerFixture.RepoRoot(), "artifacts", "agent", "sandboxvm-agent");
        var p = Process.Start(psi)!;
        // Drain its output so a full pipe never blocks it.
        _ = p.StandardOutput.ReadToEndAsync(CancellationToken.None);
        _ = p.StandardError.ReadToEndAsync(CancellationToken.None);
        return p;
    }

    private static async Task WaitForFullPoolsAsync(int port)
    {
        using var http = new HttpClient { BaseAddress = new Uri($"http://127.0.0.1:{port}"), Timeout = TimeSpan.FromSeconds(10) };
        await WaitUntilAsync(async () =>
        {
            try
            {
                var doc = JsonDocument.Parse(await http.GetStringAsync("/v1/templates", Ct));
                return doc.RootElement.GetProperty("templates").EnumerateArray()
                    .All(t => t.GetProperty("pool").ValueKind == JsonValueKind.Null
                        || t.GetProperty("pool").GetProperty("ready").GetInt32() == t.GetProperty("pool").GetProperty("target").GetInt32());
            }
            catch (HttpRequestException)
            {
                return false;
            }
        }, TimeSpan.FromMinutes(5), "pools did not fill");
    }

    private static Task WaitUntilAsync(Func<bool> condition, TimeSpan timeout, string what) =>
        WaitUntilAsync(() => Task.FromResult(condition()), timeout, what);

    private static async Task WaitUntilAsync(Func<Task<bool>> condition, TimeSpan timeout, string what)
    {
        var deadline = DateTime.UtcNow + timeout;
        while (!await condition())
        {
            Assert.True(DateTime.UtcNow < deadline, what);
            await Task.Delay(200, Ct);
        }
    }

    private static List<int> QemuChildrenOf(int parent)
    {
        var pids = new List<int>();
        foreach (string dir in Directory.GetDirectories("/proc"))
        {
            if (!int.TryParse(Path.GetFileName(dir), out int pid))
            {
                continue;
            }
            try
            {
                string stat = File.ReadAllText(Path.Combine(dir, "stat"));
                // pid (comm) state ppid ...: comm may contain spaces, so read after the last ')'.
                string[] rest = stat[(stat.LastIndexOf(')') + 2)..].Split(' ');
                if (int.Parse(rest[1]) == parent && stat.Contains("(qemu-system-x86", StringComparison.Ordinal))
                {
                    pids.Add(pid);
                }
            }
            catch (IOException)
            {
            }
        }
        return pids;
    }

    private static bool IsAlive(int pid)
    {
        try
        {
            // A zombie has exited: only a running or sleeping process counts.
            string stat = File.ReadAllText($"/proc/{pid}/stat");
            return stat[stat.LastIndexOf(')') + 2] != 'Z';
        }
        catch (IOException)
        {
            return false;
        }
    }

    private static int FreePort()
    {
        using var l = new TcpListener(IPAddress.Loopback, 0);
        l.Start();
        return ((IPEndPoint)l.LocalEndpoint).Port;
    }
}
