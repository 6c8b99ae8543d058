using System.Diagnostics;
using System.Security.Cryptography;
using System.Text;
using SandboxVM.Protocol;

namespace SandboxVM.Agent.Tests;

[Trait("tier", "integration")]
public class ExecTests : AgentTestBase
{
    /// <summary>
    /// Far below the `sleep 1000` the steps leave behind, far above what a loaded 2-core host needs: these
    /// tests tell "answered" from "waited for the leftovers"; how fast is measured in bench/, not here.
    /// </summary>
    private static readonly TimeSpan HangBound = TimeSpan.FromSeconds(60);

    [Fact]
    public async Task Exec_Python_StreamsWhatItPrints()
    {
        var exec = Shell("");
        exec.Run = ["python3", "-c", "import sys; print('hello from python'); print('warn', file=sys.stderr)"];

        var result = await Agent.ExecAsync(exec, Ct);

        var body = result.Response(ProtocolJson.Default.ExecResult);
        Assert.Null(body.Compile);
        Assert.Equal(TerminationReason.Exited, body.Run!.Reason);
        Assert.Equal(0, body.Run.ExitCode);
        Assert.Equal("hello from python\n", result.StdoutText);
        Assert.Equal("warn\n", result.StderrText);
        Assert.Equal(result.Stdout.Length, body.Run.StdoutBytes);
        Assert.Equal(result.Stderr.Length, body.Run.StderrBytes);
        Assert.Equal(["run_started"], result.Events);
    }

    /// <summary>The response says where the agent's time went (the host's run_host_phase_seconds): the steps inside the whole.</summary>
    [Fact]
    public async Task Exec_ReportsItsTimings_TheStepsInsideTheWhole()
    {
        var exec = Shell("sleep 0.3");

        var result = await Agent.ExecAsync(exec, Ct);

        var body = result.Response(ProtocolJson.Default.ExecResult);
        var t = Assert.IsType<ExecTimings>(body.Timings);
        Assert.InRange(t.StepsMs, 300, t.TotalMs);
        Assert.True(t.StepsMs >= body.Run!.DurationMs, $"steps {t.StepsMs} ms, run {body.Run.DurationMs} ms");
        Assert.True(t.PrepareMs >= 0 && t.EndProcessesMs >= 0 && t.ListMs >= 0, $"{t.PrepareMs} {t.EndProcessesMs} {t.ListMs}");
        Assert.True(t.PrepareMs + t.StepsMs + t.EndProcessesMs + t.ListMs <= t.TotalMs + 0.001, "the parts exceed the whole");
    }

    [Fact]
    public async Task Exec_Cpp_CompilesWithGppAndRuns()
    {
        var exec = Shell("");
        exec.Cwd = Path.Combine(Agent.Home, "cpp");
        exec.Files["main.cpp"] = "#include <iostream>\nint main() { int a, b; std::cin >> a >> b; std::cout << a + b << std::endl; }\n";
        exec.Compile = ["g++", "-O0", "-o", "main", "main.cpp"];
        exec.CompileTimeoutMs = 60_000;
        exec.Run = ["./main"];
        exec.Stdin = "40 2\n";

        var result = await Agent.ExecAsync(exec, Ct);

        var body = result.Response(ProtocolJson.Default.ExecResult);
        Assert.Equal(TerminationReason.Exited, body.Compile!.Reason);
        Assert.Equal(0, body.Compile.ExitCode);
        Assert.True(body.Compile.DurationMs > 0);
        Assert.Equal(0, body.Run!.ExitCode);
        Assert.Equal("42\n", result.StdoutText);
        Assert.Equal(["compile_started", "run_started"], result.Events);
    }

    [Fact]
    public async Task Exec_WhenCompileFails_DoesNotRun_AndStreamsTheCompilerMessages()
    {
        var exec = Shell("");
        exec.Files["bad.cpp"] = "int main() { return undeclared_name; }\n";
        exec.Compile = ["g++", "-o", "bad", "bad.cpp"];
        exec.CompileTimeoutMs = 60_000;
        exec.Run = ["./bad"];

        var result = await Agent.ExecAsync(exec, Ct);

        var body = result.Response(ProtocolJson.Default.ExecResult);
        Assert.Equal(TerminationReason.Exited, body.Compile!.Reason);
        Assert.NotEqual(0, body.Compile.ExitCode);
        Assert.Null(body.Run);
        Assert.Contains("undeclared_name", result.StderrText);
        Assert.Equal(["compile_started"], result.Events);
    }

