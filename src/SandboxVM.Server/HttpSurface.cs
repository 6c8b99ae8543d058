using System.Net;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Primitives;
using SandboxVM.Core;
using SandboxVM.Egress;

namespace SandboxVM.Server;

/// <summary>Problem codes of the HTTP layer (the others are <see cref="SandboxVM.Core.Runs.ProblemCodes"/>).</summary>
internal static class HttpProblemCodes
{
    /// <summary>415: a JSON endpoint got a body that is not <c>application/json</c>.</summary>
    public const string UnsupportedMediaType = "unsupported_media_type";
    /// <summary>400: the Host header is not one of the server's names.</summary>
    public const string InvalidHost = "invalid_host";
    /// <summary>403: /metrics and /v1/admin need an admin key.</summary>
    public const string AdminRequired = "admin_required";
    /// <summary>429: the key's runs (or searches) per minute are used up.</summary>
    public const string RateLimited = "rate_limited";
    /// <summary>429: the key has as many runs executing as it may.</summary>
    public const string TooManyRuns = "too_many_runs";
}

/// <summary>
/// The middleware every request passes, in this order: hardening headers on every answer, the Host
/// check, the caller (API key), per-key run limits. Shared by <see cref="ServerApp"/> and the tests.
/// </summary>
internal static class HttpSurface
{
    public static void AddServices(IServiceCollection services, CallerStore callers, AllowedHosts hosts)
    {
        services.AddSingleton(callers);
        services.AddSingleton(hosts);
        services.AddSingleton<SearchBudgets>();
        RunLimits.AddServices(services);
    }

    /// <summary>Everything before the endpoints; <paramref name="app"/>'s exception handler is set here too.</summary>
    public static void Use(WebApplication app)
    {
        app.UseMiddleware<SecurityHeadersMiddleware>();
        app.UseExceptionHandler(new ExceptionHandlerOptions { ExceptionHandler = Endpoints.HandleUnexpectedAsync });
        app.UseMiddleware<HostFilterMiddleware>();
        app.UseMiddleware<CallerMiddleware>();
        app.UseRateLimiter();
    }
}

/// <summary>
/// Headers on every answer that stop a browser from treating it as a page of the API's origin: an
/// artifact that is HTML or SVG written by sandboxed code must never run as script next to the API.
/// </summary>
internal sealed class SecurityHeadersMiddleware(RequestDelegate next)
{
    /// <summary>No resources, no script, a unique origin even if something renders it, no framing.</summary>
    public const string ContentSecurityPolicy = "default-src 'none'; sandbox; frame-ancestors 'none'";

    public Task InvokeAsync(HttpContext context)
    {
        // At the start of the answer: the exception handler clears headers set earlier.
        context.Response.OnStarting(static state =>
        {
            var headers = ((HttpResponse)state).Headers;
            headers.XContentTypeOptions = "nosniff";
            headers.ContentSecurityPolicy = ContentSecurityPolicy;
            headers.XFrameOptions = "DENY";
            headers["Cross-Origin-Resource-Policy"] = "same-origin";
            headers["Referrer-Policy"] = "no-referrer";
            if (StringValues.IsNullOrEmpty(headers.CacheControl))
            {
                headers.CacheControl = "no-store";
            }
            return Task.CompletedTask;
        }, context.Response);
        return next(context);
    }

    /// <summary>
    /// Marks a download as a file to save, never a page to show, under a name made safe for the header:
    /// the last path segment, without quotes, slashes, backslashes or control characters.
    /// </summary>
    public static void SetAttachment(HttpResponse response, string guestPath)
    {
        string name = guestPath[(guestPath.LastIndexOf('/') + 1)..];
        name = string.Concat(name.Select(c => char.IsControl(c) || c is '"' or '\\' or '/' ? '_' : c));
        if (name.Trim('.').Length == 0)
        {
            name = "download";
        }
        var disposition = new Microsoft.Net.Http.Headers.ContentDispositionHeaderValue("attachment");
        // An ASCII filename="..." for old clients and filename*=UTF-8''... with the real name.
        disposition.SetHttpFileName(name);
        response.Headers.ContentDisposition = disposition.ToString();
    }
}

/// <summary>
/// The Host names the server answers to. A foreign Host is a DNS rebinding attempt (a page of another
/// site resolving its name to this server) or a misconfigured client: either way a 400.
/// </summary>
internal sealed class AllowedHosts
{
    private readonly List<StringSegment> _patterns;

