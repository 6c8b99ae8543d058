using System.Buffers.Binary;
using System.IO.Pipelines;
using CsCheck;
using SandboxVM.Protocol;

namespace SandboxVM.Fuzz.Tests;

/// <summary>
/// <see cref="FrameStream"/> credit and Deliver sequences. A peer that floods Data without credit gets
/// the stream aborted (and a Cancel) as soon as more than one window is unconsumed, never later, and so
/// does one that returns credit for bytes it was never sent; a peer that keeps to its credit, with empty
/// and malformed Credit frames and frames of other types mixed in,
/// gets every byte through in order, both ways, while the stream never has more than one window of
/// its own Data unacknowledged; a Cancel at any point ends the relay.
/// </summary>
[Trait("category", Fuzz.Category)]
[Trait("tier", "unit")]
public sealed class FrameStreamFuzzTests
{
    private const uint Id = 0x8000_0007;

    private abstract record PeerAction;

    private sealed record SendData(int Length) : PeerAction;

    private sealed record SendCredit(uint Value) : PeerAction;

    private sealed record SendMalformedCredit(int Length) : PeerAction;

    private sealed record SendOther(FrameType Type) : PeerAction;

    private sealed record SendDataEnd : PeerAction;

    private sealed record SendCancel : PeerAction;

    private static readonly Gen<PeerAction> _floodActions = Gen.Frequency<PeerAction>(
        (8, Gen.Frequency((3, Gen.Int[0, 1024]), (2, Gen.Int[1024, Frame.ChunkSize]), (1, Gen.Int[Frame.ChunkSize, Frame.MaxPayload])).Select(n => (PeerAction)new SendData(n))),
        (2, Gen.OneOf(Gen.UInt, Gen.OneOf(0u, 1u, (uint)FrameStream.Window, uint.MaxValue)).Select(v => (PeerAction)new SendCredit(v))),
        (1, Gen.OneOf(Gen.Int[0, 3], Gen.Int[5, 9]).Select(n => (PeerAction)new SendMalformedCredit(n))),
        (1, Gen.OneOf(FrameType.Request, FrameType.Response, FrameType.Error, FrameType.Event, FrameType.Stdout, (FrameType)77).Select(t => (PeerAction)new SendOther(t))),
        (1, Gen.Const((PeerAction)new SendDataEnd())),
        (1, Gen.Const((PeerAction)new SendCancel())));

    [Fact]
    public Task APeerThatNeverGetsCredit_IsCutOffAtOneWindow_NeverLater() =>
        Fuzz.RunAsync("frame-stream-flood", _floodActions.Array[1, 40], async actions =>
        {
            var (stream, sent) = NewStream();
            long delivered = 0;
            foreach (var action in actions)
            {
                Deliver(stream, action);
                // The first thing that ends the stream names why. Nothing reads it, so every Data byte is
                // unconsumed (over one window: abort), and the stream has sent nothing, so any credit returned
                // is more than it was sent.
                string? expected = action switch
                {
                    SendCancel => "the peer cancelled the stream",
                    SendData d when (delivered += d.Length) > FrameStream.Window => "the peer sent more than its credit",
                    SendCredit { Value: > 0 } => "the peer returned more credit than it was sent",
                    _ => null,
                };
                Assert.Equal(expected, stream.AbortReason);
                if (expected is null)
                {
                    continue;
                }
                if (action is not SendCancel)
                {
                    await Until(() => sent.Contains(FrameType.Cancel), "a Cancel to the peer that broke the credit rules");
                }
                return;
            }
        }, iterations: 500, Print);

    /// <summary>One relay: what local sends up, the chunks the peer sends down, noise the peer mixes in, where it cancels.</summary>
    private sealed record RelayInput(int Upload, int[] LocalReads, int[] Down, int CreditBatch, PeerAction[] Noise, int CancelAt);