    [Fact]
    public async Task Exec_Stdin_ReachesTheProgram()
    {
        var exec = Shell("");
        exec.Run = ["python3", "-c", "import sys; print(sys.stdin.read().upper(), end='')"];
        exec.Stdin = "shout this\n";

        var result = await Agent.ExecAsync(exec, Ct);

        Assert.Equal("SHOUT THIS\n", result.StdoutText);
    }

    [Fact]
    public async Task Exec_LargeStdin_IsDeliveredWhole_AndIgnoringItDoesNotHang()
    {
        // Well past the 64 KiB pipe buffer, within one request frame.
        string big = new('x', 600 * 1024);
        var counts = Shell("wc -c");
        counts.Stdin = big;
        var ignores = Shell("echo done");
        ignores.Stdin = big;

        var counted = await Agent.ExecAsync(counts, Ct);
        var ignored = await Agent.ExecAsync(ignores, Ct);

        Assert.Equal(big.Length.ToString(), counted.StdoutText.Trim());
        Assert.Equal("done\n", ignored.StdoutText);
        Assert.Equal(0, ignored.Response(ProtocolJson.Default.ExecResult).Run!.ExitCode);
    }

    [Fact]
    public async Task Exec_WithoutStdin_ReadsEndOfFile()
    {
        var result = await Agent.ExecAsync(Shell("cat; echo after"), Ct);

        Assert.Equal("after\n", result.StdoutText);
    }

    [Fact]
    public async Task Exec_WhenProgramLoopsForever_ReturnsTimeoutAndKillsTheGroup()
    {
        var stopwatch = Stopwatch.StartNew();

        var result = await Agent.ExecAsync(Shell("echo $$; sleep 1000 & while :; do :; done", timeoutMs: 1000), Ct);

        stopwatch.Stop();
        var run = result.Response(ProtocolJson.Default.ExecResult).Run!;
        Assert.Equal(TerminationReason.Timeout, run.Reason);
        Assert.Equal(-1, run.ExitCode);
        Assert.Equal(9, run.Signal);
        Assert.InRange(run.DurationMs, 1000, 2500);
        // It did not wait for the background `sleep 1000` (a loaded host took 5.8 s here end to end).
        Assert.True(stopwatch.Elapsed < HangBound, $"took {stopwatch.ElapsedMilliseconds} ms");
        int pgid = int.Parse(result.StdoutText.Trim());
        Assert.True(await ProcessTable.WaitUntilAsync(() => ProcessTable.LiveMembersOf(pgid).Count == 0, TimeSpan.FromSeconds(3), Ct),
            $"left behind: {string.Join(',', ProcessTable.LiveMembersOf(pgid))}");
    }

    [Fact]
    public async Task Exec_WhenMainProcessExitsLeavingChildren_KillsThemAndAnswersPromptly()
    {
        var stopwatch = Stopwatch.StartNew();

        var result = await Agent.ExecAsync(Shell("sleep 1000 & sleep 1000 & echo $$"), Ct);

        Assert.True(stopwatch.Elapsed < HangBound, $"took {stopwatch.ElapsedMilliseconds} ms");
        Assert.Equal(0, result.Response(ProtocolJson.Default.ExecResult).Run!.ExitCode);
        int pgid = int.Parse(result.StdoutText.Trim());
        Assert.True(await ProcessTable.WaitUntilAsync(() => ProcessTable.LiveMembersOf(pgid).Count == 0, TimeSpan.FromSeconds(3), Ct));
    }

    [Fact]
    public async Task Exec_WhenADescendantLeavesTheGroupHoldingThePipes_AnswersAfterTheDrainDeadline()
    {
        var stopwatch = Stopwatch.StartNew();

        // setsid takes the sleep out of the step's group; it keeps stdout open. The harness kills it on dispose.
        var result = await Agent.ExecAsync(Shell("setsid sleep 1000 & echo escaped"), Ct);

        Assert.True(stopwatch.Elapsed < HangBound, $"took {stopwatch.ElapsedMilliseconds} ms");
        Assert.Equal("escaped\n", result.StdoutText);
        Assert.Equal(0, result.Response(ProtocolJson.Default.ExecResult).Run!.ExitCode);
    }

