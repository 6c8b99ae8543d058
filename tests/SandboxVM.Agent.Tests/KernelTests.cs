using System.Runtime.Versioning;
using System.Text;
using SandboxVM.Protocol;

namespace SandboxVM.Agent.Tests;

/// <summary>
/// Persistent runs (<see cref="ForkServerRequest.Persistent"/>): one kept Python interpreter, the
/// kernel, with one __main__ namespace from run to run. Uses the host's python3.
/// </summary>
[SupportedOSPlatform("linux")]
[Trait("tier", "integration")]
public class KernelTests : AgentTestBase
{
    /// <summary>main.py in the test's home, run as <c>python3 -u main.py</c> in the kernel.</summary>
    private ExecRequest Persistent(string code, int timeoutMs = 10_000) => new()
    {
        Cwd = Agent.Home,
        OutputsDir = Agent.Outputs,
        Files = { ["main.py"] = code },
        Run = ["python3", "-u", "main.py"],
        RunTimeoutMs = timeoutMs,
        ForkServer = new ForkServerRequest { Preload = ["json"], Persistent = true },
    };

    private async Task<(OperationFrames Frames, StepResult Run)> RunAsync(ExecRequest exec)
    {
        var frames = await Agent.ExecAsync(exec, Ct);
        return (frames, frames.Response(ProtocolJson.Default.ExecResult).Run!);
    }

    [Fact]
    public async Task Persistent_VariablesAndImports_SurviveFromRunToRun()
    {
        var (_, first) = await RunAsync(Persistent("import decimal\nx = 41\n"));
        var (second, run) = await RunAsync(Persistent("print(x + 1, decimal.Decimal('0.5'))\n"));

        Assert.Equal(0, first.ExitCode);
        Assert.True(first.Forked, Agent.AgentStderr);
        Assert.True(first.StateReset);
        Assert.Equal(0, run.ExitCode);
        Assert.Equal("42 0.5\n", second.StdoutText);
        Assert.Equal("", second.StderrText);
        Assert.True(run.Forked);
        Assert.False(run.StateReset);
        Assert.Equal(second.Stdout.Length, run.StdoutBytes);
    }

    [Fact]
    public async Task Persistent_KernelKilledMidRun_EndsTheRunAtOnce_AndWhatItStartedWithIt()
    {
        // As the OOM killer does (user code may not signal the kernel): the kernel dies while the step and
        // what it started still run.
        string pids = Path.Combine(Agent.Home, "pids");
        var running = RunAsync(Persistent(
            "import os, subprocess, time\np = subprocess.Popen(['sleep', '60'])\n"
            + $"open('{pids}.tmp', 'w').write(f'{{os.getpid()}} {{p.pid}}')\nos.rename('{pids}.tmp', '{pids}')\ntime.sleep(60)\n", timeoutMs: 30_000));
        Assert.True(await ProcessTable.WaitUntilAsync(() => File.Exists(pids) || running.IsCompleted, TimeSpan.FromSeconds(20), Ct), "the step did not start");
        int[] both = [.. File.ReadAllText(pids).Split(' ').Select(int.Parse)];
        var kernel = System.Text.RegularExpressions.Regex.Match(Agent.AgentStderr, @"kernel (\d+) ready");
        Assert.True(kernel.Success, Agent.AgentStderr);
        System.Diagnostics.Process.GetProcessById(int.Parse(kernel.Groups[1].Value)).Kill();

        var (_, run) = await running;

        // Not left to run to the step's timeout (30 s) or the sleep's end (60 s).
        Assert.True(run.DurationMs < 15_000, $"the run took {run.DurationMs} ms");
        Assert.Equal(TerminationReason.Signal, run.Reason);
        Assert.Equal(9, run.Signal);
        Assert.True(await ProcessTable.WaitUntilAsync(() => !ProcessTable.IsAlive(both[1]), TimeSpan.FromSeconds(5), Ct), "what the dead kernel's step started lives on");
    }

    [Fact]
    public async Task Persistent_Exception_PrintsTheTraceback_Exits1_AndKeepsWhatRanBefore()
    {
        var (failed, failedRun) = await RunAsync(Persistent("a = 1\ndef f():\n    raise ValueError('boom')\nf()\nb = 2\n"));
        var (after, afterRun) = await RunAsync(Persistent("print(a, 'b' in globals())\n"));

        Assert.Equal(TerminationReason.Exited, failedRun.Reason);
        Assert.Equal(1, failedRun.ExitCode);
        string main = Path.Combine(Agent.Home, "main.py");
        Assert.True(failed.StderrText.StartsWith($"Traceback (most recent call last):\n  File \"{main}\", line 4, in <module>\n", StringComparison.Ordinal),
            failed.StderrText);
        Assert.EndsWith("ValueError: boom\n", failed.StderrText);
        Assert.DoesNotContain("forkserver", failed.StderrText);
        Assert.Equal("1 False\n", after.StdoutText);
        Assert.False(afterRun.StateReset);
    }

