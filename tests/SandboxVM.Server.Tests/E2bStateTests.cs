using SandboxVM.Server.E2b;

namespace SandboxVM.Server.Tests;

/// <summary>What the E2B door keeps per sandbox stays bounded: by the live sandboxes and by a cap on pids.</summary>
[Trait("tier", "unit")]
public sealed class E2bStateTests
{
    [Fact]
    public void ASandboxRunningCommandAfterCommandKeepsOnlyTheNewestPids()
    {
        var extras = new E2bState().For("sbx");
        var first = extras.Add("c0", "sh", [], [], null, null);
        E2bProcess last = first;
        for (int i = 1; i <= SandboxExtras.MaxProcesses; i++)
        {
            last = extras.Add($"c{i}", "sh", [], [], null, null);
        }
        Assert.Null(extras.Find(first.Pid, null));
        Assert.Equal("c1", extras.Find(first.Pid + 1, null)?.CommandId);
        Assert.Equal(last, extras.Find(last.Pid, null));
    }

    [Fact]
    public void SandboxesThatEndedWithoutADeleteAreForgotten()
    {
        var state = new E2bState();
        var gone = state.For("gone").Add("c1", "sh", [], [], null, null);
        var live = state.For("live").Add("c2", "sh", [], [], null, null);
        state.KeepOnly(["live"]);
        Assert.Equal(1, state.Count);
        Assert.Equal("c2", state.For("live").Find(live.Pid, null)?.CommandId);
        Assert.Null(state.For("gone").Find(gone.Pid, null));
    }

    [Fact]
    public void ATokenOpensOnlyItsSandboxAndOnlyOnThisServer()
    {
        var state = new E2bState();
        string token = state.TokenFor("a");
        Assert.True(state.TokenMatches("a", token));
        Assert.False(state.TokenMatches("b", token));
        Assert.False(state.TokenMatches("a", ""));
        Assert.False(state.TokenMatches("a", null));
        Assert.False(new E2bState().TokenMatches("a", token));
    }
}
