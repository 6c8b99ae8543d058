namespace SandboxVM.Functional.Tests;

/// <summary>
/// The per-run process cap (RLIMIT_NPROC under the sandbox's cgroup) in the process runtime. In a VM
/// the same cap binds the sandbox user: see <see cref="QemuGuestUserTests"/>.
/// </summary>
[Collection(ProcessServer.Collection)]
[Trait("tier", "vm")]
public class ProcessLimitTests(ProcessServer server)
{
    private static CancellationToken Ct => TestContext.Current.CancellationToken;

    /// <summary>Forks children that sleep until fork fails, then prints <c>stopped True</c>.</summary>
    internal const string ForkBomb = """
        import os, time
        n = 0
        try:
            for _ in range(100000):
                if os.fork() == 0:
                    time.sleep(30)
                    os._exit(0)
                n += 1
        except OSError as e:
            print("stopped", n < 100000)
        """;

    [Fact]
    public async Task Run_ForkBomb_IsContainedByThePidsLimit()
    {
        // Each fork of an interpreter with numpy, pandas and matplotlib loaded took 50-250 ms at load 14
        // here (40 forks to the cap: 5-6 s; over 10 s with a gVisor server's pools refilling beside it).
        var r = await server.RunAsync(new { template = "python-data-analysis", code = ForkBomb, timeout_s = 30 }, Ct);
        Assert.True(r.Stdout.Contains("stopped True"), r.ToString());
        // The sandbox itself (agent included) survived the bomb and reported normally.
        r.AssertStatus("ok");
    }

    // Process runtime only: a TCG guest's clock runs fast (measured ~20%), so its own timeout fires early
    // by the host's clock; the guest clocksource under emulation is an open item.
    [Fact]
    public async Task Run_InfiniteLoop_RunsForTheWholeLimitBeforeTimingOut()
    {
        var r = await server.RunAsync(new { template = "python-data-analysis", code = "while True:\n    pass\n", timeout_s = 2 }, Ct);
        r.AssertStatus("timeout");
        Assert.True(r.Metrics["run_ms"].GetDouble() >= 1900, $"run_ms {r.Metrics["run_ms"]}");
    }
}
