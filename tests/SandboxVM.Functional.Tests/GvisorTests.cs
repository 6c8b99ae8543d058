using System.Text.Json;
using Microsoft.Extensions.DependencyInjection;
using SandboxVM.Core.Catalog;
using SandboxVM.Runtime;
using SandboxVM.Runtime.Gvisor;

namespace SandboxVM.Functional.Tests;

/// <summary>
/// What gVisor sandboxes must show: limits the host enforces, a sandbox that dies, how the server
/// reports the runtime (clones: <see cref="SnapshotCloneScenarios"/>).
/// </summary>
[Collection(GvisorServer.Collection)]
[Trait("tier", "vm")]
public class GvisorTests
{
    private readonly GvisorServer _server;

    public GvisorTests(GvisorServer server)
    {
        server.OrSkip();
        _server = server;
    }

    private static CancellationToken Ct => TestContext.Current.CancellationToken;

    [Fact]
    public async Task Templates_AreReportedWithUserSpaceKernelIsolationAndThePlatform()
    {
        using var doc = JsonDocument.Parse(await _server.Http.GetStringAsync("/v1/templates", Ct));
        var python = doc.RootElement.GetProperty("templates").EnumerateArray().Single(t => t.GetProperty("name").GetString() == "python-data-analysis");
        Assert.Equal("gvisor", python.GetProperty("runtime").GetString());
        Assert.Equal("user-space-kernel", python.GetProperty("isolation").GetString());
        Assert.Equal("systrap", python.GetProperty("accel").GetString());
    }

    /// <summary>
    /// Under gVisor each forked child of the warm interpreter (numpy, pandas, matplotlib loaded) costs
    /// the sentry tens of MB (measured: the 1 GiB template's cgroup was full after 35-40 forks, before
    /// the process cap of 64), so the bomb may end as <c>oom</c> instead of meeting the cap. Either way
    /// it is contained: the run reports, the server stays healthy, the next run gets a working sandbox.
    /// </summary>
    [Fact]
    public async Task Run_ForkBomb_IsContained_AndTheNextRunWorks()
    {
        var r = await _server.RunAsync(new { template = "python-data-analysis", code = ProcessLimitTests.ForkBomb, timeout_s = 30 }, Ct);
        Assert.True(r.Status == "oom" || (r.Status == "ok" && r.Stdout.Contains("stopped True")), r.ToString());

        Assert.Contains("ok", await _server.Http.GetStringAsync("/healthz", Ct));
        var after = await _server.RunAsync(new { template = "python-data-analysis", code = "print('still here')" }, Ct);
        Assert.True(after.Status == "ok" && after.Stdout == "still here\n", after.ToString());
    }

    [Fact]
    public async Task Run_InfiniteLoop_RunsForTheWholeLimitBeforeTimingOut()
    {
        var r = await _server.RunAsync(new { template = "python-data-analysis", code = "while True:\n    pass\n", timeout_s = 2 }, Ct);
        r.AssertStatus("timeout");
        Assert.True(r.Metrics["run_ms"].GetDouble() >= 1900, $"run_ms {r.Metrics["run_ms"]}");
    }

    [Fact]
    public async Task SandboxKilledMidRun_IsSandboxError_AndThePoolIsBackToTarget()
    {
        var runtime = (GvisorRuntime)_server.Services.GetRequiredService<IVmRuntime>();
        var catalog = _server.Services.GetRequiredService<TemplateCatalog>();
        string rootfs = (await catalog.GetSpecAsync(catalog.Find("go-algorithm")!, Ct)).RootfsDir;
        const string code = "package main\nimport (\"fmt\"; \"time\")\nfunc main() { fmt.Println(\"started\"); time.Sleep(60 * time.Second) }\n";
        var run = _server.RunAsync(new { template = "go-algorithm", code, timeout_s = 90 }, Ct);

        // Kill every process of the template's sandboxes until the run ends (the busy one, the pool's, any
        // started on demand): runsc, the sentry, the gofer, all of which name their bundle.
        var deadline = DateTime.UtcNow + TimeSpan.FromSeconds(60);
        int killed = 0;
        while (!run.IsCompleted && DateTime.UtcNow < deadline)
        {
            await Task.Delay(500, Ct);
            foreach (int pid in SandboxProcessesOf(runtime.InstanceDirectory, rootfs))
            {
                try
                {
                    System.Diagnostics.Process.GetProcessById(pid).Kill();
                    killed++;
                }
                catch (Exception e) when (e is ArgumentException or InvalidOperationException)
                {
                    // Gone meanwhile.
                }
            }
        }
        var r = await run;
        Assert.True(killed > 0, "no process of the server's gvisor sandboxes was found");
        r.AssertStatus("sandbox_error");
        await PoolScenarios.WaitForFullPoolAsync(_server, "go-algorithm", TimeSpan.FromSeconds(180));
    }

    /// <summary>Processes of this server's gvisor sandboxes whose bundle's root is <paramref name="rootfs"/>.</summary>
    private static List<int> SandboxProcessesOf(string instanceDir, string rootfs)
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
                string[] args = File.ReadAllText(Path.Combine(dir, "cmdline")).Split('\0');
                int at = Array.FindIndex(args, a => a == "--bundle" || a.StartsWith("--bundle=", StringComparison.Ordinal));
                if (at < 0)
                {
                    continue;
                }
                string bundle = args[at] == "--bundle" ? args[at + 1] : args[at]["--bundle=".Length..];
                if (!bundle.StartsWith(instanceDir + "/", StringComparison.Ordinal))
                {
                    continue;
                }
                using var config = JsonDocument.Parse(File.ReadAllText(Path.Combine(bundle, "config.json")));
                if (config.RootElement.GetProperty("root").GetProperty("path").GetString() == rootfs)
                {
                    pids.Add(pid);
                }
            }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException or JsonException or IndexOutOfRangeException)
            {
                // Ended while we looked.
            }
        }
        return pids;
    }
}
