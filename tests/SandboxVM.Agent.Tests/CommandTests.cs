using System.Text;
using SandboxVM.Protocol;

namespace SandboxVM.Agent.Tests;

[Trait("tier", "integration")]
public class CommandTests : AgentTestBase
{
    /// <summary>Far above what a loaded 2-core host needs, far below the `sleep 1000` the commands would otherwise last.</summary>
    private static readonly TimeSpan Bound = TimeSpan.FromSeconds(60);

    private CommandRequest Cmd(string script, bool background = true) => new()
    {
        Argv = ["sh", "-c", script],
        Cwd = Agent.Home,
        Background = background,
    };

    private async Task<CommandInfo> StartAsync(CommandRequest command)
    {
        var frames = await Agent.RequestAsync(new AgentRequest { Op = Ops.CommandStart, Command = command }, Ct);
        return frames.Response(ProtocolJson.Default.CommandInfo);
    }

    private async Task<OperationFrames> CallAsync(string op, CommandRequest command) =>
        await Agent.RequestAsync(new AgentRequest { Op = op, Command = command }, Ct);

    private async Task<CommandInfo> GetAsync(string id, int waitMs = 0) =>
        (await CallAsync(Ops.CommandGet, new CommandRequest { Id = id, WaitMs = waitMs })).Response(ProtocolJson.Default.CommandInfo);

    /// <summary>Polls until <paramref name="done"/> holds for the command, or fails after <see cref="Bound"/>.</summary>
    private async Task<CommandInfo> WaitForAsync(string id, Func<CommandInfo, bool> done)
    {
        var deadline = DateTime.UtcNow + Bound;
        while (true)
        {
            var info = await GetAsync(id, waitMs: 100);
            if (done(info))
            {
                return info;
            }
            Assert.True(DateTime.UtcNow < deadline, $"command {id} never reached the expected state: running={info.Running}, stdout={info.StdoutBytes} bytes");
            await Task.Yield();
        }
    }

    [Fact]
    public async Task Foreground_StreamsOutput_AndAnswersWithTheExitCode()
    {
        var frames = await Agent.RequestAsync(new AgentRequest { Op = Ops.CommandStart, Command = Cmd("echo out; echo err >&2; exit 3", background: false) }, Ct);

        var info = frames.Response(ProtocolJson.Default.CommandInfo);
        Assert.Equal("out\n", frames.StdoutText);
        Assert.Equal("err\n", frames.StderrText);
        Assert.False(info.Running);
        Assert.Equal(TerminationReason.Exited, info.Reason);
        Assert.Equal(3, info.ExitCode);
        // Its output is kept too: a later get sees it.
        var later = await GetAsync(info.Id);
        Assert.Equal("out\n", Encoding.UTF8.GetString(later.Stdout!));
    }

    [Fact]
    public async Task Background_AnswersAtOnce_TakesStdin_AndReportsTheResultLater()
    {
        var started = await StartAsync(new CommandRequest { Argv = ["cat"], Cwd = Agent.Home, Background = true });
        Assert.True(started.Running);
        Assert.True(started.StdinOpen);
        Assert.True(started.Pid > 0);

        var write = await CallAsync(Ops.CommandStdin, new CommandRequest { Id = started.Id, Data = Encoding.UTF8.GetBytes("hello\n") });
        Assert.True(write.Succeeded);
        Assert.True((await GetAsync(started.Id)).Running);
        await CallAsync(Ops.CommandStdin, new CommandRequest { Id = started.Id, Data = Encoding.UTF8.GetBytes("world\n"), Eof = true });

        var ended = await GetAsync(started.Id, waitMs: (int)Bound.TotalMilliseconds);
        Assert.False(ended.Running);
        Assert.Equal(0, ended.ExitCode);
        Assert.Equal("hello\nworld\n", Encoding.UTF8.GetString(ended.Stdout!));
        Assert.False(ended.StdinOpen);

        var again = await CallAsync(Ops.CommandStdin, new CommandRequest { Id = started.Id, Data = [1] });
        Assert.Equal(ErrorCodes.StdinClosed, again.Error().Code);
        var list = (await CallAsync(Ops.CommandList, new CommandRequest())).Response(ProtocolJson.Default.CommandListBody);
        Assert.Contains(list.Commands, c => c.Id == started.Id && !c.Running && c.ExitCode == 0 && c.Stdout is null);
    }

    [Fact]
    public async Task Background_FloodingOutput_KeepsOnlyTheTail_AndCountsEverything()
    {
        var command = Cmd("head -c 3000000 /dev/zero | tr '\\0' a; printf END");
        command.OutputCapBytes = 64 * 1024;
        var started = await StartAsync(command);

        var ended = await GetAsync(started.Id, waitMs: (int)Bound.TotalMilliseconds);

        Assert.Equal(0, ended.ExitCode);
        Assert.Equal(3_000_003, ended.StdoutBytes);
        Assert.True(ended.StdoutTruncated);
        Assert.Equal(64 * 1024, ended.Stdout!.Length);
        Assert.EndsWith("aaaEND", Encoding.ASCII.GetString(ended.Stdout));
        Assert.False(ended.StderrTruncated);
    }

