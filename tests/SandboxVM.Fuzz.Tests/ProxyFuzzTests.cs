using System.Net;
using System.Net.Sockets;
using System.Text;
using System.Text.Json.Serialization.Metadata;
using System.Text.RegularExpressions;
using CsCheck;
using SandboxVM.Agent;
using SandboxVM.Agent.Egress;
using SandboxVM.Protocol;

namespace SandboxVM.Fuzz.Tests;

/// <summary>
/// The guest HTTP proxy's request parsing (<see cref="ProxyRequest.Parse"/>) on mutated real request
/// heads, and the proxy itself (<see cref="EgressProxy"/> on loopback, a recording fake host link)
/// on the same inputs. Every head gets one of the documented answers or a close, never an exception or
/// a hang; the one destination opened is the one the target names; a forwarded head carries no bare
/// CR, LF, NUL or other control character and exactly one Host, the opened one.
/// </summary>
[Trait("category", Fuzz.Category)]
[Trait("tier", "unit")]
public sealed partial class ProxyFuzzTests
{
    private static readonly IReadOnlyList<byte[]> _corpus = [.. Fuzz.Corpus("proxy").Select(c => c.Bytes)];

    private static readonly byte[][] _tokens =
    [
        .. new[]
        {
            "\r\n", "\n", "\r", "\0", " ", ":", "\t", "\x7f", "@", "\\", "%00", "%0d%0a", "[", "]", ":0", ":65536", ":443",
            "CONNECT ", "GET ", "http://", "https://", "search.sandboxvm.internal", "Host: evil.example\r\n", "Host:\r\n",
            "Transfer-Encoding: chunked\r\n", "Content-Length: 99999999\r\n", "Connection: keep-alive\r\n", " folded\r\n",
            "\r\n\r\n", "HTTP/1.1", "HTTP/2", "\u00f6", "xn--", "0x7f.1", "[::1]", "user:pw@", "#", "?", "//",
        }.Select(Encoding.Latin1.GetBytes),
    ];

    private static readonly Gen<byte[]> _heads = Mutator.From(_corpus, _tokens);

    [Fact]
    public void MutatedHeads_ParseToADocumentedAnswer_AndOnlyTheNamedDestination() =>
        Fuzz.Run("proxy-parse", _heads, bytes => CheckParse(HeadOf(bytes)), iterations: 2000, b => Fuzz.Escape(b), b => b);

    [Fact]
    public Task MutatedHeads_ThroughTheProxy_GetADocumentedAnswer_AndOpenAtMostTheParsedDestination() =>
        ProxyHarness.UseAsync(proxy => Fuzz.RunAsync("proxy-serve", Gen.Select(_heads.Where(h => h.Length <= 12 * 1024), Gen.Enum<LinkMode>(), (h, m) => (h, m)),
            input => proxy.CheckAsync(input.h, input.m), iterations: 200, input => $"link={input.m} head={Fuzz.Escape(input.h)}"));

    private static ReadOnlySpan<byte> HeadOf(byte[] bytes)
    {
        int end = bytes.AsSpan().IndexOf("\r\n\r\n"u8);
        return end < 0 ? bytes : bytes.AsSpan(0, end);
    }

    /// <summary>The properties of one parse; returns it for further checks.</summary>
    private static ProxyRequest CheckParse(ReadOnlySpan<byte> head)
    {
        var request = ProxyRequest.Parse(head);
        string text = Encoding.Latin1.GetString(head);
        string[] requestLine = text.Split("\r\n")[0].Split(' ');
        switch (request.Kind)
        {
            case ProxyRequestKind.Refused:
                Assert.Equal(400, request.Status);
                Assert.False(string.IsNullOrEmpty(request.Code));
                break;
            case ProxyRequestKind.Connect:
                Assert.Equal("CONNECT", requestLine[0]);
                Assert.InRange(request.Port, 1, 65535);
                Assert.NotEmpty(request.Host);
                // The destination is the target as written: host (IPv6 in brackets) and port.
                string written = request.Host.Contains(':', StringComparison.Ordinal) && requestLine[1].StartsWith('[') ? $"[{request.Host}]" : request.Host;
                Assert.Equal($"{written}:{request.Port}", requestLine[1]);
                break;
            case ProxyRequestKind.Search:
                Assert.Equal(EgressProxy.SearchHost, request.Target!.Host, ignoreCase: true);
                break;
            default:
                CheckForward(request, requestLine);
                break;
        }
        return request;
    }

