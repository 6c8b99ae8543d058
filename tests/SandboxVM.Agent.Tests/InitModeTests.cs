using System.Diagnostics;
using SandboxVM.Protocol;

namespace SandboxVM.Agent.Tests;

/// <summary>
/// The agent as PID 1 (as in a guest, where it is init), in a PID namespace of its own. There the .NET
/// runtime would reap every child on SIGCHLD if anything installed its handler; these tests prove the
/// agent still gets true exit statuses and reaps the orphans re-parented to it.
/// </summary>
[Trait("tier", "integration")]
public class InitModeTests
{
    private static readonly string[] _launcher = ["unshare", "--pid", "--fork", "--kill-child"];

    [Fact]
    public async Task Exec_WhenTheAgentIsPid1_ReportsSignalsAndReapsOrphans()
    {
        Assert.SkipUnless(CanUnsharePid(), "needs permission to create a PID namespace (root or CAP_SYS_ADMIN)");
        var ct = TestContext.Current.CancellationToken;
        await using var agent = await AgentHarness.StartAsync(null, _launcher);
        var hello = await agent.HelloAsync(ct);
        Assert.Equal(1, hello.Pid);
        ExecRequest Shell(string script) => new() { Cwd = agent.Home, OutputsDir = agent.Outputs, Run = ["sh", "-c", script] };

        var segv = await agent.ExecAsync(Shell("kill -SEGV $$"), ct);
        var exit = await agent.ExecAsync(Shell("exit 7"), ct);
        var orphans = await agent.ExecAsync(Shell("for i in 1 2 3 4 5; do (sleep 0.2 &); done; echo spawned"), ct);

        Assert.Equal(11, segv.Response(ProtocolJson.Default.ExecResult).Run!.Signal);
        Assert.Equal(7, exit.Response(ProtocolJson.Default.ExecResult).Run!.ExitCode);
        Assert.Equal("spawned\n", orphans.StdoutText);
        // The agent's host pid is the only child of unshare; the orphans become its children until reaped.
        int agentPid = Assert.Single(ProcessTable.ChildrenOf(agent.Pid));
        Assert.True(await ProcessTable.WaitUntilAsync(() => ProcessTable.ChildrenOf(agentPid).Count == 0, TimeSpan.FromSeconds(5), ct),
            $"children left under the agent (zombies are not reaped?): {string.Join(',', ProcessTable.ChildrenOf(agentPid))}");
    }

    private static bool CanUnsharePid()
    {
        try
        {
            using var probe = Process.Start(new ProcessStartInfo("unshare", ["--pid", "--fork", "true"])
            {
                RedirectStandardError = true,
                UseShellExecute = false,
            });
            if (probe is null)
            {
                return false;
            }
            probe.WaitForExit(5000);
            return probe.HasExited && probe.ExitCode == 0;
        }
        catch (System.ComponentModel.Win32Exception)
        {
            return false;
        }
    }
}
