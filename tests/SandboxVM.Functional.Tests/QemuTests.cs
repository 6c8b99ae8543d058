using System.Diagnostics;
using Microsoft.Extensions.DependencyInjection;
using SandboxVM.Core.Catalog;

namespace SandboxVM.Functional.Tests;

/// <summary>What only real VMs must show: a VM that dies mid-run (clones: <see cref="SnapshotCloneScenarios"/>).</summary>
[Collection(QemuServer.Collection)]
[Trait("tier", "vm")]
public class QemuTests(QemuServer server)
{
    private static CancellationToken Ct => TestContext.Current.CancellationToken;

    [Fact]
    public async Task VmKilledMidRun_IsSandboxError_AndThePoolIsBackToTarget()
    {
        var catalog = server.Services.GetRequiredService<TemplateCatalog>();
        var spec = await catalog.GetSpecAsync(catalog.Find("go-algorithm")!, Ct);
        const string code = "package main\nimport (\"fmt\"; \"time\")\nfunc main() { fmt.Println(\"started\"); time.Sleep(60 * time.Second) }\n";
        var run = server.RunAsync(new { template = "go-algorithm", code, timeout_s = 90 }, Ct);

        // Kill every QEMU of this template until the run ends: the busy one, the pool's, any started on demand.
        var deadline = DateTime.UtcNow + TimeSpan.FromSeconds(60);
        int killed = 0;
        while (!run.IsCompleted && DateTime.UtcNow < deadline)
        {
            await Task.Delay(500, Ct);
            foreach (int pid in QemuProcessesUsing(spec.RootfsImage!))
            {
                Process.GetProcessById(pid).Kill();
                killed++;
            }
        }
        var r = await run;
        Assert.True(killed > 0, "no qemu process of the template was found");
        r.AssertStatus("sandbox_error");

        await PoolScenarios.WaitForFullPoolAsync(server, "go-algorithm", TimeSpan.FromSeconds(180));
    }

    private static List<int> QemuProcessesUsing(string image)
    {
        var pids = new List<int>();
        foreach (string dir in Directory.GetDirectories("/proc"))
        {
            if (int.TryParse(Path.GetFileName(dir), out int pid))
            {
                try
                {
                    string cmdline = File.ReadAllText(Path.Combine(dir, "cmdline"));
                    if (cmdline.StartsWith("/usr/bin/qemu-system-x86_64", StringComparison.Ordinal) && cmdline.Contains(image, StringComparison.Ordinal))
                    {
                        pids.Add(pid);
                    }
                }
                catch (IOException)
                {
                }
            }
        }
        return pids;
    }
}
