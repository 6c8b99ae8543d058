namespace SandboxVM.Functional.Tests;

/// <summary>Sandboxes restored from one snapshot (qemu) or checkpoint (gvisor) must not share what makes them differ.</summary>
public abstract class SnapshotCloneScenarios(ServerFixture server)
{
    private static CancellationToken Ct => TestContext.Current.CancellationToken;

    [Fact]
    public async Task ClonesOfOneSnapshot_HaveTheirOwnRandomness_AndTheHostsClock()
    {
        const string code = "import os, time\nprint(os.urandom(16).hex(), time.time())";
        await PoolScenarios.WaitForFullPoolAsync(server, "python-data-analysis", TimeSpan.FromSeconds(180));
        var a = await server.RunAsync(new { template = "python-data-analysis", code }, Ct);
        double hostNow = DateTimeOffset.UtcNow.ToUnixTimeMilliseconds() / 1000.0;
        var b = await server.RunAsync(new { template = "python-data-analysis", code }, Ct);
        Assert.True(a.Status == "ok", a.ToString());
        Assert.True(b.Status == "ok", b.ToString());
        Assert.True(a.Metrics["vm_source"].GetString() == "pool", a.ToString());
        string[] pa = a.Stdout.Split(' '), pb = b.Stdout.Split(' ');
        Assert.NotEqual(pa[0], pb[0]);
        double guestTime = double.Parse(pa[1], System.Globalization.CultureInfo.InvariantCulture);
        // a ran before hostNow was read; its clock must be the host's, not the snapshot's.
        Assert.InRange(hostNow - guestTime, -1.0, 1.0 + a.Metrics["total_ms"].GetDouble() / 1000);
    }
}

[Collection(QemuServer.Collection)]
[Trait("tier", "vm")]
public sealed class QemuCloneTests(QemuServer server) : SnapshotCloneScenarios(server);

[Collection(GvisorServer.Collection)]
[Trait("tier", "vm")]
public sealed class GvisorCloneTests(GvisorServer server) : SnapshotCloneScenarios(server.OrSkip());