    private static readonly Gen<RelayInput> _relays = Gen.Select(
        Gen.Frequency((2, Gen.Int[0, 1000]), (2, Gen.Int[0, 3 * FrameStream.Window])),
        Gen.Int[1, 100_000].Array[1, 4],
        Gen.Frequency((3, Gen.Int[0, 4096]), (1, Gen.Int[4096, Frame.ChunkSize])).Array[0, 40],
        Gen.Int[1, FrameStream.Window],
        Gen.Frequency<PeerAction>(
            // Credit of 0 only: returning more than the stream sent ends it (the flood test covers that).
            (2, Gen.Const((PeerAction)new SendCredit(0))),
            (1, Gen.OneOf(Gen.Int[0, 3], Gen.Int[5, 9]).Select(n => (PeerAction)new SendMalformedCredit(n))),
            (1, Gen.OneOf(FrameType.Request, FrameType.Response, FrameType.Event, (FrameType)200).Select(t => (PeerAction)new SendOther(t)))).Array[0, 6],
        Gen.Frequency((4, Gen.Const(-1)), (1, Gen.Int[0, 40])),
        (up, reads, down, batch, noise, cancelAt) => new RelayInput(up, reads, down, batch, noise, cancelAt));

    [Fact]
    public Task APeerWithinItsCredit_GetsEveryByteInOrder_AndTheStreamStaysWithinItsWindow() =>
        Fuzz.RunAsync("frame-stream-relay", _relays, RelayAsync, iterations: 100, r =>
            $"upload={r.Upload} reads=[{string.Join(',', r.LocalReads)}] down=[{string.Join(',', r.Down)}] batch={r.CreditBatch} noise=[{string.Join(", ", r.Noise.AsEnumerable())}] cancel_at={r.CancelAt}");

