using System.IO.Pipelines;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Http.Features;
using Microsoft.AspNetCore.Routing;
using Microsoft.Extensions.DependencyInjection;
using SandboxVM.Core.Runs;
using SandboxVM.Core.Sessions;
using SandboxVM.Protocol;
using SandboxVM.Runtime.Agent;
using Yarp.ReverseProxy.Forwarder;

namespace SandboxVM.Server;

/// <summary>
/// <c>/v1/sandboxes/{id}/ports/{port}/{**path}</c>: HTTP (and WebSocket upgrades) to a server the sandbox runs on
/// 127.0.0.1:port, forwarded by YARP's <see cref="IHttpForwarder"/> over a stream of the agent channel
/// (port_open): no network device in the guest is needed. See docs/API.md "Ports".
/// </summary>
internal static class PortEndpoints
{
    /// <summary>Largest request body forwarded to a sandbox's server.</summary>
    public const long MaxRequestBodyBytes = 10 * 1024 * 1024;

    /// <summary>How long the guest's server may take to answer, and a relay may stay silent.</summary>
    private static readonly TimeSpan _activityTimeout = TimeSpan.FromSeconds(100);

    private static readonly HttpRequestOptionsKey<Func<CancellationToken, ValueTask<Stream>>> _opener = new("sandboxvm.port");

    // One handler for every sandbox. No connection is reused: the handler cannot see that a relayed one was
    // closed by the guest (there is no socket to poll), so a reused one would fail the next request (a 502
    // the tests met with python's HTTP/1.0 server); each request is one agent stream.
    private static readonly HttpMessageInvoker _invoker = new(new SocketsHttpHandler
    {
        UseProxy = false,
        UseCookies = false,
        AllowAutoRedirect = false,
        AutomaticDecompression = System.Net.DecompressionMethods.None,
        PooledConnectionLifetime = TimeSpan.Zero,
        ConnectTimeout = TimeSpan.FromSeconds(15),
        ActivityHeadersPropagator = null,
        ConnectCallback = (context, cancellationToken) =>
            context.InitialRequestMessage.Options.TryGetValue(_opener, out var open)
                ? open(cancellationToken)
                : throw new InvalidOperationException("a port request without its sandbox"),
    });

    public static void AddServices(IServiceCollection services)
    {
        services.AddHttpForwarder();
        services.AddSingleton<PortShares>();
    }

    public static void Map(IEndpointRouteBuilder app)
    {
        var g = app.MapGroup("/v1/sandboxes/{id}/ports").AddEndpointFilter(SandboxEndpoints.OwnerOnlyAsync);
        g.Map("/{port}/{**path}", ProxyAsync);
        PortShares.Map(app);
    }

    private static async Task ProxyAsync(string id, string port, string? path, HttpContext context, SessionManager sessions, IHttpForwarder forwarder)
    {
        await SandboxEndpoints.Handle(context, async () =>
        {
            if (!int.TryParse(port, System.Globalization.NumberStyles.None, System.Globalization.CultureInfo.InvariantCulture, out int number))
            {
                throw new RunRequestException(ProblemCodes.InvalidPort, "port", $"'{port}' is not a port number");
            }
            await ForwardAsync(context, id, number, path, sessions, forwarder);
            return Results.Empty;
        }).ExecuteAsync(context);
    }

    /// <summary>Forwards the request to <paramref name="port"/> in sandbox <paramref name="id"/>, at <paramref name="path"/> with the request's query.</summary>
    internal static async Task ForwardAsync(HttpContext context, string id, int port, string? path, SessionManager sessions, IHttpForwarder forwarder)
    {
        if (context.Features.Get<IHttpMaxRequestBodySizeFeature>() is { IsReadOnly: false } bodySize)
        {
            bodySize.MaxRequestBodySize = MaxRequestBodyBytes;
        }
        await sessions.UsePortAsync(id, port, async agent =>
        {
            var transformer = new PortTransformer(agent, port, "/" + (path ?? ""));
            var error = await forwarder.SendAsync(context, $"http://port-{port}.{id}.sandbox.invalid/", _invoker,
                new ForwarderRequestConfig { ActivityTimeout = _activityTimeout }, transformer);
            if (error != ForwarderError.None && !context.Response.HasStarted)
            {
                throw Problem(context.Features.Get<IForwarderErrorFeature>()?.Exception, port);
            }
            return true;
        });
    }

    private static RunRequestException Problem(Exception? error, int port)
    {
        for (var e = error; e is not null; e = e.InnerException)
        {
            switch (e)
            {
                case AgentException { Code: ErrorCodes.PortClosed } closed:
                    return new RunRequestException(ProblemCodes.PortClosed, "port", closed.Message, RefusalKind.SandboxFailed);
                case AgentException { Code: ErrorCodes.TooManyStreams } busy:
                    return new RunRequestException(ProblemCodes.Overloaded, null, busy.Message, RefusalKind.Busy);
                case RunRequestException problem:
                    return problem;
            }
        }
        return new RunRequestException(ProblemCodes.PortClosed, "port",
            $"the server on port {port} in the sandbox did not answer: {error?.Message ?? "no response"}", RefusalKind.SandboxFailed);
    }

