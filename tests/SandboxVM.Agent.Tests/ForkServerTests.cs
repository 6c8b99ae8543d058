using System.Diagnostics;
using System.Runtime.Versioning;
using System.Text;
using SandboxVM.Protocol;

namespace SandboxVM.Agent.Tests;

/// <summary>
/// Run steps through the agent's fork server, with the host's python3. The preloaded modules are
/// stdlib ones (json, decimal): the host may have no numpy.
/// </summary>
[SupportedOSPlatform("linux")]
[Trait("tier", "integration")]
public class ForkServerTests : AgentTestBase
{
    private static readonly string[] _preload = ["json", "decimal"];

    /// <summary>main.py in the test's home, run as <c>python3 -u main.py</c> through the fork server.</summary>
    private ExecRequest Python(string code, int timeoutMs = 10_000, string[]? run = null) => new()
    {
        Cwd = Agent.Home,
        OutputsDir = Agent.Outputs,
        Files = { ["main.py"] = code },
        Run = [.. run ?? ["python3", "-u", "main.py"]],
        RunTimeoutMs = timeoutMs,
        ForkServer = new ForkServerRequest { Preload = [.. _preload] },
    };

    [Fact]
    public async Task Fork_PrintsReadsStdinAndExitsWithTheScriptsCode()
    {
        var exec = Python("""
            import os, sys
            print(sys.stdin.read().upper(), end="")
            print("argv", sys.argv, __name__, os.getcwd() == os.environ["HOME"], os.environ["GREETING"])
            print("to stderr", file=sys.stderr)
            print("json" in sys.modules, os.getpid() == os.getpgid(0) == os.getsid(0))
            sys.exit(3)
            """);
        exec.Run = ["python3", "-u", "main.py", "one", "two"];
        exec.ForkServer!.Script = "main.py";
        exec.Stdin = "shout this\n";
        exec.Env["GREETING"] = "hi";
        exec.Env["HOME"] = Agent.Home;

        var result = await Agent.ExecAsync(exec, Ct);

        var run = result.Response(ProtocolJson.Default.ExecResult).Run!;
        Assert.True(run.Forked, Agent.AgentStderr);
        Assert.Equal(TerminationReason.Exited, run.Reason);
        Assert.Equal(3, run.ExitCode);
        Assert.Equal("SHOUT THIS\nargv ['main.py', 'one', 'two'] __main__ True hi\nTrue True\n", result.StdoutText);
        Assert.Equal("to stderr\n", result.StderrText);
        Assert.Equal(result.Stdout.Length, run.StdoutBytes);
    }

    [Fact]
    public async Task Fork_Exception_PrintsAPlainTracebackAndExits1()
    {
        var result = await Agent.ExecAsync(Python("def f():\n    1 / 0\n\nf()\n"), Ct);

        var run = result.Response(ProtocolJson.Default.ExecResult).Run!;
        Assert.True(run.Forked, Agent.AgentStderr);
        Assert.Equal(1, run.ExitCode);
        string main = Path.Combine(Agent.Home, "main.py");
        Assert.True(result.StderrText.StartsWith($"Traceback (most recent call last):\n  File \"{main}\", line 4, in <module>\n", StringComparison.Ordinal),
            result.StderrText);
        Assert.EndsWith("ZeroDivisionError: division by zero\n", result.StderrText);
        Assert.DoesNotContain("forkserver", result.StderrText);
    }

    [Fact]
    public async Task Fork_SyntaxErrorAndSystemExitMessages_LookLikeAPlainRun()
    {
        var syntax = await Agent.ExecAsync(Python("print(\n"), Ct);
        var message = await Agent.ExecAsync(Python("import sys\nsys.exit('bye')\n"), Ct);

        Assert.Equal(1, syntax.Response(ProtocolJson.Default.ExecResult).Run!.ExitCode);
        Assert.True(syntax.StderrText.StartsWith($"  File \"{Path.Combine(Agent.Home, "main.py")}\", line 1\n", StringComparison.Ordinal),
            syntax.StderrText);
        Assert.Contains("SyntaxError", syntax.StderrText);
        Assert.Equal(1, message.Response(ProtocolJson.Default.ExecResult).Run!.ExitCode);
        Assert.Equal("bye\n", message.StderrText);
    }