    [Fact]
    public async Task Exec_WhenOutputExceedsTheLimit_StreamsExactlyTheLimitAndStops()
    {
        var exec = Shell("");
        exec.Run = ["yes"];
        exec.OutputLimitBytes = 100_000;

        var result = await Agent.ExecAsync(exec, Ct);

        var run = result.Response(ProtocolJson.Default.ExecResult).Run!;
        Assert.Equal(TerminationReason.OutputLimit, run.Reason);
        Assert.Equal(100_000, result.Stdout.Length);
        Assert.Equal(100_000, run.StdoutBytes);
        Assert.All(result.Frames.Where(f => f.Type == FrameType.Stdout), f => Assert.True(f.Payload.Length <= Frame.ChunkSize));
    }

    [Fact]
    public async Task Exec_OutputLimit_CountsStdoutAndStderrTogether()
    {
        var exec = Shell("yes out & yes err >&2");
        exec.OutputLimitBytes = 50_000;

        var result = await Agent.ExecAsync(exec, Ct);

        var run = result.Response(ProtocolJson.Default.ExecResult).Run!;
        Assert.Equal(TerminationReason.OutputLimit, run.Reason);
        Assert.Equal(50_000, result.Stdout.Length + result.Stderr.Length);
        Assert.Equal(50_000, run.StdoutBytes + run.StderrBytes);
    }

    [Fact]
    public async Task Exec_WhenProgramKillsItselfWithSegv_ReportsSignal11()
    {
        var result = await Agent.ExecAsync(Shell("kill -SEGV $$"), Ct);

        var run = result.Response(ProtocolJson.Default.ExecResult).Run!;
        Assert.Equal(TerminationReason.Signal, run.Reason);
        Assert.Equal(11, run.Signal);
        Assert.Equal(-1, run.ExitCode);
    }

    [Fact]
    public async Task Exec_ExitCodeAbove128_IsAnExitNotASignal()
    {
        var result = await Agent.ExecAsync(Shell("exit 139"), Ct);

        var run = result.Response(ProtocolJson.Default.ExecResult).Run!;
        Assert.Equal(TerminationReason.Exited, run.Reason);
        Assert.Equal(139, run.ExitCode);
        Assert.Null(run.Signal);
    }

    [Fact]
    public async Task Exec_WhenCommandDoesNotExist_Returns127WithAMessage()
    {
        var exec = Shell("");
        exec.Run = ["no-such-program-here"];

        var result = await Agent.ExecAsync(exec, Ct);

        Assert.Equal(127, result.Response(ProtocolJson.Default.ExecResult).Run!.ExitCode);
        Assert.Contains("no-such-program-here", result.StderrText);
    }

    [Fact]
    public async Task Exec_Environment_IsExactlyTheGivenVariablesPlusPathAndHome()
    {
        var exec = Shell("");
        exec.Run = ["/usr/bin/env"];
        exec.Env["GREETING"] = "hi there";

        var result = await Agent.ExecAsync(exec, Ct);

        var lines = result.StdoutText.Split('\n', StringSplitOptions.RemoveEmptyEntries).Order().ToArray();
        Assert.Equal(["GREETING=hi there", $"HOME={Agent.Home}", "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"], lines);
    }

