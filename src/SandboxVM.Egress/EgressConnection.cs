using System.Net.Sockets;

namespace SandboxVM.Egress;

/// <summary>A request to connect on behalf of a sandbox.</summary>
/// <param name="SandboxId">The sandbox asking (for logs).</param>
/// <param name="Host">Host name or IP address (IPv6 with or without brackets).</param>
/// <param name="Port">TCP port.</param>
public sealed record EgressRequest(string SandboxId, string Host, int Port);

/// <summary>
/// The result of <see cref="EgressGateway.ConnectAsync"/>: an open duplex <see cref="Stream"/> to the checked
/// address, or none and a <see cref="Decision"/> saying why. Disposing closes the connection; the bytes each
/// way are logged and counted then.
/// </summary>
public sealed class EgressConnection : IAsyncDisposable, IDisposable
{
    private readonly CountingStream? _stream;
    private readonly Socket? _socket;

    internal EgressConnection(EgressDecision decision, CountingStream? stream, Socket? socket, bool viaUpstreamProxy)
    {
        Decision = decision;
        _stream = stream;
        _socket = socket;
        ViaUpstreamProxy = viaUpstreamProxy;
    }

    /// <summary>Allowed and connected (then <see cref="Decision"/>.Address is the connected address), or why not.</summary>
    public EgressDecision Decision { get; }

    /// <summary>True when <see cref="Stream"/> is an open connection.</summary>
    public bool IsConnected => _stream is not null;

    /// <summary>The connection (reads: remote to sandbox, writes: sandbox to remote); null when not connected.</summary>
    public Stream? Stream => _stream;

    /// <summary>True when the connection goes through the upstream proxy.</summary>
    public bool ViaUpstreamProxy { get; }

    /// <summary>Bytes written so far (sandbox to remote).</summary>
    public long BytesUp => _stream?.BytesUp ?? 0;

    /// <summary>Bytes read so far (remote to sandbox).</summary>
    public long BytesDown => _stream?.BytesDown ?? 0;

    /// <summary>Half-close: tells the remote side the sandbox will send nothing more (TCP FIN); reading goes on.</summary>
    public void ShutdownWrite()
    {
        try
        {
            _socket?.Shutdown(SocketShutdown.Send);
        }
        catch (ObjectDisposedException)
        {
        }
        catch (SocketException)
        {
            // Already reset by the remote side; nothing left to shut down.
        }
    }

    public ValueTask DisposeAsync() => _stream?.DisposeAsync() ?? ValueTask.CompletedTask;

    public void Dispose() => _stream?.Dispose();

    public override string ToString() => Decision.Message;
}