    [Fact]
    public async Task Fork_Exit_JoinsThreadsRunsAtexitAndFlushesFilesLeftOpen()
    {
        var result = await Agent.ExecAsync(Python("""
            import atexit, threading, time
            atexit.register(lambda: print("atexit"))
            threading.Thread(target=lambda: (time.sleep(0.3), print("thread"))).start()
            left_open = open("left-open.txt", "w")
            left_open.write("flushed")
            print("main")
            """), Ct);

        var run = result.Response(ProtocolJson.Default.ExecResult).Run!;
        Assert.True(run.Forked, Agent.AgentStderr);
        Assert.Equal(0, run.ExitCode);
        Assert.Equal("main\nthread\natexit\n", result.StdoutText);
        Assert.Equal("flushed", await File.ReadAllTextAsync(Path.Combine(Agent.Home, "left-open.txt"), Ct));
    }

    [Fact]
    public async Task Fork_Timeout_KillsTheChildsWholeGroup()
    {
        var stopwatch = Stopwatch.StartNew();

        var result = await Agent.ExecAsync(Python("""
            import os, time
            if os.fork() == 0:
                time.sleep(1000)
            print(os.getpgid(0), flush=True)
            time.sleep(1000)
            """, timeoutMs: 1500), Ct);

        var run = result.Response(ProtocolJson.Default.ExecResult).Run!;
        Assert.True(run.Forked, Agent.AgentStderr);
        Assert.Equal(TerminationReason.Timeout, run.Reason);
        Assert.Equal(9, run.Signal);
        Assert.True(stopwatch.Elapsed < TimeSpan.FromSeconds(60), $"took {stopwatch.ElapsedMilliseconds} ms");
        int pgid = int.Parse(result.StdoutText.Trim());
        Assert.True(await ProcessTable.WaitUntilAsync(() => ProcessTable.LiveMembersOf(pgid).Count == 0, TimeSpan.FromSeconds(3), Ct),
            $"left behind: {string.Join(',', ProcessTable.LiveMembersOf(pgid))}");
    }

    [Fact]
    public async Task Fork_OutputLimit_StreamsExactlyTheLimitAndKills()
    {
        var exec = Python("import sys\nwhile True:\n    sys.stdout.write('x' * 4096)\n");
        exec.OutputLimitBytes = 100_000;

        var result = await Agent.ExecAsync(exec, Ct);

        var run = result.Response(ProtocolJson.Default.ExecResult).Run!;
        Assert.True(run.Forked, Agent.AgentStderr);
        Assert.Equal(TerminationReason.OutputLimit, run.Reason);
        Assert.Equal(100_000, result.Stdout.Length);
        Assert.Equal(100_000, run.StdoutBytes);
    }

    [Fact]
    public async Task Fork_Cancel_KillsTheGroupAndReportsCancelled()
    {
        uint id = await Agent.StartAsync(new AgentRequest
        {
            Op = Ops.Exec,
            Exec = Python("import os, time\nprint(os.getpgid(0), flush=True)\ntime.sleep(1000)\n", timeoutMs: 600_000),
        }, Ct);
        Assert.Equal(FrameType.Event, (await Agent.NextFrameAsync(id, Ct)).Type);
        int pgid = int.Parse(Encoding.UTF8.GetString((await Agent.NextFrameAsync(id, Ct)).Payload.Span).Trim());

        await Agent.SendAsync(FrameType.Cancel, id, ReadOnlyMemory<byte>.Empty, Ct);

        var run = (await Agent.CollectAsync(id, Ct)).Response(ProtocolJson.Default.ExecResult).Run!;
        Assert.True(run.Forked);
        Assert.Equal(TerminationReason.Cancelled, run.Reason);
        Assert.True(await ProcessTable.WaitUntilAsync(() => ProcessTable.LiveMembersOf(pgid).Count == 0, TimeSpan.FromSeconds(3), Ct));
    }