    private static async Task RelayAsync(RelayInput input)
    {
        var pipe = new Pipe();
        var stream = new FrameStream(new FrameWriter(pipe.Writer.AsStream()), Id) { IdleTimeout = null };
        var deliverLock = new Lock();
        void DeliverOne(Frame f)
        {
            lock (deliverLock)
            {
                stream.Deliver(f);
            }
        }

        byte[] upload = Pattern(input.Upload, 1);
        byte[] download = Pattern(input.Down.Sum(), 2);
        var local = new LocalEnd(upload, input.LocalReads);
        var relay = stream.RelayAsync(local, local.ShutdownSend, ReadOnlyMemory<byte>.Empty, CancellationToken.None);

        // The peer's receiving side: takes the stream's frames, checks the window, returns credit in batches.
        var received = new MemoryStream();
        long creditToStream = FrameStream.Window; // what the stream may have sent so far
        long creditFromStream = 0;
        var creditArrived = new SemaphoreSlim(0);
        bool upEnded = false;
        bool streamCancelled = false;
        var peerReads = Task.Run(async () =>
        {
            var reader = new FrameReader(pipe.Reader.AsStream());
            long unacked = 0;
            while (true)
            {
                var r = await reader.ReadAsync();
                if (r.Outcome != ReadOutcome.Frame)
                {
                    return;
                }
                Assert.Equal(Id, r.Frame.Id);
                switch (r.Frame.Type)
                {
                    case FrameType.Data:
                        Assert.InRange(r.Frame.Payload.Length, 1, Frame.ChunkSize);
                        received.Write(r.Frame.Payload.Span);
                        Assert.True(received.Length <= Interlocked.Read(ref creditToStream),
                            $"the stream sent {received.Length} bytes with only {creditToStream} of credit");
                        unacked += r.Frame.Payload.Length;
                        if (unacked >= input.CreditBatch || received.Length >= upload.Length)
                        {
                            Interlocked.Add(ref creditToStream, unacked);
                            DeliverOne(CreditFrame((uint)unacked));
                            unacked = 0;
                        }
                        break;
                    case FrameType.DataEnd:
                        upEnded = true;
                        break;
                    case FrameType.Credit:
                        Interlocked.Add(ref creditFromStream, BinaryPrimitives.ReadUInt32BigEndian(r.Frame.Payload.Span));
                        creditArrived.Release();
                        break;
                    case FrameType.Cancel:
                        streamCancelled = true;
                        return;
                }
            }
        });

        // The peer's sending side: down chunks within its credit, noise between them, maybe a Cancel.
        long sentDown = 0;
        int noise = 0;
        for (int i = 0; i < input.Down.Length; i++)
        {
            if (i == input.CancelAt)
            {
                DeliverOne(Frame.Empty(FrameType.Cancel, Id));
                break;
            }
            int n = input.Down[i];
            while (sentDown + n - Interlocked.Read(ref creditFromStream) > FrameStream.Window)
            {
                Assert.True(await creditArrived.WaitAsync(Fuzz.InputTimeout), "no credit came back for data the local side consumed");
            }
            DeliverOne(new Frame(FrameType.Data, Id, download.AsMemory((int)sentDown, n)));
            sentDown += n;
            if (noise < input.Noise.Length && i % 3 == 0)
            {
                var action = input.Noise[noise++];
                if (action is SendCredit c)
                {
                    Interlocked.Add(ref creditToStream, c.Value);
                }
                Deliver(stream, action, deliverLock);
            }
        }
        bool cancelled = input.CancelAt >= 0 && input.CancelAt < input.Down.Length;
        if (!cancelled)
        {
            DeliverOne(Frame.Empty(FrameType.DataEnd, Id));
        }

        if (await Task.WhenAny(relay, peerReads) == peerReads && peerReads.IsFaulted)
        {
            await peerReads; // the peer's check failed: report that rather than the relay it leaves stuck
        }
        bool clean = await relay;
        pipe.Writer.Complete();
        await peerReads;

        if (cancelled)
        {
            Assert.False(clean);
            Assert.Equal("the peer cancelled the stream", stream.AbortReason);
            Assert.True(download.AsSpan(0, local.Received.Count).SequenceEqual(local.Received.ToArray()), "bytes before the Cancel came out of order");
            return;
        }
        Assert.True(clean, $"relay failed: {stream.AbortReason}");
        Assert.False(streamCancelled);
        Assert.True(upEnded);
        Assert.True(local.SendShutDown);
        Assert.Equal(download, local.Received.ToArray());
        Assert.Equal(upload, received.ToArray());
        Assert.Equal(download.Length, stream.BytesReceived);
        Assert.Equal(upload.Length, stream.BytesSent);
    }

    private static Frame CreditFrame(uint value)
    {
        var payload = new byte[4];
        BinaryPrimitives.WriteUInt32BigEndian(payload, value);
        return new Frame(FrameType.Credit, Id, payload);
    }

    private static void Deliver(FrameStream stream, PeerAction action, Lock? serial = null)
    {
        var frame = action switch
        {
            SendData d => new Frame(FrameType.Data, Id, new byte[d.Length]),
            SendCredit c => CreditFrame(c.Value),
            SendMalformedCredit m => new Frame(FrameType.Credit, Id, new byte[m.Length]),
            SendOther o => new Frame(o.Type, Id, new byte[3]),
            SendDataEnd => Frame.Empty(FrameType.DataEnd, Id),
            _ => Frame.Empty(FrameType.Cancel, Id),
        };
        if (serial is null)
        {
            stream.Deliver(frame);
            return;
        }
        lock (serial)
        {
            stream.Deliver(frame);
        }
    }

    private static (FrameStream Stream, SentFrames Sent) NewStream()
    {
        var sent = new SentFrames();
        return (new FrameStream(new FrameWriter(sent), Id), sent);
    }

    private static async Task Until(Func<bool> condition, string what)
    {
        var deadline = DateTime.UtcNow + Fuzz.InputTimeout;
        while (!condition())
        {
            Assert.True(DateTime.UtcNow < deadline, $"timed out waiting for {what}");
            await Task.Delay(5);
        }
    }

