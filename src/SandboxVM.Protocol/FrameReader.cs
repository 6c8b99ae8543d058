using System.Buffers.Binary;

namespace SandboxVM.Protocol;

/// <summary>What <see cref="FrameReader.ReadAsync"/> found.</summary>
public enum ReadOutcome
{
    /// <summary>A well-formed frame.</summary>
    Frame,
    /// <summary>The stream ended cleanly between frames.</summary>
    EndOfStream,
    /// <summary>A frame was too large or of an unknown type; it was skipped and the stream is still in sync.</summary>
    Rejected,
}

/// <summary>Result of one read: a frame, a clean end, or a rejected frame with the reason.</summary>
public readonly record struct ReadResult(ReadOutcome Outcome, Frame Frame, string? Error = null);

/// <summary>
/// Reads frames from a byte stream. Not thread-safe: one reader loop per connection.
/// A frame whose declared length is too large, or whose type is unknown, is skipped (its bytes
/// are consumed) so the connection stays usable; the caller answers it with an error frame.
/// A stream that ends inside a frame throws <see cref="EndOfStreamException"/>: the channel is broken.
/// A reader made with <c>skipOversized: false</c> (the host's: an oversized frame ends the connection
/// anyway) returns an oversized frame's rejection at once instead of reading the bytes it claims, so a
/// peer declaring 4 GiB cannot keep it reading; the stream is out of step afterwards and must be closed.
/// </summary>
public sealed class FrameReader
{
    private readonly Stream _stream;
    private readonly int _maxPayload;
    private readonly bool _skipOversized;
    private readonly byte[] _header = new byte[4 + Frame.HeaderSize];

    public FrameReader(Stream stream, int maxPayload = Frame.MaxPayload, bool skipOversized = true)
    {
        _stream = stream;
        _maxPayload = maxPayload;
        _skipOversized = skipOversized;
    }

    public async ValueTask<ReadResult> ReadAsync(CancellationToken cancellationToken = default)
    {
        // Length prefix first, so that a clean end of stream is told apart from a cut frame.
        int got = await FillAsync(_header.AsMemory(0, 4), cancellationToken);
        if (got == 0)
        {
            return new ReadResult(ReadOutcome.EndOfStream, default);
        }
        if (got < 4)
        {
            throw new EndOfStreamException("stream ended inside a frame length");
        }
        uint length = BinaryPrimitives.ReadUInt32BigEndian(_header);
        if (length < Frame.HeaderSize)
        {
            // Too short to hold type and id: consume what it claims and report.
            await SkipAsync(length, cancellationToken);
            return new ReadResult(ReadOutcome.Rejected, default, $"frame length {length} is shorter than its header");
        }
        await ReadExactAsync(_header.AsMemory(4, Frame.HeaderSize), cancellationToken);
        var type = (FrameType)_header[4];
        uint id = BinaryPrimitives.ReadUInt32BigEndian(_header.AsSpan(5));
        long payloadLength = length - Frame.HeaderSize;
        if (payloadLength > _maxPayload)
        {
            if (_skipOversized)
            {
                await SkipAsync(payloadLength, cancellationToken);
            }
            return new ReadResult(ReadOutcome.Rejected, Frame.Empty(type, id),
                $"frame payload of {payloadLength} bytes exceeds the limit of {_maxPayload}");
        }
        byte[] payload = payloadLength == 0 ? [] : new byte[payloadLength];
        await ReadExactAsync(payload, cancellationToken);
        if (!Enum.IsDefined(type))
        {
            return new ReadResult(ReadOutcome.Rejected, Frame.Empty(type, id), $"unknown frame type {(byte)type}");
        }
        return new ReadResult(ReadOutcome.Frame, new Frame(type, id, payload));
    }

    private async ValueTask<int> FillAsync(Memory<byte> buffer, CancellationToken cancellationToken)
    {
        int total = 0;
        while (total < buffer.Length)
        {
            int n = await _stream.ReadAsync(buffer[total..], cancellationToken);
            if (n == 0)
            {
                break;
            }
            total += n;
        }
        return total;
    }

    private async ValueTask ReadExactAsync(Memory<byte> buffer, CancellationToken cancellationToken)
    {
        if (await FillAsync(buffer, cancellationToken) < buffer.Length)
        {
            throw new EndOfStreamException("stream ended inside a frame");
        }
    }

    private async ValueTask SkipAsync(long count, CancellationToken cancellationToken)
    {
        byte[] scratch = new byte[(int)Math.Min(count, 64 * 1024)];
        while (count > 0)
        {
            int n = await _stream.ReadAsync(scratch.AsMemory(0, (int)Math.Min(count, scratch.Length)), cancellationToken);
            if (n == 0)
            {
                throw new EndOfStreamException("stream ended inside a skipped frame");
            }
            count -= n;
        }
    }
}
