using System.Diagnostics;

namespace SandboxVM.Images.Tests;

[Trait("tier", "integration")]
public sealed class ExternalCommandTests
{
    [Fact]
    public async Task RunAsync_PassesArgumentsVerbatim()
    {
        var output = await ExternalCommand.RunAsync("printf", ["%s|", "a b", "$(id)", "'q'", "*"], null, null, TestContext.Current.CancellationToken);

        Assert.Equal("a b|$(id)|'q'|*|\n", output);
    }

    [Fact]
    public async Task RunAsync_StreamsStdoutAndStderrLines()
    {
        var lines = new List<string>();

        await ExternalCommand.RunAsync("sh", ["-c", "echo out; echo err >&2"], lines.Add, null, TestContext.Current.CancellationToken);

        Assert.Equal(["err", "out"], lines.Order(StringComparer.Ordinal));
    }

    [Fact]
    public async Task RunAsync_WithEnvironment_GivesTheChildExactlyThat()
    {
        var output = await ExternalCommand.RunAsync("/usr/bin/env", [], null, new Dictionary<string, string> { ["ONLY"] = "this" }, TestContext.Current.CancellationToken);

        Assert.Equal("ONLY=this\n", output);
    }

    [Fact]
    public async Task RunAsync_WhenCommandFails_ThrowsWithCommandExitCodeAndStderrTail()
    {
        var script = "for i in $(seq 1 100); do echo line$i >&2; done; echo boom >&2; exit 3";

        var e = await Assert.ThrowsAsync<ExternalCommandException>(() =>
            ExternalCommand.RunAsync("sh", ["-c", script], null, null, TestContext.Current.CancellationToken));

        Assert.Equal(3, e.ExitCode);
        Assert.StartsWith("`sh -c 'for i in", e.Message, StringComparison.Ordinal);
        Assert.Contains("failed with exit code 3", e.Message, StringComparison.Ordinal);
        Assert.EndsWith("line100\nboom", e.Message, StringComparison.Ordinal);
        Assert.DoesNotContain("line1\n", e.OutputTail, StringComparison.Ordinal);
    }

    [Fact]
    public async Task RunAsync_WhenProgramIsMissing_Throws()
    {
        var e = await Assert.ThrowsAsync<ExternalCommandException>(() =>
            ExternalCommand.RunAsync("/nonexistent/tool", ["x"], null, null, TestContext.Current.CancellationToken));

        Assert.Contains("/nonexistent/tool", e.Message, StringComparison.Ordinal);
    }

    [Fact]
    public async Task RunAsync_WhenCancelled_KillsTheProcessTree()
    {
        using var cts = CancellationTokenSource.CreateLinkedTokenSource(TestContext.Current.CancellationToken);
        cts.CancelAfter(TimeSpan.FromMilliseconds(300));
        var stopwatch = Stopwatch.StartNew();

        await Assert.ThrowsAnyAsync<OperationCanceledException>(() =>
            ExternalCommand.RunAsync("sh", ["-c", "sleep 60 & sleep 60; wait"], null, null, cts.Token));

        Assert.True(stopwatch.Elapsed < TimeSpan.FromSeconds(20), $"took {stopwatch.Elapsed}");
    }
}
