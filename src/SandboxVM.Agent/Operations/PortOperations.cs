using System.Net;
using System.Net.Sockets;
using SandboxVM.Protocol;

namespace SandboxVM.Agent.Operations;

/// <summary>
/// port_open: a TCP connection to a server the sandbox runs on its loopback (127.0.0.1, else ::1), relayed
/// as the operation's stream, so the host reaches it without any network device in the guest. Never the
/// agent's own egress proxy (that would hand the sandbox's egress to whoever holds the host's URL).
/// </summary>
internal static class PortOperations
{
    private static readonly TimeSpan _connectTimeout = TimeSpan.FromSeconds(5);

    public static async Task OpenAsync(OperationContext context, AgentState state)
    {
        var request = context.Request.Port ?? throw AgentException.BadRequest("port_open needs a 'port' member");
        var stream = context.Stream ?? throw new AgentException(ErrorCodes.Internal, "port_open without its stream");
        int port = request.Port;
        if (port is < 1 or > 65535)
        {
            throw AgentException.BadRequest($"port {port} is not 1..65535");
        }
        if (state.Egress.ListeningPort == port)
        {
            throw new AgentException(ErrorCodes.PortClosed, $"port {port} is the agent's egress proxy, not a server of the sandbox");
        }
        using var socket = await ConnectAsync(port, context.Cancellation);
        await context.RespondAsync(new OkBody(), ProtocolJson.Default.OkBody);
        await using var network = new NetworkStream(socket, ownsSocket: false);
        await stream.RelayAsync(network, () =>
        {
            try
            {
                socket.Shutdown(SocketShutdown.Send);
            }
            catch (SocketException)
            {
                // The server closed first.
            }
        }, ReadOnlyMemory<byte>.Empty, context.Cancellation);
    }

    private static async Task<Socket> ConnectAsync(int port, CancellationToken cancellationToken)
    {
        SocketException? last = null;
        foreach (var address in new[] { IPAddress.Loopback, IPAddress.IPv6Loopback })
        {
            var socket = new Socket(address.AddressFamily, SocketType.Stream, ProtocolType.Tcp) { NoDelay = true };
            using var deadline = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
            deadline.CancelAfter(_connectTimeout);
            try
            {
                await socket.ConnectAsync(new IPEndPoint(address, port), deadline.Token);
                return socket;
            }
            catch (SocketException e)
            {
                socket.Dispose();
                last = e;
            }
            catch (OperationCanceledException) when (!cancellationToken.IsCancellationRequested)
            {
                socket.Dispose();
                throw new AgentException(ErrorCodes.PortClosed, $"connecting to port {port} timed out after {_connectTimeout.TotalSeconds:0} s");
            }
        }
        throw new AgentException(ErrorCodes.PortClosed, $"nothing listens on port {port} in the sandbox ({last?.SocketErrorCode})");
    }
}