    [Fact]
    public async Task Persistent_SystemExit_GivesItsExitCode_AndTheKernelGoesOn()
    {
        var (exited, exitedRun) = await RunAsync(Persistent("import os, sys\ny = 5\nprint(os.getpid())\nsys.exit(3)\n"));
        var (next, nextRun) = await RunAsync(Persistent("import os\nprint(os.getpid(), y)\n"));

        Assert.Equal(TerminationReason.Exited, exitedRun.Reason);
        Assert.Equal(3, exitedRun.ExitCode);
        string kernel = exited.StdoutText.Trim();
        Assert.Equal($"{kernel} 5\n", next.StdoutText);
        Assert.NotEqual(Agent.Pid.ToString(), kernel);
        Assert.Equal(0, nextRun.ExitCode);
        Assert.False(nextRun.StateReset);
    }

    [Fact]
    public async Task Persistent_FinalExpression_ComesBackAsItsRepr()
    {
        var (frames, run) = await RunAsync(Persistent("import json\nx = {'a': [1, 'two']}\nprint('side effect')\nx['a']\n"));

        Assert.Equal(0, run.ExitCode);
        Assert.Equal("[1, 'two']", run.ResultRepr);
        Assert.Equal("side effect\n", frames.StdoutText); // the repr is not printed
    }

    [Theory]
    [InlineData("x = 1\n")]
    [InlineData("x = 1\nNone\n")]
    [InlineData("print('only a call')\n")]
    [InlineData("for i in range(2):\n    i\n")]
    public async Task Persistent_NoFinalValue_HasNoRepr(string code)
    {
        var (_, run) = await RunAsync(Persistent(code));

        Assert.Equal(0, run.ExitCode);
        Assert.Null(run.ResultRepr);
    }

    [Fact]
    public async Task Persistent_FinalExpressionThatRaises_PointsAtItsLine_AndHasNoRepr()
    {
        var (frames, run) = await RunAsync(Persistent("ok = 1\n\nno_such_name\n"));
        var (_, next) = await RunAsync(Persistent("ok\n"));

        Assert.Equal(1, run.ExitCode);
        Assert.Null(run.ResultRepr);
        Assert.Contains($"File \"{Path.Combine(Agent.Home, "main.py")}\", line 3, in <module>", frames.StderrText);
        Assert.EndsWith("NameError: name 'no_such_name' is not defined\n", frames.StderrText);
        Assert.Equal("1", next.ResultRepr);
    }

    [Fact]
    public async Task Persistent_HugeRepr_IsCutAndMarked()
    {
        var (_, run) = await RunAsync(Persistent("'é' * 100000\n"));

        Assert.Equal(0, run.ExitCode);
        string repr = run.ResultRepr!;
        Assert.StartsWith("'ééé", repr, StringComparison.Ordinal);
        Assert.True(Encoding.UTF8.GetByteCount(repr) < 70_000, $"{repr.Length} characters");
        Assert.EndsWith("... [repr truncated: 200002 bytes]", repr);
    }

    [Fact]
    public async Task Persistent_StdinCwdEnvAndArgv_AreEachRunsOwn()
    {
        const string Code = """
            import os, sys
            print(sys.stdin.read().strip(), os.path.basename(os.getcwd()), os.environ.get("ONE"), os.environ.get("TWO"), sys.argv[1:])
            """;
        var first = Persistent(Code);
        first.Cwd = Path.Combine(Agent.Home, "a");
        first.Stdin = "first input\n";
        first.Env["ONE"] = "1";
        first.Run = ["python3", "-u", "main.py", "x"];
        first.ForkServer!.Script = "main.py";
        var second = Persistent(Code);
        second.Cwd = Path.Combine(Agent.Home, "b");
        second.Stdin = "second input\n";
        second.Env["TWO"] = "2";

        var (one, oneRun) = await RunAsync(first);
        var (two, twoRun) = await RunAsync(second);
        var (three, _) = await RunAsync(Persistent("import sys\nprint(repr(sys.stdin.read()))\n"));

        Assert.Equal("first input a 1 None ['x']\n", one.StdoutText);
        Assert.Equal("second input b None 2 []\n", two.StdoutText);
        Assert.Equal("''\n", three.StdoutText); // no stdin: empty, not the kernel's own
        Assert.True(oneRun.Forked && twoRun.Forked, Agent.AgentStderr);
        Assert.False(twoRun.StateReset);
    }

