using System.Buffers.Binary;
using System.Net.Sockets;
using Microsoft.Extensions.Time.Testing;
using SandboxVM.Testing;

namespace SandboxVM.Protocol.Tests;

/// <summary>Tests that measure this process's heap: they run alone, after the parallel ones.</summary>
[CollectionDefinition(nameof(HeapMeasuring), DisableParallelization = true)]
public sealed class HeapMeasuring;

/// <summary>What a hostile peer can make the frame layer hold or do: every buffer and wait is bounded.</summary>
[Collection(nameof(HeapMeasuring))]
[Trait("tier", "unit")]
public sealed class BoundsTests
{
    private static CancellationToken Ct => TestContext.Current.CancellationToken;

    private static Frame Data(uint id, int length) => new(FrameType.Data, id, new byte[length]);

    private static async Task<List<Frame>> FramesIn(MemoryStream written)
    {
        written.Position = 0;
        var reader = new FrameReader(written);
        var frames = new List<Frame>();
        while (await reader.ReadAsync(Ct) is { Outcome: ReadOutcome.Frame } r)
        {
            frames.Add(r.Frame);
        }
        return frames;
    }

    [Fact]
    public async Task AReaderThatDoesNotSkip_RefusesAFourGibibyteFrameAtItsHeader()
    {
        byte[] header = new byte[9];
        BinaryPrimitives.WriteUInt32BigEndian(header, 0xFFFF_FFF0);
        header[4] = (byte)FrameType.Stdout;

        // No byte follows the header: a skipping reader would wait for 4 GiB of them.
        var read = await new FrameReader(new MemoryStream(header), skipOversized: false).ReadAsync(Ct);

        Assert.Equal(ReadOutcome.Rejected, read.Outcome);
        Assert.Contains("exceeds the limit", read.Error);
        await Assert.ThrowsAsync<EndOfStreamException>(() => new FrameReader(new MemoryStream(header)).ReadAsync(Ct).AsTask());
    }

    [Fact]
    public async Task AWriterWithATimeout_BreaksOnceWhenThePeerStopsReading_AndFailsEveryLaterWriteAtOnce()
    {
        var (host, guest) = FakeAgent.SocketPair();
        using var hostSocket = host;
        using var guestSocket = guest;
        int timeouts = 0;
        var writer = new FrameWriter(new NetworkStream(host), TimeSpan.FromMilliseconds(300), _ => Interlocked.Increment(ref timeouts));

        // The guest never reads: the socket fills and a write stalls.
        byte[] payload = new byte[Frame.MaxPayload];
        var e = await Assert.ThrowsAsync<FrameWriteTimeoutException>(async () =>
        {
            for (int i = 0; i < 1000; i++)
            {
                await writer.WriteAsync(FrameType.Data, 1, payload, Ct);
            }
        });

        Assert.Contains("did not read", e.Message);
        Assert.Equal(1, timeouts);
        await Assert.ThrowsAsync<FrameWriteTimeoutException>(() => writer.WriteAsync(FrameType.Cancel, 1, ReadOnlyMemory<byte>.Empty, Ct).AsTask());
        Assert.Equal(1, timeouts);
    }

    [Fact]
    public void OneByteDataFramesFillingTheWindow_CostAboutAWindow_NotAnObjectEach()
    {
        var stream = new FrameStream(new FrameWriter(new MemoryStream()), 1);
        long before = GC.GetTotalMemory(forceFullCollection: true);

        for (int i = 0; i < FrameStream.Window; i++)
        {
            stream.Deliver(Data(1, 1));
            stream.Deliver(Data(1, 0)); // empty frames carry nothing and are not kept
        }

        long retained = GC.GetTotalMemory(forceFullCollection: true) - before;
        TestContext.Current.TestOutputHelper?.WriteLine($"{FrameStream.Window} one-byte frames hold {retained} bytes");
        Assert.Null(stream.AbortReason);
        // A window of bytes (256 KiB) in shared segments; one object per frame would be ~16 MiB.
        Assert.True(retained < 2 * FrameStream.Window, $"{FrameStream.Window} one-byte frames hold {retained} bytes");
        GC.KeepAlive(stream);
    }

    [Fact]
    public async Task DataPastTheCredit_AbortsTheStreamWithOneCancel_AndDropsWhatFollows()
    {
        var written = new MemoryStream();
        var stream = new FrameStream(new FrameWriter(written), 9);

        for (int i = 0; i < 100; i++)
        {
            stream.Deliver(Data(9, Frame.ChunkSize));
        }

        Assert.Equal("the peer sent more than its credit", stream.AbortReason);
        var cancels = (await FramesIn(written)).Where(f => f.Type == FrameType.Cancel).ToList();
        Assert.Single(cancels);
        Assert.Equal(9u, cancels[0].Id);
    }

    [Fact]
    public async Task CreditBeyondWhatWasSent_AbortsTheStream()
    {
        var written = new MemoryStream();
        var stream = new FrameStream(new FrameWriter(written), 3);
        byte[] credit = new byte[4];
        BinaryPrimitives.WriteUInt32BigEndian(credit, 1);

        stream.Deliver(new Frame(FrameType.Credit, 3, credit));

        Assert.Equal("the peer returned more credit than it was sent", stream.AbortReason);
        Assert.Single(await FramesIn(written), f => f.Type == FrameType.Cancel);
    }

    [Fact]
    public async Task ARelayWithNoBytesEitherWay_EndsAfterItsIdleTimeoutOnItsClock_AndCancelsThePeer()
    {
        var time = new FakeTimeProvider();
        var written = new MemoryStream();
        var stream = new FrameStream(new FrameWriter(written), 5, time) { IdleTimeout = TimeSpan.FromMinutes(2) };
        var (host, guest) = FakeAgent.SocketPair();
        using var hostSocket = host;
        using var guestSocket = guest;
        using var local = new NetworkStream(host);
        Task<bool> relay = stream.RelayAsync(local, () => { }, ReadOnlyMemory<byte>.Empty, Ct);

        // Bytes from the peer at 1:30 are activity: two minutes count from them.
        time.Advance(TimeSpan.FromSeconds(90));
        stream.Deliver(Data(5, 10));
        await Eventually.TrueAsync(() => stream.BytesReceived == 10, () => "the relay did not hand the bytes on");
        time.Advance(TimeSpan.FromSeconds(90));
        Assert.Null(stream.AbortReason);
        Assert.False(relay.IsCompleted);

        time.Advance(TimeSpan.FromSeconds(60));
        Assert.False(await relay.WaitAsync(TimeSpan.FromSeconds(20), Ct));
        Assert.Equal("no data for 120 s", stream.AbortReason);
        Assert.Single(await FramesIn(written), f => f is { Type: FrameType.Cancel, Id: 5 });
    }
}
