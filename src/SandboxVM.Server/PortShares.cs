using System.Buffers.Text;
using System.Globalization;
using System.Security.Cryptography;
using System.Text;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Http.Json;
using Microsoft.AspNetCore.Routing;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Options;
using SandboxVM.Core.Runs;
using SandboxVM.Core.Sessions;
using Yarp.ReverseProxy.Forwarder;

namespace SandboxVM.Server;

/// <summary>
/// Share links of a sandbox's port: <c>POST /v1/sandboxes/{id}/shares {"port", "expires_in_s"?}</c> gives
/// <c>/shared/{token}/</c>, which serves that port of that sandbox to anyone holding the link, without an API
/// key, until it expires or the sandbox ends. The token names the sandbox, the port and the expiry and is
/// signed (HMAC-SHA256) with a key this server draws at start, so it cannot be changed or made up, and no
/// link outlives a server restart (in a cluster every node signs with one key derived from the cluster's
/// secret, so a link works through any node). See docs/API.md "Ports".
/// </summary>
internal sealed class PortShares(TimeProvider time, byte[] key)
{
    public PortShares(TimeProvider time)
        : this(time, RandomNumberGenerator.GetBytes(32))
    {
    }

    public const string Path = "/shared";

    /// <summary>Lifetime of a link when the request gives none.</summary>
    public const double DefaultExpiresInS = 3600;

    /// <summary>Longest lifetime of a link.</summary>
    public const double MaxExpiresInS = 7 * 24 * 3600;

    private readonly byte[] _key = key.Length >= 32 ? key : throw new ArgumentException("a share key has at least 32 bytes", nameof(key));

    /// <summary>A link's token for <paramref name="port"/> of sandbox <paramref name="id"/> until <paramref name="expires"/>.</summary>
    public string Mint(string id, int port, DateTimeOffset expires)
    {
        byte[] payload = Encoding.UTF8.GetBytes(string.Create(CultureInfo.InvariantCulture, $"{id}:{port}:{expires.ToUnixTimeSeconds()}"));
        return Base64Url.EncodeToString(payload) + "." + Base64Url.EncodeToString(HMACSHA256.HashData(_key, payload));
    }

    /// <summary>The sandbox and port of a valid, unexpired token; else throws the problem a holder of the link sees.</summary>
    public (string Id, int Port) Check(string token)
    {
        int dot = token.IndexOf('.', StringComparison.Ordinal);
        byte[]? payload = null;
        byte[]? signature = null;
        if (dot > 0 && token.Length <= 1024)
        {
            try
            {
                payload = Base64Url.DecodeFromChars(token.AsSpan(0, dot));
                signature = Base64Url.DecodeFromChars(token.AsSpan(dot + 1));
            }
            catch (FormatException)
            {
                payload = null;
            }
        }
        if (payload is null || signature is null || !CryptographicOperations.FixedTimeEquals(signature, HMACSHA256.HashData(_key, payload)))
        {
            throw new RunRequestException(ProblemCodes.ShareNotFound, null, "no such share link (changed, made up, or from before a server restart)", RefusalKind.NotFound);
        }
        string[] parts = Encoding.UTF8.GetString(payload).Split(':');
        var expires = DateTimeOffset.FromUnixTimeSeconds(long.Parse(parts[2], CultureInfo.InvariantCulture));
        if (time.GetUtcNow() >= expires)
        {
            throw new RunRequestException(ProblemCodes.ShareExpired, null, $"this share link expired at {expires:u}", RefusalKind.Gone);
        }
        return (parts[0], int.Parse(parts[1], CultureInfo.InvariantCulture));
    }

    public static void Map(IEndpointRouteBuilder app)
    {
        app.MapGroup("/v1/sandboxes/{id}").AddEndpointFilter(SandboxEndpoints.OwnerOnlyAsync).MapPost("/shares", CreateAsync);
        // No key: the link is the credential. What it reaches is the one port of the one sandbox it names.
        app.Map(Path + "/{token}/{**path}", (string token, string? path, HttpContext context, SessionManager sessions, IHttpForwarder forwarder, PortShares shares) =>
            SandboxEndpoints.Handle(context, async () =>
            {
                var (id, port) = shares.Check(token);
                await PortEndpoints.ForwardAsync(context, id, port, path, sessions, forwarder);
                return Results.Empty;
            }));
    }

    private static async Task CreateAsync(string id, HttpContext context, PortShares shares, TimeProvider time, IOptions<JsonOptions> json)
    {
        var body = await Endpoints.ReadJsonAsync<ShareBody>(context, json.Value.SerializerOptions, "share request");
        if (body is null)
        {
            return;
        }
        // The owner filter has found the sandbox (404 before this otherwise).
        await SandboxEndpoints.Handle(context, () =>
        {
            if (body.Port is not int port || port is < 1 or > 65535)
            {
                throw new RunRequestException(ProblemCodes.InvalidPort, "port", "field 'port' must be a port number 1..65535");
            }
            double seconds = body.ExpiresInS ?? DefaultExpiresInS;
            if (!(seconds >= 1 && seconds <= MaxExpiresInS))
            {
                throw new RunRequestException(ProblemCodes.InvalidExpiry, "expires_in_s", $"field 'expires_in_s' must be 1..{MaxExpiresInS:0} seconds");
            }
            var expires = time.GetUtcNow().AddSeconds(seconds);
            string url = $"{Path}/{shares.Mint(id, port, expires)}/";
            return Task.FromResult(Results.Json(new ShareInfo(url, port, expires), json.Value.SerializerOptions, statusCode: 201));
        }).ExecuteAsync(context);
    }

    internal sealed class ShareBody
    {
        public int? Port { get; set; }
        public double? ExpiresInS { get; set; }
    }

    /// <summary>A share link: <c>url</c> is relative to the server's origin.</summary>
    internal sealed record ShareInfo(string Url, int Port, DateTimeOffset ExpiresAt);
}
