using System.Diagnostics;

namespace SandboxVM.Images.Tests;

[Trait("tier", "integration")]
public sealed class ExternalCommandTests
{
    [Fact]
    public async Task RunAsync_PassesArgumentsVerbatim()
    {
        var output = await HostProcess.OutputAsync("printf", ["%s|", "a b", "$(id)", "'q'", "*"], null, null, TestContext.Current.CancellationToken);

        Assert.Equal("a b|$(id)|'q'|*|\n", output);
    }

    [Fact]
    public async Task RunAsync_StreamsStdoutAndStderrLines()
    {
        var lines = new List<string>();

        await HostProcess.OutputAsync("sh", ["-c", "echo out; echo err >&2"], lines.Add, null, TestContext.Current.CancellationToken);

        Assert.Equal(["err", "out"], lines.Order(StringComparer.Ordinal));
    }

    [Fact]
    public async Task RunAsync_WithEnvironment_GivesTheChildExactlyThat()
    {
        var output = await HostProcess.OutputAsync("/usr/bin/env", [], null, new Dictionary<string, string> { ["ONLY"] = "this" }, TestContext.Current.CancellationToken);

        Assert.Equal("ONLY=this\n", output);
    }

    [Fact]
    public async Task RunAsync_WhenCommandFails_ThrowsWithCommandExitCodeAndStderrTail()
    {
        var script = "for i in $(seq 1 100); do echo line$i >&2; done; echo boom >&2; exit 3";

        var e = await Assert.ThrowsAsync<ExternalCommandException>(() =>
            HostProcess.OutputAsync("sh", ["-c", script], null, null, TestContext.Current.CancellationToken));

        Assert.Equal(3, e.ExitCode);
        Assert.StartsWith("`sh -c 'for i in", e.Message, StringComparison.Ordinal);
        Assert.Contains("failed with exit code 3", e.Message, StringComparison.Ordinal);
        Assert.EndsWith("line100\nboom", e.Message, StringComparison.Ordinal);
        Assert.DoesNotContain("line1\n", e.OutputTail, StringComparison.Ordinal);
    }

    [Fact]
    public async Task AFailure_WithHeadLines_ReportsItsFirstLinesToo_AndHowManyWereLeftOut()
    {
        // As a Go panic prints: the cause first, then a stack longer than any tail.
        var script = "echo 'panic: no space left on device' >&2; for i in $(seq 1 100); do echo frame$i >&2; done; exit 2";

        var result = await HostProcess.RunAsync(new HostCommand("sh", ["-c", script]) { HeadLines = 2, TailLines = 3 }, TestContext.Current.CancellationToken);

        Assert.Equal("panic: no space left on device\nframe1\n[... 96 lines ...]\nframe98\nframe99\nframe100", result.OutputTail);
    }

    [Fact]
    public async Task RunAsync_WhenProgramIsMissing_Throws()
    {
        var e = await Assert.ThrowsAsync<ExternalCommandException>(() =>
            HostProcess.OutputAsync("/nonexistent/tool", ["x"], null, null, TestContext.Current.CancellationToken));

        Assert.Contains("/nonexistent/tool", e.Message, StringComparison.Ordinal);
    }

    [Fact]
    public async Task RunAsync_WhenCancelled_KillsTheProcessTree()
    {
        using var cts = CancellationTokenSource.CreateLinkedTokenSource(TestContext.Current.CancellationToken);
        cts.CancelAfter(TimeSpan.FromMilliseconds(300));
        var stopwatch = Stopwatch.StartNew();

        await Assert.ThrowsAnyAsync<OperationCanceledException>(() =>
            HostProcess.OutputAsync("sh", ["-c", "sleep 60 & sleep 60; wait"], null, null, cts.Token));

        Assert.True(stopwatch.Elapsed < TimeSpan.FromSeconds(20), $"took {stopwatch.Elapsed}");
    }

    [Fact]
    public async Task RunAsync_PastItsTimeout_KillsTheTreeAndSaysSo()
    {
        var stopwatch = Stopwatch.StartNew();

        var e = await Assert.ThrowsAsync<TimeoutException>(() => HostProcess.RunAsync(
            new HostCommand("sh", ["-c", "sleep 60 & sleep 60; wait"]) { Timeout = TimeSpan.FromMilliseconds(300) }, TestContext.Current.CancellationToken));

        Assert.Contains("did not finish within 0.3 s", e.Message, StringComparison.Ordinal);
        Assert.True(stopwatch.Elapsed < TimeSpan.FromSeconds(20), $"took {stopwatch.Elapsed}");
    }

    [Fact]
    public async Task RunAsync_FeedsStdinAndReportsTheExitCodeWithoutThrowing()
    {
        var result = await HostProcess.RunAsync(
            new HostCommand("sh", ["-c", "cat; echo oops >&2; exit 4"]) { Stdin = "fed\n"u8.ToArray() }, TestContext.Current.CancellationToken);

        Assert.Equal(4, result.ExitCode);
        Assert.Equal("fed\n", result.Stdout);
        Assert.Equal("oops", result.OutputTail);
        Assert.Throws<ExternalCommandException>(() => result.EnsureSuccess());
    }

    [Fact]
    public async Task RunAsync_DrainsBothStreamsAtOnce_SoAChattyStderrCannotBlockIt()
    {
        // 1 MiB to stderr before any stdout: a reader of stdout alone would deadlock on the full stderr pipe.
        var result = await HostProcess.RunAsync(
            new HostCommand("sh", ["-c", "head -c 1048576 /dev/zero | tr '\\0' x | fold -w 1000 >&2; echo done"]) { TailLines = 3 },
            TestContext.Current.CancellationToken);

        Assert.Equal("done\n", result.Stdout);
        Assert.Equal(3, result.OutputTail.Split('\n').Length);
    }
}