    [Fact]
    public async Task Signal_ToACommandThatIgnoresSigterm_AndForks_KillsItsWholeGroupAfterTheGrace()
    {
        var started = await StartAsync(Cmd("trap '' TERM; for i in 1 2 3; do sleep 1000 & done; echo ready; wait"));
        await WaitForAsync(started.Id, c => c.StdoutBytes > 0);
        Assert.Equal(4, ProcessTable.LiveMembersOf(started.Pid).Count);

        var frames = await CallAsync(Ops.CommandSignal, new CommandRequest { Id = started.Id, Signal = 15, KillAfterMs = 300 });

        var info = frames.Response(ProtocolJson.Default.CommandInfo);
        Assert.False(info.Running);
        Assert.Equal(TerminationReason.Signal, info.Reason);
        Assert.Equal(9, info.Signal);
        Assert.Empty(ProcessTable.LiveMembersOf(started.Pid));
    }

    [Fact]
    public async Task Signal_WithoutGrace_IsDelivered_AndTheCommandEndsOfIt()
    {
        var started = await StartAsync(Cmd("echo ready; exec sleep 1000"));
        await WaitForAsync(started.Id, c => c.StdoutBytes > 0);

        await CallAsync(Ops.CommandSignal, new CommandRequest { Id = started.Id, Signal = 2 });

        var ended = await GetAsync(started.Id, waitMs: (int)Bound.TotalMilliseconds);
        Assert.Equal(TerminationReason.Signal, ended.Reason);
        Assert.Equal(2, ended.Signal);
    }

    [Fact]
    public async Task LiveCommands_AreCapped_AndAFreedSlotCanBeUsedAgain()
    {
        var ids = new List<string>();
        for (int i = 0; i < 16; i++)
        {
            ids.Add((await StartAsync(Cmd("exec sleep 1000"))).Id);
        }

        var refused = await CallAsync(Ops.CommandStart, Cmd("exec sleep 1000"));
        Assert.Equal(ErrorCodes.TooManyCommands, refused.Error().Code);

        await CallAsync(Ops.CommandSignal, new CommandRequest { Id = ids[0], Signal = 9, KillAfterMs = 1 });
        Assert.True((await StartAsync(Cmd("exit 0"))).Pid > 0);
    }

    [Fact]
    public async Task Timeout_KillsTheGroup()
    {
        var command = Cmd("exec sleep 1000");
        command.TimeoutMs = 300;
        var started = await StartAsync(command);

        var ended = await GetAsync(started.Id, waitMs: (int)Bound.TotalMilliseconds);

        Assert.Equal(TerminationReason.Timeout, ended.Reason);
        Assert.Null(ended.ExitCode);
        Assert.Empty(ProcessTable.LiveMembersOf(started.Pid));
    }

    [Fact]
    public async Task Foreground_Cancel_EndsTheCommand()
    {
        uint id = await Agent.StartAsync(new AgentRequest { Op = Ops.CommandStart, Command = Cmd("echo ready; exec sleep 1000", background: false) }, Ct);
        var first = await Agent.NextFrameAsync(id, Ct);
        Assert.Equal(FrameType.Stdout, first.Type);

        await Agent.SendAsync(FrameType.Cancel, id, ReadOnlyMemory<byte>.Empty, Ct);

        var info = (await Agent.CollectAsync(id, Ct)).Response(ProtocolJson.Default.CommandInfo);
        Assert.Equal(TerminationReason.Cancelled, info.Reason);
    }

    [Fact]
    public async Task MissingProgram_Is127_AndMissingCwd_IsRefused()
    {
        var missing = await Agent.RequestAsync(new AgentRequest
        {
            Op = Ops.CommandStart,
            Command = new CommandRequest { Argv = ["no-such-program-here"], Cwd = Agent.Home },
        }, Ct);
        var info = missing.Response(ProtocolJson.Default.CommandInfo);
        Assert.Equal(127, info.ExitCode);
        Assert.Contains("command not found", missing.StderrText);

        var noCwd = await CallAsync(Ops.CommandStart, new CommandRequest { Argv = ["true"], Cwd = Path.Combine(Agent.Home, "nope") });
        Assert.Equal(ErrorCodes.NotFound, noCwd.Error().Code);
        var list = (await CallAsync(Ops.CommandList, new CommandRequest())).Response(ProtocolJson.Default.CommandListBody);
        Assert.Single(list.Commands);
    }

    [Fact]
    public async Task UnknownId_And_BadArguments_AreNamedErrors()
    {
        Assert.Equal(ErrorCodes.CommandNotFound, (await CallAsync(Ops.CommandGet, new CommandRequest { Id = "c999" })).Error().Code);
        Assert.Equal(ErrorCodes.BadRequest, (await CallAsync(Ops.CommandStart, new CommandRequest { Argv = [] })).Error().Code);
        Assert.Equal(ErrorCodes.BadRequest, (await CallAsync(Ops.CommandStart, new CommandRequest { Argv = ["true"], OutputCapBytes = 1 << 30 })).Error().Code);
        var started = await StartAsync(Cmd("exec sleep 1000"));
        Assert.Equal(ErrorCodes.BadRequest, (await CallAsync(Ops.CommandSignal, new CommandRequest { Id = started.Id, Signal = 0 })).Error().Code);
        var noMember = await Agent.RequestAsync(new AgentRequest { Op = Ops.CommandGet }, Ct);
        Assert.Equal(ErrorCodes.BadRequest, noMember.Error().Code);
    }
}
