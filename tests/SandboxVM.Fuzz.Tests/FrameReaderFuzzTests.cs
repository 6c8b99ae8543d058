using System.Buffers.Binary;
using CsCheck;
using SandboxVM.Protocol;

namespace SandboxVM.Fuzz.Tests;

/// <summary>
/// <see cref="FrameReader"/> on hostile byte streams: mutated real frames (lengths, types, ids,
/// truncations), delivered in reads of any size. Every outcome must be what an independent reading of
/// the wire format says (a frame, a clean end, a Rejected frame after which the next frame reads, or
/// <see cref="EndOfStreamException"/> for a stream cut inside a frame), whatever the read boundaries;
/// nothing else is thrown, no read allocates more than the payload cap plus the skip buffer, and no
/// input hangs.
/// </summary>
[Trait("category", Fuzz.Category)]
[Trait("tier", "unit")]
public sealed class FrameReaderFuzzTests
{
    private const int SkipBuffer = 64 * 1024;

    /// <summary>Bookkeeping that one ReadAsync may allocate besides the payload (results, the async state).</summary>
    private const int Overhead = 4 * 1024;

    private static readonly IReadOnlyList<byte[]> _corpus = [.. Fuzz.Corpus("frames").Select(c => c.Bytes)];

    private static readonly byte[][] _tokens =
    [
        Header(5, FrameType.Data, 1), Header(6, FrameType.Stdout, 7), Header(0, FrameType.Hello, 0), Header(4, FrameType.Cancel, 2),
        Header(9, FrameType.Credit, 0x8000_0001), Header(uint.MaxValue, FrameType.Data, 3), Header(Frame.MaxPayload + 6, FrameType.Data, 4),
        Header(5, (FrameType)0, 5), Header(5, (FrameType)13, 6), Header(5, (FrameType)255, 7), [0, 0, 0, 0], [0, 0, 0, 5],
    ];

    private static byte[] Header(uint length, FrameType type, uint id)
    {
        var header = new byte[9];
        BinaryPrimitives.WriteUInt32BigEndian(header, length);
        header[4] = (byte)type;
        BinaryPrimitives.WriteUInt32BigEndian(header.AsSpan(5), id);
        return header;
    }

    /// <summary>One input: the bytes, the sizes the stream hands them out in (cycled), the reader's payload cap.</summary>
    private sealed record Input(byte[] Bytes, int[] Reads, int MaxPayload)
    {
        public override string ToString() =>
            $"max_payload={MaxPayload} reads=[{string.Join(',', Reads)}] bytes={Convert.ToHexString(Bytes.AsSpan(0, Math.Min(Bytes.Length, 4096)))}";
    }

    private static readonly Gen<Input> _inputs = Gen.Select(
        Mutator.From(_corpus, _tokens),
        Gen.Frequency((2, Gen.Int[1, 3]), (2, Gen.Int[1, 16]), (1, Gen.Int[1, 70_000])).Array[1, 8],
        Gen.OneOf(Gen.Const(Frame.MaxPayload), Gen.Int[0, 64], Gen.Int[0, 4096]),
        (bytes, reads, max) => new Input(bytes, reads, max));

    [Fact]
    public Task MutatedFrames_ReadAsTheWireFormatSays_InAnyReadSizes() =>
        Fuzz.RunAsync("frame-reader", _inputs, CheckAsync, iterations: 1500, i => i.ToString(), i => i.Bytes);

    [Fact]
    public async Task CorpusFrames_SplitAtEveryBoundaryAndCutAtEveryByte_ReadTheSame()
    {
        int checks = 0;
        foreach (var (name, bytes) in Fuzz.Corpus("frames"))
        {
            for (int cut = 0; cut <= bytes.Length; cut++)
            {
                await CheckAsync(new Input(bytes[..cut], [bytes.Length], Frame.MaxPayload));
                await CheckAsync(new Input(bytes, [Math.Max(cut, 1), bytes.Length], Frame.MaxPayload));
                checks += 2;
            }
            Assert.True(bytes.Length > 0, name);
        }
        Fuzz.Log($"frame-reader corpus: {checks} cuts and splits checked");
    }

    [Fact]
    public async Task ABlockedRead_EndsWithOperationCanceled_WhenCancelled()
    {
        using var cts = new CancellationTokenSource(TimeSpan.FromMilliseconds(200));
        var reader = new FrameReader(new NeverStream([0, 0, 0, 20]));
        var read = reader.ReadAsync(cts.Token).AsTask();

        await Assert.ThrowsAnyAsync<OperationCanceledException>(() => read.WaitAsync(Fuzz.InputTimeout, TestContext.Current.CancellationToken));
    }

