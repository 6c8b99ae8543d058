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

    /// <summary>
    /// A one-shot run's processes end before its artifacts are listed, also a daemon that left the run's
    /// process group (under gVisor the agent, the sandbox's init, now sends that kill(-1) itself instead of
    /// through a shell per round, which cost a pooled print(1) 200-450 ms). The daemon keeps swapping the
    /// artifact for a symlink to a file outside the outputs and back: alive at the listing, it would show.
    /// </summary>
    [Fact]
    public async Task Run_DaemonThatLeftTheGroup_IsGoneBeforeTheArtifactsAreListed()
    {
        const string code = """
            import os, subprocess, time
            out = "/tmp/outputs"
            os.makedirs(out, exist_ok=True)
            with open(out + "/a.txt", "w") as f:
                f.write("real\n")
            loop = f'while :; do ln -sf /etc/hostname "{out}/t"; mv -f "{out}/t" "{out}/a.txt"; echo real > "{out}/u"; mv -f "{out}/u" "{out}/a.txt"; done'
            subprocess.Popen(["setsid", "sh", "-c", loop], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            time.sleep(0.2)
            print("started")
            """;
        var r = await _server.RunAsync(new { template = "python-data-analysis", code }, Ct);
        r.AssertStatus("ok");
        Assert.Equal("started\n", r.Stdout);
        // Killed mid-loop, a.txt may be the symlink (not listed) and u a copy still empty: every file listed
        // is a regular file the daemon wrote, never the file outside the outputs.
        Assert.NotEmpty(r.Artifacts);
        foreach (var artifact in r.Artifacts)
        {
            string text = System.Text.Encoding.UTF8.GetString(Convert.FromBase64String(artifact.ContentBase64!));
            Assert.True(text is "real\n" or "", $"{artifact.Path}: {text}");
            Assert.Equal(artifact.Size, text.Length);
        }
    }

    /// <summary>
    /// A one-shot run whose outputs hold no file is answered once kill(-1) is sent, without waiting for the
    /// killed processes (its warm kernel, a daemon) to be gone: the answer still has the whole output, and
    /// a file a leftover process would write later is in no answer.
    /// </summary>
    [Fact]
    public async Task Run_LeftoverDaemonAndNoArtifacts_AnswersWithTheWholeOutput()
    {
        const string code = """
            import subprocess
            subprocess.Popen(["setsid", "sh", "-c", "sleep 20; echo late > /tmp/outputs/late.txt"],
                             stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            for i in range(3000):
                print(i)
            """;
        var r = await _server.RunAsync(new { template = "python-data-analysis", code }, Ct);
        r.AssertStatus("ok");
        Assert.Equal(string.Concat(Enumerable.Range(0, 3000).Select(i => $"{i}\n")), r.Stdout);
        Assert.Empty(r.Artifacts);
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
