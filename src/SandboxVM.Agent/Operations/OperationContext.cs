using System.Text.Json.Serialization.Metadata;
using System.Threading.Channels;
using SandboxVM.Agent.Processes;
using SandboxVM.Protocol;

namespace SandboxVM.Agent.Operations;

/// <summary>A frame routed to a running operation, or the news that one of its frames was rejected.</summary>
internal readonly record struct InboxItem(Frame Frame, AgentException? Rejected = null);

/// <summary>
/// What an operation sees of the connection: its request, its id, the frames routed to it, and a
/// token that fires on a Cancel frame or when the connection ends. Ends with exactly one Response or
/// Error: the first of <see cref="RespondAsync"/>/<see cref="FailAsync"/> wins, later calls are dropped.
/// Terminal frames are written with <see cref="CancellationToken.None"/>: a cancelled operation still answers.
/// </summary>
internal sealed class OperationContext(
    uint id,
    AgentRequest request,
    FrameWriter writer,
    ChannelReader<InboxItem>? inbox,
    CancellationToken cancellation,
    Action<uint> onFinished) : IStepOutput
{
    private int _finished;
    private int _outputBroken;

    public uint Id { get; } = id;
    public AgentRequest Request { get; } = request;
    public CancellationToken Cancellation { get; } = cancellation;

    /// <summary>Data/DataEnd frames for this id (file_write only).</summary>
    public ChannelReader<InboxItem> Inbox => inbox ?? throw new InvalidOperationException("operation has no inbox");

    public bool IsFinished => Volatile.Read(ref _finished) != 0;

    /// <summary>port_open: the stream this id becomes once answered (its frames are routed to it, not to the inbox).</summary>
    public FrameStream? Stream { get; init; }

    public ValueTask SendAsync(FrameType type, ReadOnlyMemory<byte> payload, CancellationToken cancellationToken) =>
        writer.WriteAsync(type, Id, payload, cancellationToken);

    public ValueTask SendEventAsync(string kind, CancellationToken cancellationToken) =>
        writer.WriteJsonAsync(FrameType.Event, Id, new ExecEvent { Kind = kind }, ProtocolJson.Default.ExecEvent, cancellationToken);

    public async ValueTask RespondAsync<T>(T body, JsonTypeInfo<T> typeInfo)
    {
        if (TryFinish())
        {
            await writer.WriteJsonAsync(FrameType.Response, Id, body, typeInfo, CancellationToken.None);
        }
    }

    public async ValueTask FailAsync(string code, string message)
    {
        if (TryFinish())
        {
            await writer.WriteJsonAsync(FrameType.Error, Id, new ErrorBody { Code = code, Message = message },
                ProtocolJson.Default.ErrorBody, CancellationToken.None);
        }
    }

    /// <summary>Process output, from a pump thread: blocks until the frame is on the wire.</summary>
    void IStepOutput.Write(FrameType stream, ReadOnlyMemory<byte> data)
    {
        if (Volatile.Read(ref _outputBroken) != 0)
        {
            return;
        }
        try
        {
            writer.WriteAsync(stream, Id, data, CancellationToken.None).AsTask().GetAwaiter().GetResult();
        }
        catch (Exception e) when (e is IOException or ObjectDisposedException)
        {
            // The host is gone; the step is killed by the shutdown path, the pumps just keep draining.
            Volatile.Write(ref _outputBroken, 1);
            AgentLog.Write($"operation {Id}: cannot send output: {e.Message}");
        }
    }

    private bool TryFinish()
    {
        if (Interlocked.Exchange(ref _finished, 1) != 0)
        {
            return false;
        }
        // Forget the id before the terminal frame goes out, so the host may reuse it as soon as it sees it.
        onFinished(Id);
        return true;
    }
}