    private static async Task CheckAsync(Input input)
    {
        var expected = Model(input.Bytes, input.MaxPayload);
        var reader = new FrameReader(new ChunkedStream(input.Bytes, input.Reads), input.MaxPayload);
        long allowed = Math.Max(input.MaxPayload, SkipBuffer) + Overhead;
        foreach (var want in expected)
        {
            long before = GC.GetAllocatedBytesForCurrentThread();
            if (want.Kind == Kind.Cut)
            {
                await Assert.ThrowsAsync<EndOfStreamException>(() => reader.ReadAsync().AsTask());
                return;
            }
            var got = await reader.ReadAsync();
            long allocated = GC.GetAllocatedBytesForCurrentThread() - before;
            Assert.True(allocated <= allowed, $"one read allocated {allocated} bytes (cap {input.MaxPayload}, allowed {allowed})");
            switch (want.Kind)
            {
                case Kind.End:
                    Assert.Equal(ReadOutcome.EndOfStream, got.Outcome);
                    Assert.Equal(ReadOutcome.EndOfStream, (await reader.ReadAsync()).Outcome); // and it stays ended
                    return;
                case Kind.Rejected:
                    Assert.Equal(ReadOutcome.Rejected, got.Outcome);
                    Assert.False(string.IsNullOrEmpty(got.Error));
                    if (want.Type is { } type)
                    {
                        Assert.Equal(type, got.Frame.Type);
                        Assert.Equal(want.Id, got.Frame.Id);
                    }
                    break;
                default:
                    Assert.Equal(ReadOutcome.Frame, got.Outcome);
                    Assert.Equal(want.Type, got.Frame.Type);
                    Assert.Equal(want.Id, got.Frame.Id);
                    Assert.True(want.Payload.AsSpan().SequenceEqual(got.Frame.Payload.Span), "payload differs");
                    break;
            }
        }
    }

    private enum Kind
    {
        Frame,
        Rejected,
        End,
        Cut,
    }

    private sealed record Expected(Kind Kind, FrameType? Type = null, uint Id = 0, byte[]? Payload = null);

    /// <summary>The wire format read independently of <see cref="FrameReader"/>: u32 length, u8 type, u32 id, payload.</summary>
    private static List<Expected> Model(byte[] data, int maxPayload)
    {
        var result = new List<Expected>();
        long pos = 0;
        while (true)
        {
            long left = data.Length - pos;
            if (left == 0)
            {
                result.Add(new Expected(Kind.End));
                return result;
            }
            if (left < 4)
            {
                result.Add(new Expected(Kind.Cut));
                return result;
            }
            uint length = BinaryPrimitives.ReadUInt32BigEndian(data.AsSpan((int)pos));
            pos += 4;
            left -= 4;
            if (length < 5)
            {
                if (left < length)
                {
                    result.Add(new Expected(Kind.Cut));
                    return result;
                }
                pos += length;
                result.Add(new Expected(Kind.Rejected));
                continue;
            }
            if (left < length)
            {
                result.Add(new Expected(Kind.Cut));
                return result;
            }
            var type = (FrameType)data[pos];
            uint id = BinaryPrimitives.ReadUInt32BigEndian(data.AsSpan((int)pos + 1));
            byte[] payload = data.AsSpan((int)pos + 5, (int)(length - 5)).ToArray();
            pos += length;
            result.Add(length - 5 > maxPayload || !Enum.IsDefined(type)
                ? new Expected(Kind.Rejected, type, id)
                : new Expected(Kind.Frame, type, id, payload));
        }
    }

    /// <summary>A stream that hands out its bytes in reads of the given sizes (cycled), completing synchronously.</summary>
    private sealed class ChunkedStream(byte[] data, int[] reads) : Stream
    {
        private int _pos;
        private int _read;

        public override int Read(byte[] buffer, int offset, int count) => Read(buffer.AsSpan(offset, count));

        public override int Read(Span<byte> buffer)
        {
            int n = Math.Min(Math.Min(buffer.Length, reads[_read++ % reads.Length]), data.Length - _pos);
            data.AsSpan(_pos, n).CopyTo(buffer);
            _pos += n;
            return n;
        }

        public override ValueTask<int> ReadAsync(Memory<byte> buffer, CancellationToken cancellationToken = default) =>
            ValueTask.FromResult(Read(buffer.Span));

        public override bool CanRead => true;
        public override bool CanSeek => false;
        public override bool CanWrite => false;
        public override long Length => throw new NotSupportedException();
        public override long Position { get => throw new NotSupportedException(); set => throw new NotSupportedException(); }
        public override void Flush() { }
        public override long Seek(long offset, SeekOrigin origin) => throw new NotSupportedException();
        public override void SetLength(long value) => throw new NotSupportedException();
        public override void Write(byte[] buffer, int offset, int count) => throw new NotSupportedException();
    }

    /// <summary>Gives its bytes, then never answers again (a peer that stops sending mid-frame).</summary>
    private sealed class NeverStream(byte[] first) : Stream
    {
        private bool _sent;

        public override async ValueTask<int> ReadAsync(Memory<byte> buffer, CancellationToken cancellationToken = default)
        {
            if (!_sent)
            {
                _sent = true;
                int n = Math.Min(first.Length, buffer.Length);
                first.AsSpan(0, n).CopyTo(buffer.Span);
                return n;
            }
            await Task.Delay(Timeout.Infinite, cancellationToken);
            return 0;
        }

        public override int Read(byte[] buffer, int offset, int count) => throw new NotSupportedException();
        public override bool CanRead => true;
        public override bool CanSeek => false;
        public override bool CanWrite => false;
        public override long Length => throw new NotSupportedException();
        public override long Position { get => throw new NotSupportedException(); set => throw new NotSupportedException(); }
        public override void Flush() { }
        public override long Seek(long offset, SeekOrigin origin) => throw new NotSupportedException();
        public override void SetLength(long value) => throw new NotSupportedException();
        public override void Write(byte[] buffer, int offset, int count) => throw new NotSupportedException();
    }
}
