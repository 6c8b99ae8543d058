using SandboxVM.Testing;

namespace SandboxVM.Functional.Tests;

/// <summary>
/// The official E2B SDK (e2b-interop/, as the server tests drive it) against a gVisor server, the default runtime
/// where there is no KVM: what needs a runtime that can pause. Skips where runsc, node or the SDK is missing.
/// </summary>
[Collection(GvisorServer.Collection)]
[Trait("tier", "vm")]
public sealed class E2bGvisorTests(GvisorServer server)
{
    private readonly ServerFixture _server = server.OrSkip();

    [Fact]
    public async Task Pause_ThenConnect_ResumesWithItsPythonStateAndFiles()
    {
        string dir = Path.Combine(AppContext.BaseDirectory, "e2b-interop");
        await NodeScripts.InstallAsync(dir);
        string e2b = _server.BaseUrl.TrimEnd('/') + "/e2b";
        // A server without keys takes any key.
        var env = new Dictionary<string, string> { ["E2B_API_URL"] = e2b, ["E2B_SANDBOX_URL"] = e2b, ["E2B_API_KEY"] = "any" };
        var (r, all) = await NodeScripts.RunJsonAsync(dir, "pause.mjs", [], env, TimeSpan.FromMinutes(5));
        Assert.False(r.TryGetProperty("error", out _), all);
        Assert.Equal("41", r.GetProperty("before").GetString());
        Assert.True(r.GetProperty("paused").GetBoolean(), all);
        Assert.Equal("paused", r.GetProperty("stateAfterPause").GetString());
        Assert.Equal("running", r.GetProperty("stateAfterConnect").GetString());
        Assert.Equal("42", r.GetProperty("value").GetString());
        Assert.Equal("written before the pause", r.GetProperty("file").GetString());
        Assert.True(r.GetProperty("killed").GetBoolean(), all);
    }
}