    /// <summary>Where the request goes (the path after the port, the query), what it carries (never the caller's API key), how it connects.</summary>
    private sealed class PortTransformer(AgentClient agent, int port, string path) : HttpTransformer
    {
        public override async ValueTask TransformRequestAsync(HttpContext httpContext, HttpRequestMessage proxyRequest, string destinationPrefix,
            CancellationToken cancellationToken)
        {
            await base.TransformRequestAsync(httpContext, proxyRequest, destinationPrefix, cancellationToken);
            proxyRequest.RequestUri = RequestUtilities.MakeDestinationAddress(destinationPrefix.TrimEnd('/'), new PathString(path), httpContext.Request.QueryString);
            // The key is the caller's to the API, not the sandbox's to see.
            proxyRequest.Headers.Authorization = null;
            proxyRequest.Headers.Host = $"127.0.0.1:{port}";
            if (!httpContext.WebSockets.IsWebSocketRequest)
            {
                proxyRequest.Headers.ConnectionClose = true;
            }
            proxyRequest.Options.Set(_opener, OpenAsync);
        }

        public override async ValueTask<bool> TransformResponseAsync(HttpContext httpContext, HttpResponseMessage? proxyResponse,
            CancellationToken cancellationToken)
        {
            bool go = await base.TransformResponseAsync(httpContext, proxyResponse, cancellationToken);
            // Cookies of a sandbox's app would be set on the API's origin.
            httpContext.Response.Headers.Remove("Set-Cookie");
            return go;
        }

        /// <summary>A connection to the port: one agent stream, relayed to an in-memory duplex the HTTP client speaks on.</summary>
        private async ValueTask<Stream> OpenAsync(CancellationToken cancellationToken)
        {
            var stream = await agent.OpenPortAsync(port, cancellationToken);
            var toGuest = new Pipe();
            var fromGuest = new Pipe();
            var relayEnd = new DuplexStream(toGuest.Reader.AsStream(), fromGuest.Writer.AsStream());
            _ = Task.Run(async () =>
            {
                try
                {
                    await stream.RelayAsync(relayEnd, () => fromGuest.Writer.Complete(), ReadOnlyMemory<byte>.Empty, CancellationToken.None);
                }
                catch (Exception)
                {
                    // The client side sees the end of its stream; nothing else to tell.
                }
                finally
                {
                    agent.ClosePort(stream);
                    await relayEnd.DisposeAsync();
                }
            }, CancellationToken.None);
            return new DuplexStream(fromGuest.Reader.AsStream(), toGuest.Writer.AsStream());
        }
    }

    /// <summary>Reads from one stream, writes to another: one end of an in-memory connection.</summary>
    private sealed class DuplexStream(Stream input, Stream output) : Stream
    {
        public override bool CanRead => true;
        public override bool CanWrite => true;
        public override bool CanSeek => false;
        public override long Length => throw new NotSupportedException();
        public override long Position { get => throw new NotSupportedException(); set => throw new NotSupportedException(); }

        public override ValueTask<int> ReadAsync(Memory<byte> buffer, CancellationToken cancellationToken = default) => input.ReadAsync(buffer, cancellationToken);
        public override Task<int> ReadAsync(byte[] buffer, int offset, int count, CancellationToken cancellationToken) => input.ReadAsync(buffer, offset, count, cancellationToken);
        public override int Read(byte[] buffer, int offset, int count) => input.Read(buffer, offset, count);
        public override ValueTask WriteAsync(ReadOnlyMemory<byte> buffer, CancellationToken cancellationToken = default) => output.WriteAsync(buffer, cancellationToken);
        public override Task WriteAsync(byte[] buffer, int offset, int count, CancellationToken cancellationToken) => output.WriteAsync(buffer, offset, count, cancellationToken);
        public override void Write(byte[] buffer, int offset, int count) => output.Write(buffer, offset, count);
        public override Task FlushAsync(CancellationToken cancellationToken) => output.FlushAsync(cancellationToken);
        public override void Flush() => output.Flush();
        public override long Seek(long offset, SeekOrigin origin) => throw new NotSupportedException();
        public override void SetLength(long value) => throw new NotSupportedException();

        protected override void Dispose(bool disposing)
        {
            if (disposing)
            {
                input.Dispose();
                output.Dispose();
            }
            base.Dispose(disposing);
        }

        public override async ValueTask DisposeAsync()
        {
            await input.DisposeAsync();
            await output.DisposeAsync();
            await base.DisposeAsync();
        }
    }
}