    [Fact]
    public async Task Fork_TwoExecs_ReuseOneServer_InAPrivateDirectory_AndAreFasterThanPlainRuns()
    {
        const string Code = "import os, sys\nprint(os.getppid())\n";
        var plain = Python(Code);
        plain.ForkServer = null;
        var plainTimes = new List<long>();
        for (int i = 0; i < 3; i++)
        {
            var stopwatch = Stopwatch.StartNew();
            await Agent.ExecAsync(plain, Ct);
            plainTimes.Add(stopwatch.ElapsedMilliseconds);
        }

        var first = Stopwatch.StartNew();
        var warmUp = await Agent.ExecAsync(Python(Code), Ct);
        long firstMs = first.ElapsedMilliseconds;
        var forkTimes = new List<long>();
        var parents = new List<string>();
        for (int i = 0; i < 3; i++)
        {
            var stopwatch = Stopwatch.StartNew();
            var result = await Agent.ExecAsync(Python(Code), Ct);
            forkTimes.Add(stopwatch.ElapsedMilliseconds);
            Assert.True(result.Response(ProtocolJson.Default.ExecResult).Run!.Forked, Agent.AgentStderr);
            parents.Add(result.StdoutText.Trim());
        }

        string server = warmUp.StdoutText.Trim();
        Assert.All(parents, p => Assert.Equal(server, p));
        Assert.NotEqual(Agent.Pid.ToString(), server);
        // The socket lives in a directory only the agent's user may enter.
        string socketPath = File.ReadAllText($"/proc/{server}/cmdline").Split('\0').First(a => a.EndsWith("/sock", StringComparison.Ordinal));
        Assert.Equal(UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute,
            File.GetUnixFileMode(Path.GetDirectoryName(socketPath)!));
        TestContext.Current.TestOutputHelper?.WriteLine(
            $"print(os.getppid()) end to end, ms: plain {string.Join('/', plainTimes)}; fork server first (start) {firstMs}, then {string.Join('/', forkTimes)}");
    }

    [Fact]
    public async Task Fork_AJobFromAnotherProcessThanTheAgent_IsRefusedWithoutRunning()
    {
        // The server is up (its pid is a forked child's parent); its socket is on its command line.
        var warmUp = await Agent.ExecAsync(Python("import os\nprint(os.getppid())\n"), Ct);
        Assert.True(warmUp.Response(ProtocolJson.Default.ExecResult).Run!.Forked, Agent.AgentStderr);
        string server = warmUp.StdoutText.Trim();
        string socketPath = File.ReadAllText($"/proc/{server}/cmdline").Split('\0').First(a => a.EndsWith("/sock", StringComparison.Ordinal));
        string marker = Path.Combine(Agent.Home, "impostor-ran");

        // Another process sends a well-formed job with three fds, as the agent would.
        const string Impostor = """
            import array, json, os, socket, struct, sys
            c = socket.socket(socket.AF_UNIX)
            c.connect(sys.argv[1])
            job = json.dumps({"script": sys.argv[2], "args": [], "cwd": "/", "env": {}, "outputs": "/tmp", "save_figures": False}).encode()
            r, w = os.pipe()
            c.sendmsg([struct.pack(">I", len(job)) + job], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", [r, w, w]))])
            c.settimeout(10)
            print(c.recv(4096).decode(), end="")
            """;
        await File.WriteAllTextAsync(Path.Combine(Agent.Home, "impostor.py"), Impostor, Ct);
        await File.WriteAllTextAsync(Path.Combine(Agent.Home, "job.py"), $"open({System.Text.Json.JsonSerializer.Serialize(marker)}, 'w').write('x')\n", Ct);
        var psi = new ProcessStartInfo("python3") { RedirectStandardOutput = true, RedirectStandardError = true };
        foreach (string a in (string[])[Path.Combine(Agent.Home, "impostor.py"), socketPath, Path.Combine(Agent.Home, "job.py")])
        {
            psi.ArgumentList.Add(a);
        }
        using var impostor = Process.Start(psi)!;
        string answer = await impostor.StandardOutput.ReadToEndAsync(Ct);
        await impostor.WaitForExitAsync(Ct);

        Assert.StartsWith("error connection from pid", answer);
        Assert.Contains("not from the agent", answer);
        Assert.False(File.Exists(marker), "the impostor's job ran");
        // The agent's own jobs still run.
        Assert.True((await Agent.ExecAsync(Python("print(1)\n"), Ct)).Response(ProtocolJson.Default.ExecResult).Run!.Forked, Agent.AgentStderr);
    }

