using System.Text.Json;

namespace SandboxVM.Functional.Tests;

/// <summary>Warm sandboxes wait for requests; /v1/templates shows the pool and runs say where their sandbox came from.</summary>
public abstract class PoolScenarios(ServerFixture server)
{
    private static CancellationToken Ct => TestContext.Current.CancellationToken;

    private Task<JsonElement> PoolOfAsync(string template) => PoolOfAsync(server, template);

    private static async Task<JsonElement> PoolOfAsync(ServerFixture server, string template)
    {
        var doc = JsonDocument.Parse(await server.Http.GetStringAsync($"/v1/templates/{template}", Ct));
        return doc.RootElement.GetProperty("pool").Clone();
    }

    private Task WaitForFullPoolAsync(string template) => WaitForFullPoolAsync(server, template, TimeSpan.FromSeconds(180));

    /// <summary>Waits (with a deadline) until the template's pool has its target number of ready sandboxes.</summary>
    public static async Task WaitForFullPoolAsync(ServerFixture server, string template, TimeSpan timeout)
    {
        var deadline = DateTime.UtcNow + timeout;
        JsonElement pool;
        while ((pool = await PoolOfAsync(server, template)).GetProperty("ready").GetInt32() < pool.GetProperty("target").GetInt32())
        {
            Assert.True(DateTime.UtcNow < deadline, $"pool of {template} did not fill: {pool}");
            await Task.Delay(100, Ct);
        }
    }

    [Fact]
    public async Task Pool_IsFilledToTarget_AndARunTakesItsSandboxFromIt_ThenItRefills()
    {
        await WaitForFullPoolAsync("cpp-algorithm");
        var target = (await PoolOfAsync("cpp-algorithm")).GetProperty("target").GetInt32();
        Assert.True(target > 0);

        var r = await server.RunAsync(new { template = "cpp-algorithm", code = "int main() { return 0; }", compile_timeout_s = 120 }, Ct);
        r.AssertStatus("ok");
        Assert.Equal("pool", r.Metrics["vm_source"].GetString());

        await WaitForFullPoolAsync("cpp-algorithm");
    }
}

[Collection(ProcessServer.Collection)]
[Trait("tier", "vm")]
public sealed class ProcessPoolTests(ProcessServer server) : PoolScenarios(server);

[Collection(QemuServer.Collection)]
[Trait("tier", "vm")]
public sealed class QemuPoolTests(QemuServer server) : PoolScenarios(server);

[Collection(GvisorServer.Collection)]
[Trait("tier", "vm")]
public sealed class GvisorPoolTests(GvisorServer server) : PoolScenarios(server.OrSkip());