    [Fact]
    public async Task Persistent_Timeout_InterruptsTheRun_AndTheKernelKeepsItsState()
    {
        var (setup, _) = await RunAsync(Persistent("import os\nx = 5\nprint(os.getpid())\n"));
        int kernel = int.Parse(setup.StdoutText.Trim());

        var (timedOutFrames, timedOut) = await RunAsync(Persistent("import time\ny = 1\ntime.sleep(1000)\n", timeoutMs: 1500));
        var stopwatch = System.Diagnostics.Stopwatch.StartNew();
        var (after, afterRun) = await RunAsync(Persistent("import os\nprint(x, y, os.getpid())\nx + 1\n"));

        Assert.Equal(TerminationReason.Timeout, timedOut.Reason);
        Assert.Null(timedOut.Signal);
        Assert.Contains("KeyboardInterrupt", timedOutFrames.StderrText);
        Assert.True(timedOut.DurationMs < 1500 + ExecLimits.KernelInterruptGrace.TotalMilliseconds, $"{timedOut.DurationMs} ms");
        Assert.Equal($"5 1 {kernel}\n", after.StdoutText);
        Assert.Equal("6", afterRun.ResultRepr);
        Assert.False(afterRun.StateReset);
        // The same kernel answers: no interpreter start (seconds under TCG) before the next result.
        Assert.True(stopwatch.Elapsed < TimeSpan.FromSeconds(5), $"{stopwatch.Elapsed}");
    }

    [Fact]
    public async Task Persistent_KernelStillStarting_TheRunGoesPlainWithItsWholeTimeout()
    {
        // A kernel whose imports take longer than the run may wait (a loaded or emulated host): the run
        // goes plain, and the wait is not taken off the program's time (it was: half the timeout).
        var exec = Persistent("import time\ntime.sleep(2)\nprint('done')\n", timeoutMs: 3000);
        exec.Files["slowstart.py"] = "import time\ntime.sleep(30)\n";
        exec.Env["PYTHONPATH"] = Agent.Home;
        exec.ForkServer!.Preload = ["slowstart"];

        var (frames, run) = await RunAsync(exec);

        Assert.Equal(TerminationReason.Exited, run.Reason);
        Assert.Equal("done\n", frames.StdoutText);
        Assert.False(run.Forked);
        Assert.True(run.StateReset);
    }

    [Fact]
    public async Task Persistent_TimeoutThatIgnoresTheInterrupt_KillsTheKernel_AndTheNextRunStartsOverWithoutTheState()
    {
        var (setup, _) = await RunAsync(Persistent("import os\nx = 1\nprint(os.getpid())\n"));
        int kernel = int.Parse(setup.StdoutText.Trim());

        const string stubborn = "import time\nwhile True:\n    try:\n        time.sleep(1000)\n    except KeyboardInterrupt:\n        print('ignored', flush=True)\n";
        var (timedOutFrames, timedOut) = await RunAsync(Persistent(stubborn, timeoutMs: 1500));
        var (after, afterRun) = await RunAsync(Persistent("import os\nprint('x' in globals(), os.getpid())\n"));

        Assert.Equal(TerminationReason.Timeout, timedOut.Reason);
        Assert.Equal(9, timedOut.Signal);
        Assert.Equal("ignored\n", timedOutFrames.StdoutText);
        Assert.True(timedOut.DurationMs >= 1500 + ExecLimits.KernelInterruptGrace.TotalMilliseconds, $"{timedOut.DurationMs} ms");
        Assert.True(await ProcessTable.WaitUntilAsync(() => !ProcessTable.IsAlive(kernel), TimeSpan.FromSeconds(3), Ct));
        string[] words = after.StdoutText.Split();
        Assert.Equal("False", words[0]);
        Assert.NotEqual(kernel.ToString(), words[1]);
        Assert.True(afterRun.StateReset);
        Assert.True(afterRun.Forked, Agent.AgentStderr);
    }

    [Fact]
    public async Task Persistent_InterruptAfterTheRunEnded_IsIgnoredByTheKernel()
    {
        var (setup, _) = await RunAsync(Persistent("import os\nx = 3\nprint(os.getpid())\n"));
        int kernel = int.Parse(setup.StdoutText.Trim());

        // A timeout's SIGINT that reaches the kernel between jobs must not end it.
        using (var kill = System.Diagnostics.Process.Start("kill", ["-INT", kernel.ToString()]))
        {
            await kill.WaitForExitAsync(Ct);
            Assert.Equal(0, kill.ExitCode);
        }
        var (after, afterRun) = await RunAsync(Persistent("import os\nprint(x, os.getpid())\n"));

        Assert.Equal($"3 {kernel}\n", after.StdoutText);
        Assert.False(afterRun.StateReset);
    }