    private static void CheckForward(ProxyRequest request, string[] requestLine)
    {
        Assert.InRange(request.Port, 1, 65535);
        Assert.NotEmpty(request.Host);
        string head = request.ForwardHead;
        Assert.EndsWith("\r\nConnection: close\r\n\r\n", head, StringComparison.Ordinal);
        string[] lines = head[..^4].Split("\r\n");
        foreach (string line in lines)
        {
            Assert.False(line.Any(c => c is (< ' ' and not '\t') or (char)127), $"control character in forwarded line '{Fuzz.Escape(line)}'");
        }
        string[] first = lines[0].Split(' ');
        Assert.Equal(3, first.Length);
        Assert.Equal(requestLine[0], first[0]);
        Assert.StartsWith("/", first[1], StringComparison.Ordinal);
        var hosts = lines.Skip(1).Where(l => l.StartsWith("host:", StringComparison.OrdinalIgnoreCase)).ToList();
        string opened = request.Host.Contains(':', StringComparison.Ordinal) ? $"[{request.Host}]" : request.Host;
        string expectedHost = request.Port == 80 ? opened : $"{opened}:{request.Port}";
        Assert.Equal([$"Host: {expectedHost}"], hosts);
        Assert.Single(lines, l => l.StartsWith("connection:", StringComparison.OrdinalIgnoreCase));
        Assert.DoesNotContain(lines, l => l.StartsWith("proxy-", StringComparison.OrdinalIgnoreCase) || l.StartsWith("keep-alive:", StringComparison.OrdinalIgnoreCase));

        // An independent reading of a plain-name target: http://NAME[:PORT]/... opens NAME:PORT, nothing else.
        var plain = PlainTarget().Match(requestLine[1]);
        if (plain.Success)
        {
            Assert.Equal(plain.Groups["name"].Value.ToLowerInvariant(), request.Host);
            Assert.Equal(plain.Groups["port"].Success ? int.Parse(plain.Groups["port"].Value, System.Globalization.CultureInfo.InvariantCulture) : 80, request.Port);
        }
    }

    /// <summary>A target whose host is a DNS name (last label starts with a letter, so no IPv4 shorthand) and no user info.</summary>
    [GeneratedRegex(@"^http://(?<name>([a-zA-Z0-9]([a-zA-Z0-9-]*[a-zA-Z0-9])?\.)*[a-zA-Z][a-zA-Z0-9-]*)(:(?<port>[1-9][0-9]{0,3}))?([/?#]|$)", RegexOptions.CultureInvariant)]
    private static partial Regex PlainTarget();

    public enum LinkMode
    {
        Allow,
        Deny,
        Timeout,
        Fail,
        Detached,
    }

    /// <summary>A real <see cref="EgressProxy"/> on loopback whose host link records every open and answers as told.</summary>
    private sealed class ProxyHarness : IHostLink
    {
        private readonly EgressProxy _proxy = new();
        private readonly List<(string Host, int Port)> _opens = [];
        private readonly List<FrameStream> _streams = [];
        private IPEndPoint _endpoint = null!;
        private LinkMode _mode;

        public static async Task UseAsync(Func<ProxyHarness, Task> body)
        {
            var harness = new ProxyHarness();
            harness._proxy.Link = harness;
            harness._endpoint = IPEndPoint.Parse(harness._proxy.Start("127.0.0.1:0"));
            await body(harness);
        }

