using System.Security.Cryptography;
using System.Text;
using Microsoft.AspNetCore.Http;
using SandboxVM.Core.Runs;

namespace SandboxVM.Server;

internal sealed record ApiKeyOptions(string? Key);

/// <summary>When an API key is configured, every /v1 call and /metrics must carry it as a bearer token.</summary>
internal sealed class ApiKeyMiddleware(RequestDelegate next, ApiKeyOptions options)
{
    public Task InvokeAsync(HttpContext context)
    {
        if (options.Key is not { Length: > 0 } key || (!context.Request.Path.StartsWithSegments("/v1") && !context.Request.Path.StartsWithSegments(MetricsExporter.Path)))
        {
            return next(context);
        }
        string header = context.Request.Headers.Authorization.ToString();
        string presented = header.StartsWith("Bearer ", StringComparison.Ordinal) ? header["Bearer ".Length..] : "";
        if (CryptographicOperations.FixedTimeEquals(Encoding.UTF8.GetBytes(presented), Encoding.UTF8.GetBytes(key)))
        {
            return next(context);
        }
        return Problems.Write(context, 401, ProblemCodes.Unauthorized, null, "a valid API key is required (Authorization: Bearer <key>)");
    }
}