    public AllowedHosts(IEnumerable<string> patterns)
    {
        Patterns = [.. patterns.Where(p => p.Length > 0).Distinct(StringComparer.OrdinalIgnoreCase)];
        _patterns = [.. Patterns.Select(p => new StringSegment(p))];
    }

    public IReadOnlyList<string> Patterns { get; }

    public bool Allows(HostString host) => host.HasValue && HostString.MatchesAny(new StringSegment(host.Host), _patterns);

    /// <summary>
    /// The configured names, or by default the loopback names, and when the server listens beyond
    /// loopback also this host's name and every interface address (IPv6 in brackets).
    /// </summary>
    public static AllowedHosts For(SandboxVmOptions options, IReadOnlyList<string> urls)
    {
        if (options.AllowedHosts.Count > 0)
        {
            return new AllowedHosts(options.AllowedHosts);
        }
        var names = new List<string> { "localhost", "127.0.0.1", "[::1]" };
        foreach (string url in urls)
        {
            string host = Listening.HostOf(url);
            if (host is not ("*" or "+" or "" or "0.0.0.0" or "[::]" or Listening.UnixSocket))
            {
                names.Add(host);
            }
        }
        if (urls.Any(u => !Listening.IsLoopback(u)))
        {
            names.Add(Environment.MachineName);
            names.Add(Dns.GetHostName());
            names.AddRange(HostAddresses.System.Current.Select(a =>
                a.AddressFamily == System.Net.Sockets.AddressFamily.InterNetworkV6 ? $"[{a}]" : a.ToString()));
        }
        return new AllowedHosts(names);
    }
}

internal sealed class HostFilterMiddleware(RequestDelegate next, AllowedHosts hosts)
{
    public Task InvokeAsync(HttpContext context)
    {
        if (hosts.Allows(context.Request.Host))
        {
            return next(context);
        }
        string host = context.Request.Host.Value ?? "";
        host = host.Length > 100 ? host[..100] + "…" : host;
        return Problems.Write(context, 400, HttpProblemCodes.InvalidHost, null,
            $"the Host header '{host}' is not a name of this server; set SandboxVM:AllowedHosts to the names clients use");
    }
}

/// <summary>Where the server listens, and whether that is beyond this machine.</summary>
internal static class Listening
{
    public static IReadOnlyList<string> Urls(string urls) =>
        [.. urls.Split(';', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries)];

    /// <summary>What <see cref="HostOf"/> answers for a Unix socket, which has no host.</summary>
    public const string UnixSocket = "unix:";

    /// <summary>The host part of a listen URL as Kestrel reads it (<c>*</c>, <c>[::]</c>, a name, an address).</summary>
    public static string HostOf(string url)
    {
        var address = BindingAddress.Parse(url);
        return address.IsUnixPipe ? UnixSocket : address.Host;
    }

    /// <summary>True for <c>localhost</c>, a loopback address and a Unix socket: only this machine can connect.</summary>
    public static bool IsLoopback(string url)
    {
        var address = BindingAddress.Parse(url);
        if (address.IsUnixPipe || address.Host.Equals("localhost", StringComparison.OrdinalIgnoreCase))
        {
            return true;
        }
        return IPAddress.TryParse(address.Host.Trim('[', ']'), out var ip) && IPAddress.IsLoopback(ip);
    }

    /// <summary>
    /// Refuses to listen beyond loopback when nobody's key is checked, unless the operator said so; the
    /// message says what to do instead.
    /// </summary>
    public static void CheckAuth(IReadOnlyList<string> urls, CallerStore callers, SandboxVmOptions options)
    {
        var open = urls.Where(u => !IsLoopback(u)).ToList();
        if (open.Count == 0 || callers.KeysRequired || options.InsecureNoAuth)
        {
            return;
        }
        throw new InvalidOperationException(
            $"refusing to listen on {string.Join(", ", open)} without API keys: anyone who can reach it could run code and use every sandbox. " +
            "Configure keys (SANDBOXVM_API_KEYS_FILE with entries from `sandboxvm keys new`, or SANDBOXVM_API_KEY), " +
            $"listen on 127.0.0.1 (the default, {ServerApp.DefaultUrl}), or on a trusted network pass --insecure-no-auth (SandboxVM__InsecureNoAuth=true).");
    }
}