        public async Task CheckAsync(byte[] input, LinkMode mode)
        {
            lock (_opens)
            {
                _opens.Clear();
                _mode = mode;
            }
            _proxy.Link = mode == LinkMode.Detached ? null : this;
            using var client = new TcpClient();
            await client.ConnectAsync(_endpoint);
            var stream = client.GetStream();
            bool reset = false;
            try
            {
                await stream.WriteAsync(input);
                client.Client.Shutdown(SocketShutdown.Send);
            }
            catch (IOException)
            {
                reset = true; // the proxy answered (431) and closed before taking all of it
            }
            var answer = new MemoryStream();
            try
            {
                await stream.CopyToAsync(answer);
            }
            catch (IOException)
            {
                reset = true;
            }

            byte[] bytes = input;
            int headEnd = bytes.AsSpan().IndexOf("\r\n\r\n"u8);
            var request = headEnd >= 0 && headEnd <= 16 * 1024 ? ProxyRequest.Parse(bytes.AsSpan(0, headEnd)) : null;
            string text = Encoding.Latin1.GetString(answer.ToArray());
            List<(string Host, int Port)> opens;
            lock (_opens)
            {
                opens = [.. _opens];
            }

            if (request is null)
            {
                // No complete head: closed without an answer, or 431 when the head outgrew its buffer.
                Assert.True(text.Length == 0 || text.StartsWith("HTTP/1.1 431 ", StringComparison.Ordinal) || (reset && text.Length == 0),
                    $"answer to an incomplete head: '{Fuzz.Escape(text, 300)}'");
                Assert.Empty(opens);
                return;
            }
            Assert.Matches(@"^HTTP/1\.1 (200|400|403|431|502|503|504) ", text);
            int status = int.Parse(text.AsSpan(9, 3), System.Globalization.CultureInfo.InvariantCulture);
            switch (request.Kind)
            {
                case ProxyRequestKind.Refused:
                case ProxyRequestKind.Search:
                    Assert.Empty(opens);
                    Assert.True(request.Kind == ProxyRequestKind.Search || status == 400, $"status {status} for a refused head");
                    break;
                default:
                    int expected = mode switch
                    {
                        LinkMode.Allow => 200,
                        LinkMode.Deny => 403,
                        LinkMode.Timeout => 504,
                        _ => 502,
                    };
                    Assert.Equal(expected, status);
                    Assert.Equal(mode == LinkMode.Detached ? [] : [(request.Host, request.Port)], opens);
                    break;
            }
        }

        public Task<FrameStream> OpenAsync(AgentRequest request, CancellationToken cancellationToken)
        {
            LinkMode mode;
            lock (_opens)
            {
                _opens.Add((request.EgressOpen!.Host, request.EgressOpen.Port));
                mode = _mode;
            }
            var stream = new FrameStream(new FrameWriter(Stream.Null), ProtocolInfo.AgentIdBit | 1) { IdleTimeout = TimeSpan.FromSeconds(5) };
            switch (mode)
            {
                case LinkMode.Deny:
                    throw new AgentException("denied_by_rule", "denied by a rule");
                case LinkMode.Timeout:
                    throw new AgentException("connect_timeout", "no connection within 10 s");
                case LinkMode.Fail:
                    throw new AgentException("connect_failed", "connection refused");
            }
            // The origin: one short answer, then its end.
            stream.Deliver(new Frame(FrameType.Data, stream.Id, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"u8.ToArray()));
            stream.Deliver(Frame.Empty(FrameType.DataEnd, stream.Id));
            lock (_streams)
            {
                _streams.Add(stream);
            }
            return Task.FromResult(stream);
        }

        public Task<T> CallAsync<T>(AgentRequest request, JsonTypeInfo<T> replyType, CancellationToken cancellationToken) =>
            _mode == LinkMode.Allow
                ? Task.FromResult((T)(object)new SearchReply { Results = [new SearchHit { Title = "t", Url = "http://example.com/", Snippet = "s" }] })
                : throw new AgentException(ErrorCodes.SearchNotConfigured, "no search provider");

        public void Release(uint id)
        {
        }
    }
}
