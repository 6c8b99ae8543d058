using System.Globalization;
using System.Net;
using System.Text;

namespace SandboxVM.Egress;

/// <summary>
/// An HTTP proxy the host itself must use to reach the internet. The gateway still applies the policy
/// locally, then asks the proxy for <c>CONNECT address:port</c> with the checked address, so the proxy
/// cannot resolve the name to something else. Only <c>http://</c> proxies (plain TCP to the proxy).
/// </summary>
public sealed class UpstreamProxy
{
    private readonly NoProxyEntry[] _noProxy;

    private UpstreamProxy(Uri uri, string host, int port, NetworkCredential? credentials, NoProxyEntry[] noProxy, string noProxyText)
    {
        Uri = uri;
        Credentials = credentials;
        var authorization = credentials is null ? null
            : "Basic " + Convert.ToBase64String(Encoding.UTF8.GetBytes(credentials.UserName + ":" + credentials.Password));
        Host = host;
        Port = port;
        ProxyAuthorization = authorization;
        _noProxy = noProxy;
        NoProxy = noProxyText;
    }

    /// <summary>The proxy URL without credentials.</summary>
    public Uri Uri { get; }

    /// <summary>Proxy host (name or address, no brackets).</summary>
    public string Host { get; }

    public int Port { get; }

    /// <summary>The <c>Proxy-Authorization</c> value (Basic) when the URL has user info; null otherwise.</summary>
    internal string? ProxyAuthorization { get; }

    /// <summary>User and password from the URL's user info; null when it has none.</summary>
    internal NetworkCredential? Credentials { get; }

    /// <summary>The <c>NO_PROXY</c> list as given.</summary>
    public string NoProxy { get; }

    /// <summary>
    /// Parses a proxy URL (<c>http://[user:pass@]host:port</c>; no scheme means http) and a <c>NO_PROXY</c>
    /// list (comma separated: <c>*</c>, names matching themselves and their subdomains with or without a
    /// leading dot or <c>*.</c>, IP addresses, CIDR ranges, each optionally with <c>:port</c>).
    /// Throws <see cref="FormatException"/> for an unusable URL.
    /// </summary>
    public static UpstreamProxy Parse(string proxyUrl, string? noProxy = null)
    {
        ArgumentNullException.ThrowIfNull(proxyUrl);
        var text = proxyUrl.Trim();
        if (!text.Contains("://", StringComparison.Ordinal))
            text = "http://" + text;
        if (!Uri.TryCreate(text, UriKind.Absolute, out var uri) || uri.Host.Length == 0)
            throw new FormatException($"upstream proxy '{Redact(proxyUrl)}' is not a URL");
        if (uri.Scheme != Uri.UriSchemeHttp)
            throw new FormatException($"upstream proxy '{Redact(proxyUrl)}': only http:// proxies are supported, not {uri.Scheme}://");

        NetworkCredential? credentials = null;
        if (uri.UserInfo.Length > 0)
        {
            var parts = uri.UserInfo.Split(':', 2);
            credentials = new NetworkCredential(Uri.UnescapeDataString(parts[0]), parts.Length > 1 ? Uri.UnescapeDataString(parts[1]) : "");
        }

        var clean = new UriBuilder(uri) { UserName = "", Password = "", Path = "" }.Uri;
        var entries = (noProxy ?? "").Split([',', ' ', '\t'], StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries)
            .Select(NoProxyEntry.Parse).ToArray();
        return new UpstreamProxy(clean, uri.IdnHost.Trim('[', ']'), uri.Port, credentials, entries, noProxy ?? "");
    }

