using System.Runtime.Versioning;
using SandboxVM.Protocol;

namespace SandboxVM.Agent.Tests;

/// <summary>
/// Nothing a run starts outlives it (<see cref="ExecRequest.EndUserProcesses"/>), and runs of a VM that
/// several callers share each get a uid and a private directory of their own (<see cref="ExecRequest.User"/>).
/// The agent runs as root in a PID namespace of its own (as PID 1, like in a VM), so "every process of
/// the user" is that namespace's and no process of the test machine can be touched.
/// </summary>
[SupportedOSPlatform("linux")]
[Trait("tier", "integration")]
public sealed class RunUserTests : IAsyncLifetime
{
    private const string NeedsRoot = "needs root: the agent switches users only when it runs as root";
    private static readonly string[] _launcher = ["unshare", "--pid", "--fork", "--kill-child"];

    private AgentHarness? _agent;

    private static CancellationToken Ct => TestContext.Current.CancellationToken;

    private AgentHarness Agent => _agent ?? throw new InvalidOperationException("agent not started");

    private string Runs => Path.Combine(Agent.Root, "runs");

    public async ValueTask InitializeAsync()
    {
        if (StepUser.Switches)
        {
            _agent = await AgentHarness.StartAsync(null, _launcher);
            await _agent.HelloAsync(Ct);
        }
    }

    public async ValueTask DisposeAsync()
    {
        if (_agent is not null)
        {
            await _agent.DisposeAsync();
        }
    }

    private ExecRequest RunAs(int user, string name, string script, bool endUserProcesses = true)
    {
        string dir = Path.Combine(Runs, name);
        return new ExecRequest
        {
            User = user,
            Cwd = dir,
            OutputsDir = Path.Combine(dir, "outputs"),
            Env = { ["HOME"] = dir, ["TMPDIR"] = dir },
            Files = { ["main.sh"] = script },
            Run = ["sh", "main.sh"],
            RunTimeoutMs = 20_000,
            EndUserProcesses = endUserProcesses,
        };
    }

    /// <summary>Processes in the agent's PID namespace other than the agent itself, as "pid uid" (host pids).</summary>
    private List<string> UserWork() => ProcessTable.InPidNamespaceOf(AgentHostPid()).Where(p => p.Pid != AgentHostPid())
        .Select(p => $"{p.Pid} uid {p.Uid}").ToList();

    private int AgentHostPid() => Assert.Single(ProcessTable.ChildrenOf(Agent.Pid));

    [Fact]
    public async Task RunUser_RunsInAFreshPrivateDirectory_OthersCannotEnterIt_AndTheHostReadsAndRemovesIt()
    {
        Assert.SkipUnless(StepUser.Switches, NeedsRoot);
        string a = Path.Combine(Runs, "a");

        var first = await Agent.ExecAsync(RunAs(2001, "a", """
            id -u; id -g; id -G
            stat -c '%u %a' . ..
            echo "$HOME"
            echo out > outputs/o.txt
            """), Ct);
        var second = await Agent.ExecAsync(RunAs(2002, "b", "cat ../a/main.sh; ls ..; ls ../a; echo end"), Ct);
        var read = await Agent.FileAsync(Ops.FileRead, Path.Combine(a, "outputs", "o.txt"), Ct);
        var removed = await Agent.FileAsync(Ops.FileRemove, a, Ct, recursive: true);

        var result = first.Response(ProtocolJson.Default.ExecResult);
        Assert.True(result.Run!.ExitCode == 0, first.StderrText);
        Assert.Equal($"2001\n2001\n2001\n2001 700\n0 711\n{a}\n", first.StdoutText);
        Assert.Equal(Path.Combine(a, "outputs", "o.txt"), Assert.Single(result.Artifacts).Path);
        Assert.Equal("end\n", second.StdoutText);
        Assert.Equal(3, second.StderrText.Split("Permission denied").Length - 1);
        Assert.Equal("out\n", System.Text.Encoding.UTF8.GetString(read.Data));
        Assert.True(removed.Succeeded, removed.Terminal.ToString());
        Assert.False(Directory.Exists(a));
        Assert.Equal("0:0", StepUser.OwnerOf(Runs));
        Assert.Equal(UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute | UnixFileMode.GroupExecute | UnixFileMode.OtherExecute,
            File.GetUnixFileMode(Runs));
    }

    [Theory]
    [InlineData(0)]
    [InlineData(1000)]
    [InlineData(1999)]
    [InlineData(3000)]
    public async Task RunUser_OutsideTheRunRange_IsABadRequest(int user)
    {
        Assert.SkipUnless(StepUser.Switches, NeedsRoot);

        var frames = await Agent.ExecAsync(RunAs(user, "x", "echo ran"), Ct);

        var error = frames.Error();
        Assert.Equal(ErrorCodes.BadRequest, error.Code);
        Assert.Contains(user.ToString(System.Globalization.CultureInfo.InvariantCulture), error.Message);
        Assert.False(Directory.Exists(Path.Combine(Runs, "x")));
    }