    [Fact]
    public async Task Fork_ConcurrentExecs_ShareTheServer()
    {
        const string Code = "import os, time\ntime.sleep(0.5)\nprint(os.getppid())\n";
        await Agent.ExecAsync(Python("pass\n"), Ct);
        var second = Python(Code);
        second.OutputsDir = Path.Combine(Agent.Root, "outputs-2");

        uint a = await Agent.StartAsync(new AgentRequest { Op = Ops.Exec, Exec = Python(Code) }, Ct);
        uint b = await Agent.StartAsync(new AgentRequest { Op = Ops.Exec, Exec = second }, Ct);

        var first = await Agent.CollectAsync(a, Ct);
        var other = await Agent.CollectAsync(b, Ct);
        Assert.True(first.Response(ProtocolJson.Default.ExecResult).Run!.Forked);
        Assert.True(other.Response(ProtocolJson.Default.ExecResult).Run!.Forked);
        Assert.Equal(first.StdoutText, other.StdoutText);
    }

    [Fact]
    public async Task Fork_RandomModule_IsReseededInEveryChild()
    {
        const string Code = "import random\nprint(random.random())\n";

        var one = await Agent.ExecAsync(Python(Code), Ct);
        var two = await Agent.ExecAsync(Python(Code), Ct);

        Assert.True(two.Response(ProtocolJson.Default.ExecResult).Run!.Forked);
        Assert.NotEqual(one.StdoutText, two.StdoutText);
    }

    [Fact]
    public async Task Fork_WhenTheServerWasKilled_TheNextExecStartsANewOne()
    {
        const string Code = "import os\nprint(os.getppid())\n";
        int server = int.Parse((await Agent.ExecAsync(Python(Code), Ct)).StdoutText.Trim());

        Process.Start("kill", ["-KILL", server.ToString()]).WaitForExit();
        Assert.True(await ProcessTable.WaitUntilAsync(() => !ProcessTable.IsAlive(server), TimeSpan.FromSeconds(3), Ct));
        var next = await Agent.ExecAsync(Python(Code), Ct);

        Assert.True(next.Response(ProtocolJson.Default.ExecResult).Run!.Forked, Agent.AgentStderr);
        int replacement = int.Parse(next.StdoutText.Trim());
        Assert.NotEqual(server, replacement);
        Assert.NotEqual(Agent.Pid, replacement);
    }

    [Fact]
    public async Task Fork_AnotherPythonVariable_RetiresTheServerForANewOne()
    {
        const string Code = "import os\nprint(os.getppid(), os.environ.get('PYTHONHASHSEED'))\n";
        var first = await Agent.ExecAsync(Python(Code), Ct);
        var seeded = Python(Code);
        seeded.Env["PYTHONHASHSEED"] = "0";

        var second = await Agent.ExecAsync(seeded, Ct);

        Assert.True(second.Response(ProtocolJson.Default.ExecResult).Run!.Forked, Agent.AgentStderr);
        string[] before = first.StdoutText.Split();
        string[] after = second.StdoutText.Split();
        Assert.Equal("None", before[1]);
        Assert.Equal("0", after[1]);
        Assert.NotEqual(before[0], after[0]);
        // The retired server had no job left: it exits by itself.
        Assert.True(await ProcessTable.WaitUntilAsync(() => !ProcessTable.IsAlive(int.Parse(before[0])), TimeSpan.FromSeconds(5), Ct));
    }