    /// <summary>
    /// The proxy from the environment: <c>https_proxy</c> or <c>HTTPS_PROXY</c>, with <c>no_proxy</c> or
    /// <c>NO_PROXY</c>; null when neither proxy variable is set. <paramref name="getEnvironmentVariable"/>
    /// defaults to <see cref="Environment.GetEnvironmentVariable(string)"/>.
    /// </summary>
    public static UpstreamProxy? FromEnvironment(Func<string, string?>? getEnvironmentVariable = null)
    {
        getEnvironmentVariable ??= Environment.GetEnvironmentVariable;
        var url = First(getEnvironmentVariable, "https_proxy", "HTTPS_PROXY");
        return url is null ? null : Parse(url, First(getEnvironmentVariable, "no_proxy", "NO_PROXY"));

        static string? First(Func<string, string?> env, string a, string b) =>
            env(a) is { Length: > 0 } x && !string.IsNullOrWhiteSpace(x) ? x : env(b) is { } y && !string.IsNullOrWhiteSpace(y) ? y : null;
    }

    /// <summary>
    /// True when <c>NO_PROXY</c> says to connect to this destination directly. <paramref name="host"/> is
    /// matched against name entries, <paramref name="address"/> (when known) against address and range entries.
    /// </summary>
    public bool Bypasses(string host, IPAddress? address, int port)
    {
        foreach (var e in _noProxy)
        {
            if (e.Matches(host, address, port))
                return true;
        }

        return false;
    }

    public override string ToString() => Uri.ToString();

    /// <summary>This proxy as an <see cref="IWebProxy"/> for <see cref="HttpClient"/> (same NO_PROXY rules, same credentials).</summary>
    public IWebProxy AsWebProxy() => new WebProxyAdapter(this);

    private sealed class WebProxyAdapter(UpstreamProxy proxy) : IWebProxy
    {
        public ICredentials? Credentials { get => proxy.Credentials; set => throw new NotSupportedException(); }

        public Uri? GetProxy(Uri destination) => IsBypassed(destination) ? null : proxy.Uri;

        public bool IsBypassed(Uri host) => proxy.Bypasses(host.IdnHost.Trim('[', ']'), null, host.Port);
    }

    private static string Redact(string url)
    {
        var at = url.LastIndexOf('@');
        var scheme = url.IndexOf("://", StringComparison.Ordinal);
        return at < 0 ? url : (scheme >= 0 && scheme < at ? url[..(scheme + 3)] : "") + "***@" + url[(at + 1)..];
    }

    private sealed class NoProxyEntry
    {
        private bool _all;
        private string? _domain;
        private IPNetwork? _network;
        private int? _port;

        public static NoProxyEntry Parse(string text)
        {
            var e = new NoProxyEntry();
            var t = text.ToLowerInvariant();
            if (t == "*")
            {
                e._all = true;
                return e;
            }

            if (t.StartsWith('[') && t.IndexOf(']', StringComparison.Ordinal) is var close and > 0)
            {
                if (close + 2 < t.Length && t[close + 1] == ':' && int.TryParse(t.AsSpan(close + 2), NumberStyles.None, CultureInfo.InvariantCulture, out var bp))
                    e._port = bp;
                t = t[1..close];
            }
            else if (t.Count(c => c == ':') == 1)
            {
                var i = t.IndexOf(':', StringComparison.Ordinal);
                if (int.TryParse(t.AsSpan(i + 1), NumberStyles.None, CultureInfo.InvariantCulture, out var p))
                    e._port = p;
                t = t[..i];
            }

            if (IPNetwork.TryParse(t, out var net))
                e._network = net;
            else if (IPAddress.TryParse(t, out var addr))
                e._network = new IPNetwork(addr, addr.AddressFamily == System.Net.Sockets.AddressFamily.InterNetwork ? 32 : 128);
            else
                e._domain = t.TrimStart('*').TrimStart('.').TrimEnd('.');
            return e;
        }

        public bool Matches(string host, IPAddress? address, int port)
        {
            if (_all)
                return true;
            if (_port is { } p && p != port)
                return false;
            if (_network is { } n)
            {
                if (address is null && !IPAddress.TryParse(host.Trim('[', ']'), out address))
                    return false;
                var a = EgressAddressRanges.StripScope(address);
                return n.ContainsBits(a) || (a.IsIPv4MappedToIPv6 && n.ContainsBits(a.MapToIPv4()));
            }

            host = host.ToLowerInvariant().TrimEnd('.');
            return _domain is { Length: > 0 } d && (host == d || host.EndsWith("." + d, StringComparison.Ordinal));
        }
    }
}
