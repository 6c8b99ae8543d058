using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Http.HttpResults;
using Microsoft.AspNetCore.Mvc;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Options;

namespace SandboxVM.Server;

/// <summary>
/// RFC 9457 problem+json with the stable <c>code</c> and the offending <c>field</c>, written through
/// ASP.NET Core's <see cref="IProblemDetailsService"/> (<see cref="ProblemHttpResult"/>).
/// </summary>
internal static class Problems
{
    /// <summary>Members every problem has; an extra member of the same name is ignored.</summary>
    private static readonly HashSet<string> s_standard = ["type", "title", "status", "detail", "instance", "code", "field"];

    /// <summary>The problem service, with <see cref="ProblemJsonWriter"/> ahead of the framework's writer.</summary>
    public static void AddServices(IServiceCollection services)
    {
        services.AddSingleton<IProblemDetailsWriter, ProblemJsonWriter>();
        services.AddProblemDetails();
    }

    /// <summary>
    /// Writes every problem as it is, with the API's JSON options. The framework's writer adds a
    /// <c>traceId</c> member (so two answers to the same refusal differ) and writes nothing for a client
    /// whose Accept names no JSON type (a streaming run's <c>text/event-stream</c>).
    /// </summary>
    private sealed class ProblemJsonWriter(IOptions<Microsoft.AspNetCore.Http.Json.JsonOptions> json) : IProblemDetailsWriter
    {
        public bool CanWrite(ProblemDetailsContext context) => true;

        public ValueTask WriteAsync(ProblemDetailsContext context) =>
            new(context.HttpContext.Response.WriteAsJsonAsync(context.ProblemDetails, json.Value.SerializerOptions.GetTypeInfo(typeof(ProblemDetails)),
                "application/problem+json", context.HttpContext.RequestAborted));
    }

    /// <summary>Answers a refused request with its problem (and Retry-After when it has one).</summary>
    public static Task Write(HttpContext context, SandboxVM.Core.Runs.RunRequestException e) =>
        Write(context, ProblemStatus.Of(e.Kind), e.Code, e.Field, e.Message, e.RetryAfter);

    /// <summary>
    /// Writes the problem. <paramref name="extra"/> adds members of its own (e.g. <c>reason</c>); it
    /// cannot replace the standard ones.
    /// </summary>
    public static Task Write(HttpContext context, int status, string code, string? field, string detail, TimeSpan? retryAfter = null,
        IReadOnlyDictionary<string, object?>? extra = null) =>
        Result(status, code, field, detail, retryAfter, extra).ExecuteAsync(context);

    /// <summary>The problem as an endpoint result.</summary>
    public static IResult Result(int status, string code, string? field, string detail, TimeSpan? retryAfter = null,
        IReadOnlyDictionary<string, object?>? extra = null)
    {
        var problem = Create(status, code, field, detail, extra);
        return retryAfter is { } r ? new WithRetryAfter(TypedResults.Problem(problem), r) : TypedResults.Problem(problem);
    }

    /// <summary>The problem's body.</summary>
    public static ProblemDetails Create(int status, string code, string? field, string detail, IReadOnlyDictionary<string, object?>? extra = null)
    {
        var problem = new ProblemDetails
        {
            Type = "urn:sandboxvm:problem:" + code,
            Title = Title(status),
            Status = status,
            Detail = detail,
        };
        problem.Extensions["code"] = code;
        problem.Extensions["field"] = field;
        foreach (var (name, value) in extra ?? new Dictionary<string, object?>())
        {
            if (!s_standard.Contains(name))
            {
                problem.Extensions.TryAdd(name, value);
            }
        }
        return problem;
    }

    private sealed class WithRetryAfter(IResult problem, TimeSpan retryAfter) : IResult
    {
        public Task ExecuteAsync(HttpContext httpContext)
        {
            httpContext.Response.Headers.RetryAfter = ((int)Math.Ceiling(retryAfter.TotalSeconds)).ToString();
            return problem.ExecuteAsync(httpContext);
        }
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

/// <summary>The one place a refusal of Core becomes an HTTP status.</summary>
internal static class ProblemStatus
{
    public static int Of(SandboxVM.Core.Runs.RefusalKind kind) => kind switch
    {
        SandboxVM.Core.Runs.RefusalKind.Invalid => StatusCodes.Status400BadRequest,
        SandboxVM.Core.Runs.RefusalKind.Forbidden => StatusCodes.Status403Forbidden,
        SandboxVM.Core.Runs.RefusalKind.NotFound => StatusCodes.Status404NotFound,
        SandboxVM.Core.Runs.RefusalKind.Conflict => StatusCodes.Status409Conflict,
        SandboxVM.Core.Runs.RefusalKind.TooLarge => StatusCodes.Status413PayloadTooLarge,
        SandboxVM.Core.Runs.RefusalKind.Busy => StatusCodes.Status429TooManyRequests,
        SandboxVM.Core.Runs.RefusalKind.SandboxFailed => StatusCodes.Status502BadGateway,
        SandboxVM.Core.Runs.RefusalKind.Unavailable => StatusCodes.Status503ServiceUnavailable,
        SandboxVM.Core.Runs.RefusalKind.Gone => StatusCodes.Status410Gone,
        _ => StatusCodes.Status500InternalServerError,
    };
}
