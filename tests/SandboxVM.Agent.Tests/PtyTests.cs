using System.Text;
using System.Text.RegularExpressions;
using SandboxVM.Protocol;

namespace SandboxVM.Agent.Tests;

/// <summary>pty_open / pty_resize: a real pseudo-terminal, its size, its end, and a terminal that floods.</summary>
[Trait("tier", "integration")]
public partial class PtyTests : AgentTestBase
{
    private AgentRequest Open(params string[] argv) => new()
    {
        Op = Ops.PtyOpen,
        Pty = new PtyRequest { Argv = [.. argv], Cwd = Agent.Home, Cols = 100, Rows = 30 },
    };

    /// <summary>Reads the terminal's output until <paramref name="pattern"/> shows (credit returned as it goes).</summary>
    private async Task<string> ReadUntilAsync(uint id, StringBuilder output, Regex pattern)
    {
        while (!pattern.IsMatch(output.ToString()))
        {
            var frame = await Agent.NextFrameAsync(id, Ct);
            if (frame.Type == FrameType.Credit)
            {
                continue;
            }
            Assert.True(frame.Type == FrameType.Data, $"got {frame.Type} before '{pattern}'; output so far: {output}");
            output.Append(Encoding.UTF8.GetString(frame.Payload.Span));
            await Agent.SendAsync(FrameType.Credit, id, BitConverter.GetBytes(System.Buffers.Binary.BinaryPrimitives.ReverseEndianness((uint)frame.Payload.Length)), Ct);
        }
        return output.ToString();
    }

    private async Task TypeAsync(uint id, string keys) => await Agent.SendAsync(FrameType.Data, id, Encoding.UTF8.GetBytes(keys), Ct);

    [Fact]
    public async Task Shell_HasATerminal_WhoseSizeFollowsResize_AndEndsWithItsExitCode()
    {
        uint id = await Agent.StartAsync(Open("sh"), Ct);
        var output = new StringBuilder();

        await TypeAsync(id, "tty; stty size; echo done-$((1+1))\n");
        string text = await ReadUntilAsync(id, output, DoneTwo());

        Assert.Matches(@"/dev/pts/\d+", text);
        Assert.Contains("30 100", text);

        var resized = await Agent.RequestAsync(new AgentRequest { Op = Ops.PtyResize, Pty = new PtyRequest { Target = id, Cols = 120, Rows = 40 } }, Ct);
        Assert.True(resized.Succeeded, resized.Succeeded ? "" : resized.Error().Message);
        await TypeAsync(id, "stty size; exit 7\n");
        while (true)
        {
            var frame = await Agent.NextFrameAsync(id, Ct);
            if (frame.Type == FrameType.DataEnd)
            {
                break;
            }
            if (frame.Type == FrameType.Credit)
            {
                continue;
            }
            Assert.Equal(FrameType.Data, frame.Type);
            output.Append(Encoding.UTF8.GetString(frame.Payload.Span));
        }
        Assert.Contains("40 120", output.ToString());
        await Agent.SendAsync(FrameType.DataEnd, id, ReadOnlyMemory<byte>.Empty, Ct);
        var end = await Agent.CollectAsync(id, Ct);
        Assert.Equal(7, end.Response(ProtocolJson.Default.PtyExit).ExitCode);
    }

    [Fact]
    public async Task ClosingTheStream_KillsWhatRunsOnTheTerminal()
    {
        uint id = await Agent.StartAsync(Open("sh", "-c", "echo pid=$$; exec sleep 1000"), Ct);
        string text = await ReadUntilAsync(id, new StringBuilder(), PidLine());
        int pid = int.Parse(PidLine().Match(text).Groups[1].Value);
        Assert.True(Directory.Exists($"/proc/{pid}"));

        await Agent.SendAsync(FrameType.Cancel, id, ReadOnlyMemory<byte>.Empty, Ct);

        var end = await Agent.CollectAsync(id, Ct);
        Assert.Equal(ErrorCodes.Cancelled, end.Error().Code);
        var deadline = DateTime.UtcNow + TimeSpan.FromSeconds(20);
        while (Directory.Exists($"/proc/{pid}"))
        {
            Assert.True(DateTime.UtcNow < deadline, "the program on the terminal outlived its stream");
            await Task.Delay(50, Ct);
        }
    }

    [Fact]
    public async Task ATerminalThatFloods_SendsNoMoreThanTheWindow_UntilCreditComesBack()
    {
        uint id = await Agent.StartAsync(Open("yes"), Ct);
        long received = 0;
        while (received < FrameStream.Window)
        {
            var frame = await Agent.NextFrameAsync(id, Ct);
            Assert.Equal(FrameType.Data, frame.Type);
            received += frame.Payload.Length;
        }
        Assert.Equal(FrameStream.Window, received);

        // Nothing more without credit: the next frame only comes once some is returned.
        var next = Agent.NextFrameAsync(id, Ct);
        Assert.False(await Task.WhenAny(next, Task.Delay(TimeSpan.FromSeconds(1), Ct)) == next, "the agent sent past its window");
        await Agent.SendAsync(FrameType.Credit, id, BitConverter.GetBytes(System.Buffers.Binary.BinaryPrimitives.ReverseEndianness(65536u)), Ct);
        Assert.Equal(FrameType.Data, (await next).Type);
        await Agent.SendAsync(FrameType.Cancel, id, ReadOnlyMemory<byte>.Empty, Ct);
        while ((await Agent.NextFrameAsync(id, Ct)).Type is not (FrameType.Error or FrameType.Response))
        {
        }
    }

    [Fact]
    public async Task BadRequests_AreRefused()
    {
        var unknown = await Agent.RequestAsync(new AgentRequest { Op = Ops.PtyResize, Pty = new PtyRequest { Target = 999, Cols = 80, Rows = 24 } }, Ct);
        Assert.Equal(ErrorCodes.NotFound, unknown.Error().Code);
        var huge = Open("sh");
        huge.Pty!.Cols = 100_000;
        Assert.Equal(ErrorCodes.BadRequest, (await Agent.RequestAsync(huge, Ct)).Error().Code);
        Assert.Equal(ErrorCodes.CommandNotFound, (await Agent.RequestAsync(Open("no-such-program-here"), Ct)).Error().Code);
    }

    [GeneratedRegex(@"done-2")]
    private static partial Regex DoneTwo();

    [GeneratedRegex(@"pid=(\d+)")]
    private static partial Regex PidLine();
}