    [Fact]
    public async Task Fork_WhenTheServerStopsAnswering_TheTimeoutStillHolds()
    {
        // The step must go through a ready fork server: one still starting (over 1.5 s on a loaded host)
        // makes it a plain process whose parent is the agent, and stopping that would stop the agent.
        await WaitForForkServerAsync();
        uint id = await Agent.StartAsync(new AgentRequest
        {
            Op = Ops.Exec,
            Exec = Python("import os, time\nprint(os.getppid(), flush=True)\ntime.sleep(1000)\n", timeoutMs: 1500),
        }, Ct);
        Assert.Equal(FrameType.Event, (await Agent.NextFrameAsync(id, Ct)).Type);
        int server = int.Parse(Encoding.UTF8.GetString((await Agent.NextFrameAsync(id, Ct)).Payload.Span).Trim());
        // A stopped server can neither reap the child nor report its status.
        Process.Start("kill", ["-STOP", server.ToString()]).WaitForExit();
        try
        {
            var stopwatch = Stopwatch.StartNew();
            var run = (await Agent.CollectAsync(id, Ct)).Response(ProtocolJson.Default.ExecResult).Run!;

            Assert.Equal(TerminationReason.Timeout, run.Reason);
            Assert.Equal(9, run.Signal);
            Assert.True(stopwatch.Elapsed < TimeSpan.FromSeconds(60), $"took {stopwatch.ElapsedMilliseconds} ms");
        }
        finally
        {
            Process.Start("kill", ["-CONT", server.ToString()]).WaitForExit();
        }
    }

    /// <summary>Runs trivial steps until one is forked by the server (bounded: 20 tries).</summary>
    private async Task WaitForForkServerAsync()
    {
        for (int i = 0; i < 20; i++)
        {
            if ((await Agent.ExecAsync(Python("pass\n"), Ct)).Response(ProtocolJson.Default.ExecResult).Run!.Forked)
            {
                return;
            }
        }
        Assert.Fail("the fork server never took a step: " + Agent.AgentStderr);
    }

    [Fact]
    public async Task Fork_WhenTheServerCannotStart_RunsAPlainProcess()
    {
        // cat is no Python: the "server" prints its script and exits, and the step runs as `cat main.py`.
        var exec = Python("plain\n", run: ["cat", "main.py"]);

        var first = await Agent.ExecAsync(exec, Ct);
        var second = await Agent.ExecAsync(exec, Ct);

        foreach (var result in new[] { first, second })
        {
            var run = result.Response(ProtocolJson.Default.ExecResult).Run!;
            Assert.False(run.Forked);
            Assert.Equal(0, run.ExitCode);
            Assert.Equal("plain\n", result.StdoutText);
        }
        Assert.Contains("fork server did not start", Agent.AgentStderr);
    }

    [Fact]
    public async Task Fork_WhenPythonIsMissing_FailsLikeAPlainRunWith127()
    {
        var result = await Agent.ExecAsync(Python("print(1)\n", run: ["no-such-python3", "main.py"]), Ct);

        var run = result.Response(ProtocolJson.Default.ExecResult).Run!;
        Assert.False(run.Forked);
        Assert.Equal(127, run.ExitCode);
        Assert.Contains("no-such-python3: command not found", result.StderrText);
    }

    [Theory]
    [InlineData("not a module", "")]
    [InlineData("json", "other.py")]
    public async Task Fork_InvalidRequest_IsABadRequest(string module, string script)
    {
        var exec = Python("print(1)\n");
        exec.ForkServer = new ForkServerRequest { Preload = [module], Script = script };

        var error = (await Agent.ExecAsync(exec, Ct)).Error();

        Assert.Equal(ErrorCodes.BadRequest, error.Code);
        Assert.Contains("fork_server", error.Message);
    }

    [Fact]
    public async Task Fork_WhenTheAgentExits_TheServerGoesToo()
    {
        int server = int.Parse((await Agent.ExecAsync(Python("import os\nprint(os.getppid())\n"), Ct)).StdoutText.Trim());

        Agent.CloseInput();

        Assert.True(await Agent.WaitForExitAsync(TimeSpan.FromSeconds(10), Ct));
        Assert.True(await ProcessTable.WaitUntilAsync(() => !ProcessTable.IsAlive(server), TimeSpan.FromSeconds(3), Ct));
    }
}