    private static byte[] Pattern(int length, int salt)
    {
        var bytes = new byte[length];
        for (int i = 0; i < length; i++)
        {
            bytes[i] = (byte)((i * 31 + salt + (i >> 8)) & 0xff);
        }
        return bytes;
    }

    private static string Print(PeerAction[] actions) => string.Join(", ", actions.AsEnumerable());

    /// <summary>The frame types a <see cref="FrameWriter"/> wrote (the stream's side of a flood test).</summary>
    private sealed class SentFrames : Stream
    {
        private readonly List<byte> _bytes = [];

        public bool Contains(FrameType type)
        {
            lock (_bytes)
            {
                var span = System.Runtime.InteropServices.CollectionsMarshal.AsSpan(_bytes);
                for (int pos = 0; pos + 9 <= span.Length;)
                {
                    if ((FrameType)span[pos + 4] == type)
                    {
                        return true;
                    }
                    pos += 4 + (int)BinaryPrimitives.ReadUInt32BigEndian(span[pos..]);
                }
                return false;
            }
        }

        public override void Write(ReadOnlySpan<byte> buffer)
        {
            lock (_bytes)
            {
                _bytes.AddRange(buffer);
            }
        }

        public override ValueTask WriteAsync(ReadOnlyMemory<byte> buffer, CancellationToken cancellationToken = default)
        {
            Write(buffer.Span);
            return ValueTask.CompletedTask;
        }

        public override void Write(byte[] buffer, int offset, int count) => Write(buffer.AsSpan(offset, count));
        public override bool CanRead => false;
        public override bool CanSeek => false;
        public override bool CanWrite => true;
        public override long Length => throw new NotSupportedException();
        public override long Position { get => throw new NotSupportedException(); set => throw new NotSupportedException(); }
        public override void Flush() { }
        public override int Read(byte[] buffer, int offset, int count) => throw new NotSupportedException();
        public override long Seek(long offset, SeekOrigin origin) => throw new NotSupportedException();
        public override void SetLength(long value) => throw new NotSupportedException();
    }

    /// <summary>The local end of a relay: gives its upload in reads of the given sizes then end of file, records what comes down.</summary>
    private sealed class LocalEnd(byte[] upload, int[] reads) : Stream
    {
        private int _pos;
        private int _read;

        public List<byte> Received { get; } = [];

        public bool SendShutDown { get; private set; }

        public void ShutdownSend() => SendShutDown = true;

        public override async ValueTask<int> ReadAsync(Memory<byte> buffer, CancellationToken cancellationToken = default)
        {
            await Task.Yield();
            cancellationToken.ThrowIfCancellationRequested();
            int n = Math.Min(Math.Min(buffer.Length, reads[_read++ % reads.Length]), upload.Length - _pos);
            upload.AsMemory(_pos, n).CopyTo(buffer);
            _pos += n;
            return n;
        }

        public override ValueTask WriteAsync(ReadOnlyMemory<byte> buffer, CancellationToken cancellationToken = default)
        {
            lock (Received)
            {
                Received.AddRange(buffer.Span);
            }
            return ValueTask.CompletedTask;
        }

        public override int Read(byte[] buffer, int offset, int count) => throw new NotSupportedException();
        public override void Write(byte[] buffer, int offset, int count) => throw new NotSupportedException();
        public override bool CanRead => true;
        public override bool CanSeek => false;
        public override bool CanWrite => true;
        public override long Length => throw new NotSupportedException();
        public override long Position { get => throw new NotSupportedException(); set => throw new NotSupportedException(); }
        public override void Flush() { }
        public override long Seek(long offset, SeekOrigin origin) => throw new NotSupportedException();
        public override void SetLength(long value) => throw new NotSupportedException();
    }
}
