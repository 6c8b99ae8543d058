using System.Net;
using System.Text.Json;

namespace SandboxVM.Server.Tests;

/// <summary>The server keeps host memory free: under its floor nothing starts and callers are told to retry.</summary>
[Trait("tier", "unit")]
public class HostMemoryFloorTests
{
    private static CancellationToken Ct => TestContext.Current.CancellationToken;

    [Fact]
    public async Task Under_the_host_memory_floor_creates_and_one_shot_runs_are_503_to_retry_and_start_nothing()
    {
        // A floor no host reaches: the real /proc/meminfo is read and found short.
        await using var server = await ApiServer.StartAsync(configure: o => o.MinHostMemoryMiB = int.MaxValue);
        foreach (var (path, body) in new[] { ("/v1/sandboxes", """{"template": "py"}"""), ("/v1/run", """{"template": "py", "code": "print(1)"}""") })
        {
            using var response = await server.PostJsonAsync(path, body);
            string text = await response.Content.ReadAsStringAsync(Ct);
            Assert.True(response.StatusCode == HttpStatusCode.ServiceUnavailable, $"{path}: {(int)response.StatusCode} {text}");
            var problem = JsonDocument.Parse(text).RootElement;
            Assert.Equal("host_memory_low", problem.GetProperty("code").GetString());
            Assert.Contains("MiB of memory available", problem.GetProperty("detail").GetString(), StringComparison.Ordinal);
            Assert.True(response.Headers.RetryAfter?.Delta is { TotalSeconds: >= 1 }, $"Retry-After: {response.Headers.RetryAfter}");
        }
        Assert.Empty(server.Runtime.Vms);
        Assert.Empty(JsonDocument.Parse(await (await server.SendAsync(HttpMethod.Get, "/v1/sandboxes")).Content.ReadAsStringAsync(Ct))
            .RootElement.GetProperty("sandboxes").EnumerateArray());
    }
}
