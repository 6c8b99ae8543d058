using System.Buffers;
using System.Globalization;
using System.Text;

namespace SandboxVM.Agent.Egress;

internal enum ProxyRequestKind
{
    /// <summary>Answer <see cref="ProxyRequest.Status"/> with <see cref="ProxyRequest.Code"/> and <see cref="ProxyRequest.Message"/>; open nothing.</summary>
    Refused,
    /// <summary><c>CONNECT host:port</c>: open a stream to <see cref="ProxyRequest.Host"/>:<see cref="ProxyRequest.Port"/>.</summary>
    Connect,
    /// <summary>Absolute-form <c>http://</c>: open a stream to host:port and send <see cref="ProxyRequest.ForwardHead"/> first.</summary>
    Forward,
    /// <summary>A request to <see cref="EgressProxy.SearchHost"/>: answered from the host's search provider.</summary>
    Search,
}

/// <summary>
/// What the guest proxy makes of one request head (the bytes before the blank line), as a pure function
/// so it can be checked on any input. The host decides every destination; this only makes sure the one
/// asked for is the one opened, and that nothing a client sends smuggles lines into the forwarded head.
/// </summary>
internal sealed record ProxyRequest
{
    public ProxyRequestKind Kind { get; private init; }

    public string Host { get; private init; } = "";

    public int Port { get; private init; }

    /// <summary>Forward: the request in origin form, ending with the blank line (Latin-1).</summary>
    public string ForwardHead { get; private init; } = "";

    /// <summary>Search: the request target.</summary>
    public Uri? Target { get; private init; }

    public int Status { get; private init; }

    public string Code { get; private init; } = "";

    public string Message { get; private init; } = "";

    private static readonly SearchValues<char> _tokenChars =
        SearchValues.Create("!#$%&'*+-.^_`|~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz");

    public static ProxyRequest Parse(ReadOnlySpan<byte> head)
    {
        string[] lines = Encoding.Latin1.GetString(head).Split("\r\n");
        string[] requestLine = lines[0].Split(' ');
        // RFC 9112: the method is a token and the version exactly HTTP/1.x; anything else could carry
        // control characters into the forwarded request line.
        if (requestLine.Length != 3 || requestLine[2] is not ("HTTP/1.1" or "HTTP/1.0")
            || requestLine[0].Length == 0 || requestLine[0].AsSpan().ContainsAnyExcept(_tokenChars))
        {
            return Refuse(400, "bad_request", "not an HTTP/1.x request");
        }
        string method = requestLine[0];
        string target = requestLine[1];
        // A bare CR or LF, a NUL or another control character in a header line would let a client end
        // the line early for whoever reads it next; obs-fold continuation lines likewise (RFC 9112 5.2).
        for (int i = 1; i < lines.Length; i++)
        {
            string line = lines[i];
            int colon = line.IndexOf(':', StringComparison.Ordinal);
            if (colon <= 0 || line.AsSpan(0, colon).ContainsAnyExcept(_tokenChars) || line.Any(c => c is (< ' ' and not '\t') or (char)127))
            {
                return Refuse(400, "invalid_request", $"header line {i} is malformed (no 'name:', a space in the name, or a control character)");
            }
        }

        if (method == "CONNECT")
        {
            return TrySplitHostPort(target, out string connectHost, out int connectPort)
                ? new ProxyRequest { Kind = ProxyRequestKind.Connect, Host = connectHost, Port = connectPort }
                : Refuse(400, "invalid_request", $"CONNECT target '{EgressProxy.Printable(target)}' is not host:port");
        }

        if (!Uri.TryCreate(target, UriKind.Absolute, out var uri) || uri.Scheme != "http" || uri.Host.Length == 0)
        {
            return Refuse(400, "invalid_request",
                $"this is a proxy: send absolute-form http:// requests or CONNECT host:port (got '{EgressProxy.Printable(target)}')");
        }
        if (uri.Port is < 1 or > 65535)
        {
            return Refuse(400, "invalid_request", $"port {uri.Port} is outside 1..65535");
        }
        // RFC 9110 4.2.4: user info in an http URI is an error; "http://a.com:80@b.com/" names b.com.
        if (uri.UserInfo.Length > 0)
        {
            return Refuse(400, "invalid_request", "user info (user:password@) in the request target is not supported");
        }
        if (string.Equals(uri.Host, EgressProxy.SearchHost, StringComparison.OrdinalIgnoreCase))
        {
            return new ProxyRequest { Kind = ProxyRequestKind.Search, Target = uri };
        }

        var forward = new StringBuilder();
        forward.Append(method).Append(' ').Append(uri.PathAndQuery).Append(' ').Append(requestLine[2]).Append("\r\n");
        // RFC 9112 3.2.2: a proxy replaces the client's Host with the target's, so the origin is told
        // the same name the host's policy checked (a different Host is domain fronting).
        string host = uri.HostNameType == UriHostNameType.IPv6 ? $"[{uri.IdnHost}]" : uri.IdnHost;
        forward.Append("Host: ").Append(host);
        if (!uri.IsDefaultPort)
        {
            forward.Append(':').Append(uri.Port.ToString(CultureInfo.InvariantCulture));
        }
        forward.Append("\r\n");
        foreach (string line in lines.Skip(1))
        {
            string name = line[..line.IndexOf(':', StringComparison.Ordinal)];
            if (name.Equals("Host", StringComparison.OrdinalIgnoreCase)
                || name.Equals("Proxy-Connection", StringComparison.OrdinalIgnoreCase) || name.Equals("Proxy-Authorization", StringComparison.OrdinalIgnoreCase)
                || name.Equals("Connection", StringComparison.OrdinalIgnoreCase) || name.Equals("Keep-Alive", StringComparison.OrdinalIgnoreCase))
            {
                continue;
            }
            forward.Append(line).Append("\r\n");
        }
        forward.Append("Connection: close\r\n\r\n");
        return new ProxyRequest { Kind = ProxyRequestKind.Forward, Host = uri.IdnHost, Port = uri.Port, ForwardHead = forward.ToString() };
    }

    private static ProxyRequest Refuse(int status, string code, string message) =>
        new() { Kind = ProxyRequestKind.Refused, Status = status, Code = code, Message = message };

    private static bool TrySplitHostPort(string target, out string host, out int port)
    {
        host = "";
        port = 0;
        int colon = target.LastIndexOf(':');
        if (colon <= 0 || !int.TryParse(target.AsSpan(colon + 1), NumberStyles.None, CultureInfo.InvariantCulture, out port) || port is < 1 or > 65535)
        {
            return false;
        }
        host = target[..colon];
        if (host.StartsWith('[') && host.EndsWith(']'))
        {
            host = host[1..^1];
        }
        return host.Length > 0;
    }
}
