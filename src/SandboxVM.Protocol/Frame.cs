namespace SandboxVM.Protocol;

/// <summary>
/// Kinds of frame on the agent channel. Values are part of the wire format: never renumber.
/// </summary>
public enum FrameType : byte
{
    /// <summary>Host to agent, id 0: JSON <see cref="Hello"/>.</summary>
    Hello = 1,
    /// <summary>Agent to host, id 0: JSON <see cref="HelloReply"/>.</summary>
    HelloReply = 2,
    /// <summary>Host to agent: JSON <see cref="AgentRequest"/> that opens operation <c>id</c>.</summary>
    Request = 3,
    /// <summary>Agent to host: JSON reply that ends operation <c>id</c> successfully (shape depends on the op).</summary>
    Response = 4,
    /// <summary>Either way: JSON <see cref="ErrorBody"/>. From the agent it ends operation <c>id</c> (or reports a bad frame when id is 0).</summary>
    Error = 5,
    /// <summary>Agent to host: raw stdout bytes of the process run by operation <c>id</c>.</summary>
    Stdout = 6,
    /// <summary>Agent to host: raw stderr bytes of the process run by operation <c>id</c>.</summary>
    Stderr = 7,
    /// <summary>Either way: a raw chunk of file content for operation <c>id</c> (file_write up, file_read down).</summary>
    Data = 8,
    /// <summary>Either way: no more <see cref="Data"/> for operation <c>id</c>. Empty payload.</summary>
    DataEnd = 9,
    /// <summary>Host to agent: stop operation <c>id</c> (kills its process group). Empty payload.</summary>
    Cancel = 10,
    /// <summary>Agent to host: JSON <see cref="ExecEvent"/> progress of operation <c>id</c> (stage changes, artifacts).</summary>
    Event = 11,
    /// <summary>
    /// Either way, on a stream (see <see cref="FrameStream"/>): payload u32 big-endian, bytes of Data the
    /// sender has consumed and the peer may send again (flow control). Since protocol version 2.
    /// </summary>
    Credit = 12,
}

/// <summary>
/// One frame. On the wire: u32 big-endian length of what follows, u8 type, u32 big-endian id, payload.
/// Id 0 is the connection itself (hello, frame errors); operations use ids chosen by the host, except ids
/// with <see cref="ProtocolInfo.AgentIdBit"/> set, which the agent opens (egress streams, search).
/// </summary>
public readonly record struct Frame(FrameType Type, uint Id, ReadOnlyMemory<byte> Payload)
{
    /// <summary>Bytes of type and id that follow the length prefix.</summary>
    public const int HeaderSize = 5;

    /// <summary>Largest payload either side may send. Larger frames are answered with an error and skipped.</summary>
    public const int MaxPayload = 1 << 20;

    /// <summary>Chunk size used for streamed data (stdout, file content): well under <see cref="MaxPayload"/>.</summary>
    public const int ChunkSize = 64 * 1024;

    public static Frame Empty(FrameType type, uint id) => new(type, id, ReadOnlyMemory<byte>.Empty);
}