    [Fact]
    public async Task Persistent_KernelThatDiesOnItsOwn_IsReplaced_AndTheNextRunSaysSo()
    {
        var (_, died) = await RunAsync(Persistent("import os\nx = 1\nos._exit(7)\n"));
        var (after, afterRun) = await RunAsync(Persistent("print('x' in globals())\n"));

        Assert.Equal(TerminationReason.Exited, died.Reason);
        Assert.Equal(7, died.ExitCode);
        Assert.Equal("False\n", after.StdoutText);
        Assert.True(afterRun.StateReset);
    }

    [Fact]
    public async Task Persistent_Cancel_KillsTheKernel()
    {
        uint id = await Agent.StartAsync(new AgentRequest
        {
            Op = Ops.Exec,
            Exec = Persistent("import os, time\nprint(os.getpid(), flush=True)\ntime.sleep(1000)\n", timeoutMs: 600_000),
        }, Ct);
        Assert.Equal(FrameType.Event, (await Agent.NextFrameAsync(id, Ct)).Type);
        int kernel = int.Parse(Encoding.UTF8.GetString((await Agent.NextFrameAsync(id, Ct)).Payload.Span).Trim());

        await Agent.SendAsync(FrameType.Cancel, id, ReadOnlyMemory<byte>.Empty, Ct);

        var run = (await Agent.CollectAsync(id, Ct)).Response(ProtocolJson.Default.ExecResult).Run!;
        Assert.Equal(TerminationReason.Cancelled, run.Reason);
        Assert.True(await ProcessTable.WaitUntilAsync(() => !ProcessTable.IsAlive(kernel), TimeSpan.FromSeconds(3), Ct));
    }

    [Fact]
    public async Task Persistent_KernelIsNotTheForkServer_ForkedRunsDoNotSeeItsState()
    {
        var (kernelRun, _) = await RunAsync(Persistent("import os\nshared = 1\nprint(os.getpid())\n"));
        var forked = Persistent("import os\nprint('shared' in globals(), os.getppid())\n");
        forked.ForkServer!.Persistent = false;

        var (forkedRun, run) = await RunAsync(forked);
        var (again, _) = await RunAsync(Persistent("print(shared)\n"));

        Assert.True(run.Forked, Agent.AgentStderr);
        Assert.False(run.StateReset);
        string[] words = forkedRun.StdoutText.Split();
        Assert.Equal("False", words[0]);
        Assert.NotEqual(kernelRun.StdoutText.Trim(), words[1]);
        Assert.Equal("1\n", again.StdoutText);
    }

    [Fact]
    public async Task Persistent_ConcurrentRuns_TakeTurnsInTheOneKernel()
    {
        await RunAsync(Persistent("import time\nturns = []\n"));
        var second = Persistent("turns.append('b')\nprint(turns)\n");
        second.Files = new() { ["second.py"] = "turns.append('b')\nprint(turns)\n" };
        second.Run = ["python3", "-u", "second.py"];
        second.OutputsDir = Path.Combine(Agent.Root, "outputs-2");

        uint a = await Agent.StartAsync(new AgentRequest
        {
            Op = Ops.Exec,
            Exec = Persistent("print('a runs', flush=True)\ntime.sleep(0.5)\nturns.append('a')\n"),
        }, Ct);
        Assert.Equal(FrameType.Event, (await Agent.NextFrameAsync(a, Ct)).Type);
        Assert.Equal(FrameType.Stdout, (await Agent.NextFrameAsync(a, Ct)).Type); // a has the kernel
        uint b = await Agent.StartAsync(new AgentRequest { Op = Ops.Exec, Exec = second }, Ct);

        var first = await Agent.CollectAsync(a, Ct);
        var other = await Agent.CollectAsync(b, Ct);
        Assert.Equal(0, first.Response(ProtocolJson.Default.ExecResult).Run!.ExitCode);
        var otherRun = other.Response(ProtocolJson.Default.ExecResult).Run!;
        Assert.Equal(0, otherRun.ExitCode);
        Assert.False(otherRun.StateReset);
        Assert.Equal("['a', 'b']\n", other.StdoutText);
    }

    [Fact]
    public async Task Persistent_WhenTheAgentExits_TheKernelGoesToo()
    {
        var (frames, _) = await RunAsync(Persistent("import os\nprint(os.getpid())\n"));
        int kernel = int.Parse(frames.StdoutText.Trim());

        Agent.CloseInput();

        Assert.True(await Agent.WaitForExitAsync(TimeSpan.FromSeconds(10), Ct));
        Assert.True(await ProcessTable.WaitUntilAsync(() => !ProcessTable.IsAlive(kernel), TimeSpan.FromSeconds(3), Ct));
    }
}
