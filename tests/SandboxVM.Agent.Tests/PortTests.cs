using System.Net;
using System.Net.Sockets;
using System.Text;
using SandboxVM.Protocol;

namespace SandboxVM.Agent.Tests;

[Trait("tier", "integration")]
public class PortTests : AgentTestBase
{
    [Fact]
    public async Task PortOpen_RelaysBothWays_AndEndsOnBothDataEnds()
    {
        using var listener = new TcpListener(IPAddress.Loopback, 0);
        listener.Start();
        int port = ((IPEndPoint)listener.LocalEndpoint).Port;

        uint id = await Agent.StartAsync(new AgentRequest { Op = Ops.PortOpen, Port = new PortOpenRequest { Port = port } }, Ct);
        using var server = await listener.AcceptTcpClientAsync(Ct);
        var answer = await Agent.NextFrameAsync(id, Ct);
        Assert.Equal(FrameType.Response, answer.Type);

        await Agent.SendAsync(FrameType.Data, id, Encoding.ASCII.GetBytes("ping"), Ct);
        await Agent.SendAsync(FrameType.DataEnd, id, ReadOnlyMemory<byte>.Empty, Ct);
        var network = server.GetStream();
        byte[] buffer = new byte[16];
        int n = 0;
        while (n < 4)
        {
            int read = await network.ReadAsync(buffer.AsMemory(n), Ct);
            Assert.True(read > 0, "the agent closed before the data arrived");
            n += read;
        }
        Assert.Equal("ping", Encoding.ASCII.GetString(buffer, 0, 4));
        Assert.Equal(0, await network.ReadAsync(buffer, Ct)); // the host's DataEnd became a half-close
        await network.WriteAsync(Encoding.ASCII.GetBytes("pong"), Ct);
        server.Client.Shutdown(SocketShutdown.Send);

        var received = new List<byte>();
        while (true)
        {
            var frame = await Agent.NextFrameAsync(id, Ct);
            if (frame.Type == FrameType.Data)
            {
                received.AddRange(frame.Payload.ToArray());
            }
            else if (frame.Type == FrameType.DataEnd)
            {
                break;
            }
        }
        Assert.Equal("pong", Encoding.ASCII.GetString([.. received]));
    }

    [Fact]
    public async Task PortOpen_ToAPortNothingListensOn_IsPortClosed()
    {
        using var listener = new TcpListener(IPAddress.Loopback, 0);
        listener.Start();
        int port = ((IPEndPoint)listener.LocalEndpoint).Port;
        listener.Stop();

        var frames = await Agent.RequestAsync(new AgentRequest { Op = Ops.PortOpen, Port = new PortOpenRequest { Port = port } }, Ct);

        Assert.Equal(ErrorCodes.PortClosed, frames.Error().Code);
    }

    [Fact]
    public async Task PortOpen_ToTheAgentsOwnEgressProxy_IsRefused()
    {
        var enabled = await Agent.RequestAsync(new AgentRequest { Op = Ops.EgressEnable, EgressEnable = new EgressEnableRequest { Listen = "127.0.0.1:0" } }, Ct);
        int port = IPEndPoint.Parse(enabled.Response(ProtocolJson.Default.EgressEnableReply).Listen).Port;

        var frames = await Agent.RequestAsync(new AgentRequest { Op = Ops.PortOpen, Port = new PortOpenRequest { Port = port } }, Ct);

        Assert.Equal(ErrorCodes.PortClosed, frames.Error().Code);
        Assert.Contains("egress proxy", frames.Error().Message);
        var bad = await Agent.RequestAsync(new AgentRequest { Op = Ops.PortOpen, Port = new PortOpenRequest { Port = 0 } }, Ct);
        Assert.Equal(ErrorCodes.BadRequest, bad.Error().Code);
    }
}
