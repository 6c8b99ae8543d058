using System.Buffers.Binary;
using System.Text;
using System.Text.Json;
using SandboxVM.Protocol;

namespace SandboxVM.Protocol.Tests;

[Trait("tier", "unit")]
public class FramingTests
{
    private static async Task<MemoryStream> WriteAsync(params Frame[] frames)
    {
        var ms = new MemoryStream();
        var writer = new FrameWriter(ms);
        foreach (var f in frames)
        {
            await writer.WriteAsync(f.Type, f.Id, f.Payload, TestContext.Current.CancellationToken);
        }
        ms.Position = 0;
        return ms;
    }

    private static byte[] RawFrame(uint length, byte type, uint id, byte[] payload)
    {
        var buf = new byte[9 + payload.Length];
        BinaryPrimitives.WriteUInt32BigEndian(buf, length);
        buf[4] = type;
        BinaryPrimitives.WriteUInt32BigEndian(buf.AsSpan(5), id);
        payload.CopyTo(buf, 9);
        return buf;
    }

    [Fact]
    public async Task Frames_RoundTrip_InOrder_WithTypeIdAndPayload()
    {
        var ct = TestContext.Current.CancellationToken;
        var ms = await WriteAsync(
            new Frame(FrameType.Request, 7, Encoding.UTF8.GetBytes("{\"op\":\"ping\"}")),
            Frame.Empty(FrameType.DataEnd, 7),
            new Frame(FrameType.Stdout, uint.MaxValue, new byte[] { 0, 255, 10 }));
        var reader = new FrameReader(ms);

        var a = await reader.ReadAsync(ct);
        Assert.Equal(ReadOutcome.Frame, a.Outcome);
        Assert.Equal(FrameType.Request, a.Frame.Type);
        Assert.Equal(7u, a.Frame.Id);
        Assert.Equal("{\"op\":\"ping\"}", Encoding.UTF8.GetString(a.Frame.Payload.Span));

        var b = await reader.ReadAsync(ct);
        Assert.Equal(FrameType.DataEnd, b.Frame.Type);
        Assert.True(b.Frame.Payload.IsEmpty);

        var c = await reader.ReadAsync(ct);
        Assert.Equal(uint.MaxValue, c.Frame.Id);
        Assert.Equal(new byte[] { 0, 255, 10 }, c.Frame.Payload.ToArray());

        Assert.Equal(ReadOutcome.EndOfStream, (await reader.ReadAsync(ct)).Outcome);
    }

    [Fact]
    public async Task OversizedFrame_IsRejected_AndTheNextFrameStillReads()
    {
        var ct = TestContext.Current.CancellationToken;
        var big = RawFrame(5 + 100, (byte)FrameType.Data, 3, new byte[100]);
        var ms = new MemoryStream();
        ms.Write(big);
        ms.Write(RawFrame(5 + 2, (byte)FrameType.Request, 4, "{}"u8.ToArray()));
        ms.Position = 0;
        var reader = new FrameReader(ms, maxPayload: 50);

        var rejected = await reader.ReadAsync(ct);
        Assert.Equal(ReadOutcome.Rejected, rejected.Outcome);
        Assert.Equal(3u, rejected.Frame.Id);
        Assert.Contains("exceeds", rejected.Error);

        var next = await reader.ReadAsync(ct);
        Assert.Equal(ReadOutcome.Frame, next.Outcome);
        Assert.Equal(4u, next.Frame.Id);
    }

    [Fact]
    public async Task UnknownFrameType_IsRejected_AndTheStreamStaysInSync()
    {
        var ct = TestContext.Current.CancellationToken;
        var ms = new MemoryStream();
        ms.Write(RawFrame(5 + 3, 200, 9, [1, 2, 3]));
        ms.Write(RawFrame(5, (byte)FrameType.Cancel, 9, []));
        ms.Position = 0;
        var reader = new FrameReader(ms);

        var rejected = await reader.ReadAsync(ct);
        Assert.Equal(ReadOutcome.Rejected, rejected.Outcome);
        Assert.Contains("unknown frame type 200", rejected.Error);
        Assert.Equal(FrameType.Cancel, (await reader.ReadAsync(ct)).Frame.Type);
    }

    [Fact]
    public async Task LengthShorterThanHeader_IsRejected()
    {
        var ct = TestContext.Current.CancellationToken;
        var ms = new MemoryStream();
        var bad = new byte[6];
        BinaryPrimitives.WriteUInt32BigEndian(bad, 2);
        ms.Write(bad);
        ms.Write(RawFrame(5, (byte)FrameType.DataEnd, 1, []));
        ms.Position = 0;
        var reader = new FrameReader(ms);

        Assert.Equal(ReadOutcome.Rejected, (await reader.ReadAsync(ct)).Outcome);
        Assert.Equal(FrameType.DataEnd, (await reader.ReadAsync(ct)).Frame.Type);
    }

    [Fact]
    public async Task StreamCutInsideAFrame_Throws()
    {
        var ct = TestContext.Current.CancellationToken;
        var whole = RawFrame(5 + 10, (byte)FrameType.Stdout, 1, new byte[10]);
        var reader = new FrameReader(new MemoryStream(whole[..12]));
        await Assert.ThrowsAsync<EndOfStreamException>(async () => await reader.ReadAsync(ct));
    }

    [Fact]
    public async Task ConcurrentWriters_NeverInterleaveFrames()
    {
        var ct = TestContext.Current.CancellationToken;
        var ms = new MemoryStream();
        var writer = new FrameWriter(ms);
        var payload = new byte[Frame.ChunkSize * 3 + 17];
        await Task.WhenAll(Enumerable.Range(1, 8).Select(i =>
            writer.WriteChunkedAsync(FrameType.Data, (uint)i, payload, ct).AsTask()));
        ms.Position = 0;
        var reader = new FrameReader(ms);
        var perId = new Dictionary<uint, long>();
        int frames = 0;
        while (true)
        {
            var r = await reader.ReadAsync(ct);
            if (r.Outcome == ReadOutcome.EndOfStream)
            {
                break;
            }
            Assert.Equal(ReadOutcome.Frame, r.Outcome);
            perId[r.Frame.Id] = perId.GetValueOrDefault(r.Frame.Id) + r.Frame.Payload.Length;
            frames++;
        }
        Assert.Equal(32, frames);
        Assert.All(perId.Values, v => Assert.Equal(payload.Length, v));
    }

    [Fact]
    public void Messages_UseSnakeCase_AndReasonsAsStrings()
    {
        var result = new ExecResult { Run = new StepResult { Reason = TerminationReason.OutputLimit, DurationMs = 5 } };
        string json = JsonSerializer.Serialize(result, ProtocolJson.Default.ExecResult);
        Assert.Contains("\"reason\":\"output_limit\"", json);
        Assert.Contains("\"duration_ms\":5", json);

        var req = JsonSerializer.Deserialize(
            "{\"op\":\"exec\",\"exec\":{\"run\":[\"./main\"],\"run_timeout_ms\":1500,\"future_field\":1}}",
            ProtocolJson.Default.AgentRequest)!;
        Assert.Equal(Ops.Exec, req.Op);
        Assert.Equal(1500, req.Exec!.RunTimeoutMs);
        Assert.Equal(["./main"], req.Exec.Run);
    }
}
