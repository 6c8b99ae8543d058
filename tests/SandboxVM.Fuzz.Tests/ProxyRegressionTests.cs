using System.Net;
using System.Net.Sockets;
using System.Text;
using System.Text.Json.Serialization.Metadata;
using SandboxVM.Agent.Egress;
using SandboxVM.Protocol;

namespace SandboxVM.Fuzz.Tests;

/// <summary>
/// Heads from the proxy corpus that reached a host other than the opened one, through the real proxy
/// on loopback: the fake host link records every destination opened and every byte forwarded to it.
/// </summary>
[Trait("category", Fuzz.Category)]
[Trait("tier", "unit")]
public sealed class ProxyRegressionTests
{
    [Theory]
    [InlineData("host-mismatch.txt")] // the client's "Host: other.example" was forwarded to allowed.example
    [InlineData("bare-lf-header.txt")] // "X-A: 1\nHost: other.example" was forwarded whole: a second Host line for the origin
    [InlineData("userinfo.txt")] // http://allowed.example:80@other.example/ opened other.example
    public async Task Regression_NothingButTheNamedHostReachesTheOrigin(string corpusFile)
    {
        var link = new RecordingLink();
        var proxy = new EgressProxy { Link = link };
        var endpoint = IPEndPoint.Parse(proxy.Start("127.0.0.1:0"));

        using var client = new TcpClient();
        await client.ConnectAsync(endpoint, TestContext.Current.CancellationToken);
        var stream = client.GetStream();
        await stream.WriteAsync(Fuzz.CorpusFile("proxy", corpusFile), TestContext.Current.CancellationToken);
        client.Client.Shutdown(SocketShutdown.Send);
        using var answer = new MemoryStream();
        await stream.CopyToAsync(answer, TestContext.Current.CancellationToken).WaitAsync(Fuzz.InputTimeout, TestContext.Current.CancellationToken);
        string status = Encoding.Latin1.GetString(answer.ToArray()).Split("\r\n")[0];

        Assert.All(link.Opened, host => Assert.Equal("allowed.example", host));
        Assert.DoesNotContain("other.example", link.Forwarded(), StringComparison.OrdinalIgnoreCase);
        Assert.True(status.StartsWith("HTTP/1.1 200 ", StringComparison.Ordinal) || status.StartsWith("HTTP/1.1 400 ", StringComparison.Ordinal), status);
    }

    /// <summary>Opens every stream (the origin answers 200 and closes) and keeps what the proxy sent up it.</summary>
    private sealed class RecordingLink : IHostLink
    {
        private readonly MemoryStream _up = new();

        public List<string> Opened { get; } = [];

        public string Forwarded()
        {
            byte[] bytes;
            lock (_up)
            {
                bytes = _up.ToArray();
            }
            var reader = new FrameReader(new MemoryStream(bytes));
            var data = new StringBuilder();
            while (reader.ReadAsync().AsTask().GetAwaiter().GetResult() is { Outcome: ReadOutcome.Frame } r)
            {
                if (r.Frame.Type == FrameType.Data)
                {
                    data.Append(Encoding.Latin1.GetString(r.Frame.Payload.Span));
                }
            }
            return data.ToString();
        }

        public Task<FrameStream> OpenAsync(AgentRequest request, CancellationToken cancellationToken)
        {
            lock (Opened)
            {
                Opened.Add(request.EgressOpen!.Host);
            }
            var stream = new FrameStream(new FrameWriter(new LockedStream(_up)), ProtocolInfo.AgentIdBit | 1);
            stream.Deliver(new Frame(FrameType.Data, stream.Id, "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"u8.ToArray()));
            stream.Deliver(Frame.Empty(FrameType.DataEnd, stream.Id));
            return Task.FromResult(stream);
        }

        public Task<T> CallAsync<T>(AgentRequest request, JsonTypeInfo<T> replyType, CancellationToken cancellationToken) =>
            throw new NotSupportedException();

        public void Release(uint id)
        {
        }
    }

    private sealed class LockedStream(MemoryStream inner) : Stream
    {
        public override void Write(byte[] buffer, int offset, int count)
        {
            lock (inner)
            {
                inner.Write(buffer, offset, count);
            }
        }

        public override ValueTask WriteAsync(ReadOnlyMemory<byte> buffer, CancellationToken cancellationToken = default)
        {
            lock (inner)
            {
                inner.Write(buffer.Span);
            }
            return ValueTask.CompletedTask;
        }

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
}
