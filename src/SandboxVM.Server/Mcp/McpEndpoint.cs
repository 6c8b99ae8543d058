using System.Net.Sockets;
using System.Security.Claims;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting.Server;
using Microsoft.AspNetCore.Hosting.Server.Features;
using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.DependencyInjection;
using SandboxVM.Client;

namespace SandboxVM.Server.Mcp;

/// <summary>
/// MCP over Streamable HTTP at <see cref="Path"/>: stateful sessions (a client's sandbox ids stay valid
/// between its calls), behind the same API keys as /v1. The caller middleware marks the request's user
/// with the key's name, so the SDK refuses a session id presented with another key.
/// </summary>
internal static class McpEndpoint
{
    public const string Path = "/mcp";

    public static void AddServices(IServiceCollection services)
    {
        services.AddHttpContextAccessor();
        services.AddSingleton<ISandboxClientSource, LoopbackClientSource>();
        services.AddMcpServer()
            .WithHttpTransport(o =>
            {
                // Explicit: the SDK's default became stateless, and a session is what keeps a client's sandboxes in reach.
                // Tools run in the execution context of the POST that carried the call (PerSessionExecutionContext
                // stays false): the key of that request, not of the session's first.
                o.Stateless = false;
            })
            .AddSandboxVmTools();
    }

    /// <summary>
    /// Maps the endpoint, behind the rule of every JSON endpoint (<see cref="Endpoints.ReadJsonAsync"/>): a POST
    /// not sent as application/json is a 415, so a page of another site cannot reach the tools with a
    /// text/plain POST, which needs no CORS preflight. The SDK itself reads any body.
    /// </summary>
    public static void Map(WebApplication app)
    {
        app.UseWhen(c => HttpMethods.IsPost(c.Request.Method) && c.Request.Path.StartsWithSegments(Path) && !c.Request.HasJsonContentType(),
            refuse => refuse.Run(c => Problems.Write(c, 415, HttpProblemCodes.UnsupportedMediaType, null,
                "MCP messages must be sent as application/json (Content-Type: application/json)")));
        app.MapMcp(Path);
    }

    /// <summary>The user the MCP SDK binds a session to: the caller's name.</summary>
    public static ClaimsPrincipal UserOf(Caller caller) =>
        new(new ClaimsIdentity([new Claim(ClaimTypes.NameIdentifier, caller.Name)], authenticationType: "SandboxVM.ApiKey"));
}

/// <summary>
/// The server's own HTTP API as the MCP tools' client: the address this server listens on (loopback for a
/// wildcard, a Unix socket as it is), with the Authorization and Host of the MCP request being served, so
/// each tool call is the caller's own API call: the same owner checks, limits, metrics and problems.
/// </summary>
internal sealed class LoopbackClientSource(IHttpContextAccessor http, IServer server) : ISandboxClientSource, IDisposable
{
    private readonly Lazy<(string BaseUrl, SocketsHttpHandler Handler)> _self = new(() => Resolve(server));

    public SandboxClient Create()
    {
        var context = http.HttpContext ?? throw new InvalidOperationException("an MCP tool ran outside the HTTP request that carried it");
        string header = context.Request.Headers.Authorization.ToString();
        string? key = header.StartsWith("Bearer ", StringComparison.OrdinalIgnoreCase) ? header["Bearer ".Length..].Trim() : null;
        var (baseUrl, handler) = _self.Value;
        return new SandboxClient(new SandboxClientOptions
        {
            BaseUrl = baseUrl,
            ApiKey = key,
            HttpMessageHandler = new HostHeaderHandler(context.Request.Host.Value ?? "", handler),
            // The MCP request's cancellation ends a call; no clock of its own.
            Timeout = Timeout.InfiniteTimeSpan,
        });
    }

    public CancellationToken CallAborted => http.HttpContext?.RequestAborted ?? CancellationToken.None;

    private static (string, SocketsHttpHandler) Resolve(IServer server)
    {
        var addresses = server.Features.Get<IServerAddressesFeature>()?.Addresses ?? [];
        var parsed = addresses.Select(BindingAddress.Parse).ToList();
        var chosen = parsed.FirstOrDefault(a => a.IsUnixPipe)
            ?? parsed.FirstOrDefault(a => a.Scheme == "http")
            ?? parsed.FirstOrDefault()
            ?? throw new InvalidOperationException("the server listens nowhere its MCP tools could call");
        var handler = new SocketsHttpHandler { PooledConnectionIdleTimeout = TimeSpan.FromMinutes(1) };
        if (chosen.IsUnixPipe)
        {
            string socket = chosen.UnixPipePath;
            handler.ConnectCallback = async (_, ct) =>
            {
                var s = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
                try
                {
                    await s.ConnectAsync(new UnixDomainSocketEndPoint(socket), ct);
                    return new NetworkStream(s, ownsSocket: true);
                }
                catch
                {
                    s.Dispose();
                    throw;
                }
            };
            return ("http://localhost", handler);
        }
        if (chosen.Scheme == "https")
        {
            // The certificate is this server's own, on the address this process holds; its name need not be the loopback's.
            handler.SslOptions.RemoteCertificateValidationCallback = (_, _, _, _) => true;
        }
        string host = chosen.Host switch
        {
            "*" or "+" or "0.0.0.0" => "127.0.0.1",
            "[::]" or "::" => "[::1]",
            _ => chosen.Host,
        };
        return ($"{chosen.Scheme}://{host}:{chosen.Port}", handler);
    }

    public void Dispose()
    {
        if (_self.IsValueCreated)
        {
            _self.Value.Handler.Dispose();
        }
    }

    /// <summary>Sends the MCP request's Host: the name the Host check let in, whatever the server's allowed names are.</summary>
    private sealed class HostHeaderHandler : DelegatingHandler
    {
        private readonly string _host;

        public HostHeaderHandler(string host, HttpMessageHandler inner) : base(inner) => _host = host;

        protected override Task<HttpResponseMessage> SendAsync(HttpRequestMessage request, CancellationToken cancellationToken)
        {
            if (_host.Length > 0)
            {
                request.Headers.Host = _host;
            }
            return base.SendAsync(request, cancellationToken);
        }

        // The inner handler is shared by every call; it is the source's to dispose.
        protected override void Dispose(bool disposing)
        {
        }
    }
}
