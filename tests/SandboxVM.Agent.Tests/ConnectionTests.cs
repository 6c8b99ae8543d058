using System.Buffers.Binary;
using System.Text;
using System.Text.Json;
using SandboxVM.Protocol;

namespace SandboxVM.Agent.Tests;

[Trait("tier", "integration")]
public class ConnectionTests : AgentTestBase
{
    [Fact]
    public async Task Hello_ReturnsProtocolVersionCapabilitiesAndPid()
    {
        var reply = await Agent.HelloAsync(Ct);

        Assert.Equal(ProtocolInfo.Version, reply.ProtocolVersion);
        Assert.Equal(Agent.Pid, reply.Pid);
        Assert.False(string.IsNullOrEmpty(reply.AgentVersion));
        foreach (string op in new[] { Ops.Ping, Ops.Exec, Ops.FileWrite, Ops.FileRead, Ops.FileList, Ops.FileStat,
                     Ops.FileRemove, Ops.FileMkdir, Ops.ArtifactsList, Ops.Reinit })
        {
            Assert.Contains(op, reply.Capabilities);
        }
    }

    [Fact]
    public async Task Hello_WithAnotherProtocolVersion_ReturnsVersionMismatch()
    {
        await Agent.SendAsync(FrameType.Hello, 0, JsonSerializer.SerializeToUtf8Bytes(
            new Hello { ProtocolVersion = ProtocolInfo.Version + 1 }, ProtocolJson.Default.Hello), Ct);

        var frame = await Agent.NextFrameAsync(0, Ct);

        Assert.Equal(FrameType.Error, frame.Type);
        Assert.Equal(ErrorCodes.VersionMismatch, JsonSerializer.Deserialize(frame.Payload.Span, ProtocolJson.Default.ErrorBody)!.Code);
    }

    [Fact]
    public async Task Ping_ReturnsOk()
    {
        var result = await Agent.RequestAsync(new AgentRequest { Op = Ops.Ping }, Ct);

        Assert.True(result.Response(ProtocolJson.Default.OkBody).Ok);
    }

    [Fact]
    public async Task Request_WithMalformedJson_ReturnsBadRequest_AndTheAgentKeepsServing()
    {
        uint id = Agent.NextId();
        await Agent.SendAsync(FrameType.Request, id, "{\"op\": \"ping\""u8.ToArray(), Ct);

        Assert.Equal(ErrorCodes.BadRequest, (await Agent.CollectAsync(id, Ct)).Error().Code);
        await AssertPingWorksAsync();
    }

    [Fact]
    public async Task Request_WithoutItsArguments_ReturnsBadRequest()
    {
        var exec = await Agent.RequestAsync(new AgentRequest { Op = Ops.Exec }, Ct);
        var stat = await Agent.RequestAsync(new AgentRequest { Op = Ops.FileStat }, Ct);

        Assert.Equal(ErrorCodes.BadRequest, exec.Error().Code);
        Assert.Equal(ErrorCodes.BadRequest, stat.Error().Code);
    }

    [Fact]
    public async Task Request_WithUnknownOp_ReturnsUnknownOp()
    {
        var result = await Agent.RequestAsync(new AgentRequest { Op = "format_disk" }, Ct);

        Assert.Equal(ErrorCodes.UnknownOp, result.Error().Code);
    }

    [Fact]
    public async Task Request_WithAnIdStillInUse_ReturnsDuplicateId_AndTheFirstOperationCompletes()
    {
        uint id = Agent.NextId();
        // The exec lasts until the test lets it end (a `sleep 1` lost the race on a loaded host: the
        // exec ended before the second request arrived, and the id was free again).
        await Agent.StartAsync(id, new AgentRequest { Op = Ops.Exec, Exec = Shell("echo started; while [ ! -e go ]; do sleep 0.05; done", 600_000) }, Ct);
        Assert.Equal(FrameType.Event, (await Agent.NextFrameAsync(id, Ct)).Type);
        Assert.Equal(FrameType.Stdout, (await Agent.NextFrameAsync(id, Ct)).Type);

        await Agent.StartAsync(id, new AgentRequest { Op = Ops.Ping }, Ct);

        var duplicate = await Agent.CollectAsync(id, Ct);
        Assert.Equal(ErrorCodes.DuplicateId, duplicate.Error().Code);
        await File.WriteAllBytesAsync(Path.Combine(Agent.Home, "go"), [], Ct);
        var exec = await Agent.CollectAsync(id, Ct);
        Assert.Equal(0, exec.Response(ProtocolJson.Default.ExecResult).Run!.ExitCode);
    }

    [Fact]
    public async Task OversizedFrame_ReturnsFrameTooLarge_AndTheAgentKeepsServing()
    {
        uint id = Agent.NextId();
        byte[] payload = new byte[Frame.MaxPayload + 1];

        await Agent.SendRawAsync([.. Header((uint)(Frame.HeaderSize + payload.Length), (byte)FrameType.Request, id), .. payload], Ct);

        Assert.Equal(ErrorCodes.FrameTooLarge, (await Agent.CollectAsync(id, Ct)).Error().Code);
        await AssertPingWorksAsync();
    }

    [Fact]
    public async Task UnknownFrameType_ReturnsBadFrame_AndTheAgentKeepsServing()
    {
        uint id = Agent.NextId();

        await Agent.SendRawAsync([.. Header(Frame.HeaderSize + 3, 200, id), 1, 2, 3], Ct);

        Assert.Equal(ErrorCodes.BadFrame, (await Agent.CollectAsync(id, Ct)).Error().Code);
        await AssertPingWorksAsync();
    }

    [Fact]
    public async Task EndOfInput_MakesTheAgentExit_AndKillsTheProcessGroupsItStarted()
    {
        uint id = await Agent.StartAsync(new AgentRequest { Op = Ops.Exec, Exec = Shell("echo $$; sleep 1000 & sleep 1000", 600_000) }, Ct);
        Assert.Equal(FrameType.Event, (await Agent.NextFrameAsync(id, Ct)).Type);
        var pidFrame = await Agent.NextFrameAsync(id, Ct);
        int pgid = int.Parse(Encoding.UTF8.GetString(pidFrame.Payload.Span).Trim());
        Assert.True(await ProcessTable.WaitUntilAsync(() => ProcessTable.LiveMembersOf(pgid).Count >= 2, TimeSpan.FromSeconds(5), Ct));

        Agent.CloseInput();

        Assert.True(await Agent.WaitForExitAsync(TimeSpan.FromSeconds(10), Ct), "agent did not exit after end of input");
        Assert.Equal(0, Agent.Process.ExitCode);
        Assert.True(await ProcessTable.WaitUntilAsync(() => ProcessTable.LiveMembersOf(pgid).Count == 0, TimeSpan.FromSeconds(5), Ct),
            $"left behind: {string.Join(',', ProcessTable.LiveMembersOf(pgid))}");
    }

    private async Task AssertPingWorksAsync()
    {
        var ping = await Agent.RequestAsync(new AgentRequest { Op = Ops.Ping }, Ct);
        Assert.True(ping.Response(ProtocolJson.Default.OkBody).Ok);
    }

    private static byte[] Header(uint length, byte type, uint id)
    {
        byte[] header = new byte[4 + Frame.HeaderSize];
        BinaryPrimitives.WriteUInt32BigEndian(header, length);
        header[4] = type;
        BinaryPrimitives.WriteUInt32BigEndian(header.AsSpan(5), id);
        return header;
    }
}
