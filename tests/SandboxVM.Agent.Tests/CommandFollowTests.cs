using System.Text;
using SandboxVM.Protocol;

namespace SandboxVM.Agent.Tests;

/// <summary>command_get with output_beyond: a caller following a command gets new output when it is printed, not at the end of its wait.</summary>
[Trait("tier", "integration")]
public class CommandFollowTests : AgentTestBase
{
    private async Task<CommandInfo> CallAsync(string op, CommandRequest command)
    {
        var frames = await Agent.RequestAsync(new AgentRequest { Op = op, Command = command }, Ct);
        return frames.Response(ProtocolJson.Default.CommandInfo);
    }

    [Fact]
    public async Task Get_WithOutputBeyond_AnswersOnNewOutput_WhileTheCommandStillRuns()
    {
        // Each line waits for the test to have read the one before (a file the test makes): only a get that
        // answers on new output can see "two" while the command runs; one that waits for the end sees it exit.
        string go = Path.Combine(Agent.Home, "go");
        var started = await CallAsync(Ops.CommandStart, new CommandRequest
        {
            Argv = ["sh", "-c", $"echo one; while [ ! -e '{go}' ]; do sleep 0.05; done; echo two; sleep 60"],
            Cwd = Agent.Home,
            Background = true,
            TimeoutMs = 120_000,
        });
        try
        {
            var first = await CallAsync(Ops.CommandGet, new CommandRequest { Id = started.Id, WaitMs = 60_000, OutputBeyond = 0 });
            Assert.True(first.Running);
            Assert.Equal("one\n", Encoding.UTF8.GetString(first.Stdout!));

            await File.WriteAllTextAsync(go, "", Ct);
            var second = await CallAsync(Ops.CommandGet, new CommandRequest { Id = started.Id, WaitMs = 60_000, OutputBeyond = first.StdoutBytes + first.StderrBytes });
            Assert.True(second.Running, "the get waited for the end instead of answering on new output");
            Assert.Equal("one\ntwo\n", Encoding.UTF8.GetString(second.Stdout!));

            // Without output_beyond, the wait is for the end only (what E2B's streams used before: one poll per wait).
            var plain = await CallAsync(Ops.CommandGet, new CommandRequest { Id = started.Id, WaitMs = 200 });
            Assert.True(plain.Running);
        }
        finally
        {
            await CallAsync(Ops.CommandSignal, new CommandRequest { Id = started.Id, Signal = 9, KillAfterMs = 1 });
        }
    }
}