    [Fact]
    public async Task Exec_FilesAndArtifacts_AreWrittenAndListedWithSha256()
    {
        var exec = Shell("mkdir -p \"$OUT/plots\" && cp data.txt \"$OUT/copy.txt\" && head -c 200000 /dev/urandom > \"$OUT/plots/fig.png\"");
        exec.Env["OUT"] = Agent.Outputs;
        exec.Files["data.txt"] = "some data\n";
        Directory.CreateDirectory(Agent.Outputs);
        await File.WriteAllTextAsync(Path.Combine(Agent.Outputs, "stale.txt"), "from an earlier run", Ct);
        StepUser.Own(Agent.Outputs); // as an earlier run would have left it

        var result = await Agent.ExecAsync(exec, Ct);

        var body = result.Response(ProtocolJson.Default.ExecResult);
        Assert.Equal(0, body.Run!.ExitCode);
        string[] expected = [Path.Combine(Agent.Outputs, "copy.txt"), Path.Combine(Agent.Outputs, "plots", "fig.png")];
        Assert.Equal(expected, body.Artifacts.Select(a => a.Path));
        foreach (var artifact in body.Artifacts)
        {
            byte[] content = await File.ReadAllBytesAsync(artifact.Path, Ct);
            Assert.Equal(content.Length, artifact.Size);
            Assert.Equal(Convert.ToHexStringLower(SHA256.HashData(content)), artifact.Sha256);
        }
    }

    [Fact]
    public async Task Exec_Cancel_KillsTheGroupAndReportsCancelled()
    {
        uint id = await Agent.StartAsync(new AgentRequest { Op = Ops.Exec, Exec = Shell("echo $$; sleep 1000 & sleep 1000", 600_000) }, Ct);
        Assert.Equal(FrameType.Event, (await Agent.NextFrameAsync(id, Ct)).Type);
        int pgid = int.Parse(Encoding.UTF8.GetString((await Agent.NextFrameAsync(id, Ct)).Payload.Span).Trim());

        await Agent.SendAsync(FrameType.Cancel, id, ReadOnlyMemory<byte>.Empty, Ct);

        var result = await Agent.CollectAsync(id, Ct);
        Assert.Equal(TerminationReason.Cancelled, result.Response(ProtocolJson.Default.ExecResult).Run!.Reason);
        Assert.True(await ProcessTable.WaitUntilAsync(() => ProcessTable.LiveMembersOf(pgid).Count == 0, TimeSpan.FromSeconds(3), Ct));
    }

    [Fact]
    public async Task Exec_TwoOnOneConnection_RunConcurrentlyAndBothComplete()
    {
        var slow = Shell("sleep 1; echo slow");
        var fast = Shell("");
        fast.Run = ["python3", "-c", "print('fast')"];
        fast.OutputsDir = Path.Combine(Agent.Root, "outputs-fast");

        uint slowId = await Agent.StartAsync(new AgentRequest { Op = Ops.Exec, Exec = slow }, Ct);
        uint fastId = await Agent.StartAsync(new AgentRequest { Op = Ops.Exec, Exec = fast }, Ct);

        var fastResult = await Agent.CollectAsync(fastId, Ct);
        var slowResult = await Agent.CollectAsync(slowId, Ct);
        Assert.Equal("fast\n", fastResult.StdoutText);
        Assert.Equal("slow\n", slowResult.StdoutText);
        Assert.Equal(0, slowResult.Response(ProtocolJson.Default.ExecResult).Run!.ExitCode);
    }

    [Fact]
    public async Task Exec_WhileRunning_DoesNotBlockAFileRead()
    {
        await File.WriteAllTextAsync(Path.Combine(Agent.Root, "home-file.txt"), "content", Ct);
        // The exec runs until the test lets it end, after the read (no run timeout ends it sooner): a
        // read that waited for the exec would never end (a `sleep 2` and a 1.5 s bound on the read
        // failed on a loaded host).
        uint execId = await Agent.StartAsync(new AgentRequest { Op = Ops.Exec, Exec = Shell("echo tick; while [ ! -e go ]; do sleep 0.05; done; echo tock", 600_000) }, Ct);
        Assert.Equal(FrameType.Event, (await Agent.NextFrameAsync(execId, Ct)).Type);
        Assert.Equal("tick\n", Encoding.UTF8.GetString((await Agent.NextFrameAsync(execId, Ct)).Payload.Span));

        var read = await Agent.FileAsync(Ops.FileRead, Path.Combine(Agent.Root, "home-file.txt"), Ct);

        Assert.Equal("content", Encoding.UTF8.GetString(read.Data));
        await File.WriteAllBytesAsync(Path.Combine(Agent.Home, "go"), [], Ct);
        var exec = await Agent.CollectAsync(execId, Ct);
        Assert.Equal("tock\n", exec.StdoutText);
    }
}
