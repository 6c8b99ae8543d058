using System.Text.Json;
using Microsoft.AspNetCore.Http;

namespace SandboxVM.Server;

/// <summary>RFC 7807 problem+json with the stable <c>code</c> and the offending <c>field</c>.</summary>
internal static class Problems
{
    /// <summary>Answers a refused request with its problem (and Retry-After when it has one).</summary>
    public static Task Write(HttpContext context, SandboxVM.Core.Runs.RunRequestException e) =>
        Write(context, e.Status, e.Code, e.Field, e.Message, e.RetryAfter);

    /// <summary>
    /// Writes the problem. <paramref name="extra"/> adds members of its own (e.g. <c>reason</c>); it
    /// cannot replace the standard ones.
    /// </summary>
    public static async Task Write(HttpContext context, int status, string code, string? field, string detail, TimeSpan? retryAfter = null,
        IReadOnlyDictionary<string, object?>? extra = null)
    {
        context.Response.StatusCode = status;
        context.Response.ContentType = "application/problem+json";
        if (retryAfter is { } r)
        {
            context.Response.Headers.RetryAfter = ((int)Math.Ceiling(r.TotalSeconds)).ToString();
        }
        var body = new Dictionary<string, object?>
        {
            ["type"] = "urn:sandboxvm:problem:" + code,
            ["title"] = Title(status),
            ["status"] = status,
            ["detail"] = detail,
            ["code"] = code,
            ["field"] = field,
        };
        foreach (var (name, value) in extra ?? new Dictionary<string, object?>())
        {
            body.TryAdd(name, value);
        }
        await JsonSerializer.SerializeAsync(context.Response.Body, body, cancellationToken: context.RequestAborted);
    }

    private static string Title(int status) => status switch
    {
        400 => "Bad request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not found",
        409 => "Conflict",
        413 => "Payload too large",
        415 => "Unsupported media type",
        429 => "Too many requests",
        502 => "Bad gateway",
        503 => "Service unavailable",
        504 => "Gateway timeout",
        _ => "Internal error",
    };
}