    [Fact]
    public async Task RunUser_NeedsAFreshDirectoryUnderARootOwnedParent()
    {
        Assert.SkipUnless(StepUser.Switches, NeedsRoot);
        Directory.CreateDirectory(Path.Combine(Runs, "taken"));
        var existing = await Agent.ExecAsync(RunAs(2001, "taken", "echo ran"), Ct);
        var underHome = RunAs(2001, "x", "echo ran");
        underHome.Cwd = Path.Combine(Agent.Home, "run");
        var inHome = await Agent.ExecAsync(underHome, Ct);

        Assert.Equal(ErrorCodes.BadRequest, existing.Error().Code);
        Assert.Contains("fresh", existing.Error().Message);
        Assert.Equal(ErrorCodes.BadRequest, inHome.Error().Code);
        Assert.Contains(Agent.Home, inHome.Error().Message);
        Assert.Empty(existing.Stdout);
        Assert.Empty(inHome.Stdout);
    }

    [Fact]
    public async Task EndUserProcesses_ADaemonThatLeftTheGroup_IsGoneBeforeTheArtifactsAreListed()
    {
        Assert.SkipUnless(StepUser.Switches, NeedsRoot);
        // The daemon keeps swapping the artifact for a symlink to a file outside the outputs and back.
        string elsewhere = Path.Combine(Agent.Root, "elsewhere.txt");
        await File.WriteAllTextAsync(elsewhere, "not an artifact\n", Ct);
        var exec = new ExecRequest
        {
            Cwd = Agent.Home,
            OutputsDir = Agent.Outputs,
            Run = ["sh", "-c", $$"""
                echo real > "$OUT/a.txt"
                setsid sh -c 'while :; do ln -sf {{elsewhere}} "$OUT/t"; mv -f "$OUT/t" "$OUT/a.txt"; echo real > "$OUT/u"; mv -f "$OUT/u" "$OUT/a.txt"; done' </dev/null >/dev/null 2>&1 &
                echo started
                """],
            Env = { ["OUT"] = Agent.Outputs },
            EndUserProcesses = true,
        };

        var frames = await Agent.ExecAsync(exec, Ct);

        var result = frames.Response(ProtocolJson.Default.ExecResult);
        Assert.Equal("started\n", frames.StdoutText);
        Assert.Empty(UserWork());
        foreach (var artifact in result.Artifacts)
        {
            var read = await Agent.FileAsync(Ops.FileRead, artifact.Path, Ct);
            string text = System.Text.Encoding.UTF8.GetString(read.Data);
            Assert.Equal(artifact.Size, read.Data.Length);
            Assert.DoesNotContain("not an artifact", text);
            // The daemon may have died between creating its next copy (u) and writing it: an empty u is
            // an artifact like any other; a.txt itself is only ever the real one.
            if (Path.GetFileName(artifact.Path) == "a.txt")
            {
                Assert.Equal("real\n", text);
            }
        }
    }

    [Fact]
    public async Task EndUserProcesses_OfARunUser_LeavesAnotherRunUsersProcessesAlone()
    {
        Assert.SkipUnless(StepUser.Switches, NeedsRoot);
        string go = Path.Combine(Runs, "b", "go");
        uint other = await Agent.StartAsync(new AgentRequest
        {
            Op = Ops.Exec,
            Exec = RunAs(2004, "b", "echo waiting; while [ ! -e go ]; do sleep 0.05; done; echo B done"),
        }, Ct);
        while ((await Agent.NextFrameAsync(other, Ct)).Type != FrameType.Stdout)
        {
            // run_started comes first
        }

        var first = await Agent.ExecAsync(RunAs(2003, "a", DaemonThenStarted), Ct);
        var left = ProcessTable.InPidNamespaceOf(AgentHostPid());
        await File.WriteAllTextAsync(go, "", Ct);
        var second = await Agent.CollectAsync(other, Ct);

        Assert.Equal("started\n", first.StdoutText);
        Assert.DoesNotContain(left, p => p.Uid == 2003);
        Assert.Contains(left, p => p.Uid == 2004);
        Assert.Contains("B done", second.StdoutText);
    }

    // A daemon in a session of its own, and "started" only once it is there: the run's group kill at its
    // end would otherwise take the daemon too when its setsid had not yet run (seen on a loaded host).
    private const string DaemonThenStarted =
        "setsid sh -c 'touch daemon.ready; while :; do sleep 1; done' </dev/null >/dev/null 2>&1 & " +
        "while [ ! -e daemon.ready ]; do sleep 0.01; done; echo started";

    [Fact]
    public async Task RunUser_StartsClean_WhatAnEarlierRunOfTheSameUserLeftIsGone()
    {
        Assert.SkipUnless(StepUser.Switches, NeedsRoot);
        // The first run is neither ended nor cleaned up by its host: its daemon and directory stay.
        var first = await Agent.ExecAsync(RunAs(2005, "a", "echo left > left.txt; " + DaemonThenStarted,
            endUserProcesses: false), Ct);
        bool daemonLeft = ProcessTable.InPidNamespaceOf(AgentHostPid()).Any(p => p.Uid == 2005);

        var second = await Agent.ExecAsync(RunAs(2005, "b", "ls ..; echo end", endUserProcesses: false), Ct);

        Assert.Equal("started\n", first.StdoutText);
        Assert.True(daemonLeft);
        Assert.Equal("end\n", second.StdoutText);
        Assert.False(Directory.Exists(Path.Combine(Runs, "a")));
        Assert.DoesNotContain(ProcessTable.InPidNamespaceOf(AgentHostPid()), p => p.Uid == 2005 && p.Pid != AgentHostPid());
    }
}
