using System.Text.Json;

namespace SandboxVM.Functional.Tests;

/// <summary>Warm sandboxes wait for requests; /v1/templates shows the pool and runs say where their sandbox came from.</summary>
public abstract class PoolScenarios(ServerFixture server)
{
    private static CancellationToken Ct => TestContext.Current.CancellationToken;

    private async Task<JsonElement> PoolOfAsync(string template)
    {
        var doc = JsonDocument.Parse(await server.Http.GetStringAsync($"/v1/templates/{template}", Ct));
        return doc.RootElement.GetProperty("pool").Clone();
    }

    private async Task WaitForFullPoolAsync(string template)
    {
        var deadline = DateTime.UtcNow + TimeSpan.FromSeconds(60);
        JsonElement pool;
        while ((pool = await PoolOfAsync(template)).GetProperty("ready").GetInt32() < pool.GetProperty("target").GetInt32())
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

        var r = await server.RunAsync(new { template = "cpp-algorithm", code = "int main() { return 0; }" }, Ct);
        Assert.Equal("ok", r.Status);
        Assert.Equal("pool", r.Metrics["vm_source"].GetString());
        Assert.True(r.Metrics["startup_ms"].GetDouble() < 1000, $"startup_ms {r.Metrics["startup_ms"]} from a warm pool");

        await WaitForFullPoolAsync("cpp-algorithm");
    }
}

[Collection(ProcessServer.Collection)]
public sealed class ProcessPoolTests(ProcessServer server) : PoolScenarios(server);
