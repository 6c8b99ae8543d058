using System.Buffers.Binary;
using System.Text.Json.Serialization.Metadata;
using System.Text.Json;

namespace SandboxVM.Protocol;

/// <summary>
/// Writes frames to a byte stream. Thread-safe: concurrent operations share one connection, and each
/// frame is written whole under a lock so frames never interleave.
/// </summary>
public sealed class FrameWriter : IAsyncDisposable
{
    private readonly Stream _stream;
    private readonly SemaphoreSlim _lock = new(1, 1);

    public FrameWriter(Stream stream) => _stream = stream;

    public async ValueTask WriteAsync(FrameType type, uint id, ReadOnlyMemory<byte> payload, CancellationToken cancellationToken = default)
    {
        if (payload.Length > Frame.MaxPayload)
        {
            throw new ArgumentOutOfRangeException(nameof(payload), $"payload of {payload.Length} bytes exceeds {Frame.MaxPayload}; send it in chunks");
        }
        byte[] header = new byte[4 + Frame.HeaderSize];
        BinaryPrimitives.WriteUInt32BigEndian(header, (uint)(Frame.HeaderSize + payload.Length));
        header[4] = (byte)type;
        BinaryPrimitives.WriteUInt32BigEndian(header.AsSpan(5), id);
        await _lock.WaitAsync(cancellationToken);
        try
        {
            await _stream.WriteAsync(header, CancellationToken.None);
            if (!payload.IsEmpty)
            {
                await _stream.WriteAsync(payload, CancellationToken.None);
            }
            await _stream.FlushAsync(CancellationToken.None);
        }
        finally
        {
            _lock.Release();
        }
    }

    public ValueTask WriteJsonAsync<T>(FrameType type, uint id, T value, JsonTypeInfo<T> typeInfo, CancellationToken cancellationToken = default)
        => WriteAsync(type, id, JsonSerializer.SerializeToUtf8Bytes(value, typeInfo), cancellationToken);

    /// <summary>Sends bytes of any length as consecutive frames of at most <see cref="Frame.ChunkSize"/>.</summary>
    public async ValueTask WriteChunkedAsync(FrameType type, uint id, ReadOnlyMemory<byte> data, CancellationToken cancellationToken = default)
    {
        for (int offset = 0; offset < data.Length; offset += Frame.ChunkSize)
        {
            await WriteAsync(type, id, data.Slice(offset, Math.Min(Frame.ChunkSize, data.Length - offset)), cancellationToken);
        }
    }

    public ValueTask DisposeAsync()
    {
        _lock.Dispose();
        return ValueTask.CompletedTask;
    }
}
