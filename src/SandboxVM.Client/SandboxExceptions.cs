using System.Net;

namespace SandboxVM.Client;

/// <summary>Base of every error the SDK throws for a failed call to SandboxVM.</summary>
public class SandboxException : Exception
{
    /// <summary>Creates the exception with a message and an optional cause.</summary>
    /// <param name="message">What went wrong.</param>
    /// <param name="innerException">The underlying error, if any.</param>
    public SandboxException(string message, Exception? innerException = null)
        : base(message, innerException)
    {
    }
}

/// <summary>
/// The server answered with an error (RFC 7807 problem details, or any other non-success response).
/// Catch a subclass for the common cases, or this to handle every API error.
/// </summary>
public class SandboxApiException : SandboxException
{
    internal SandboxApiException(HttpStatusCode statusCode, string? title, string? detail, string? code, string? field, Exception? innerException = null)
        : base(FormatMessage(statusCode, title, detail, code, field), innerException)
    {
        StatusCode = statusCode;
        Title = title;
        Detail = detail;
        Code = code;
        Field = field;
    }

    /// <summary>HTTP status of the response.</summary>
    public HttpStatusCode StatusCode { get; }

    /// <summary>Stable machine-readable error code, e.g. <c>unknown_template</c>, <c>empty_code</c>; null when the server sent none.</summary>
    public string? Code { get; }

    /// <summary>The request field the error is about, e.g. <c>template</c>; null when not about one field.</summary>
    public string? Field { get; }

    /// <summary>Human-readable explanation of this occurrence.</summary>
    public string? Detail { get; }

    /// <summary>Short summary of the kind of error.</summary>
    public string? Title { get; }

    private static string FormatMessage(HttpStatusCode statusCode, string? title, string? detail, string? code, string? field)
    {
        var head = string.IsNullOrWhiteSpace(title) ? $"SandboxVM request failed" : title.TrimEnd('.');
        var message = string.IsNullOrWhiteSpace(detail) ? head : $"{head}: {detail}";
        var facts = $"HTTP {(int)statusCode}";
        if (!string.IsNullOrEmpty(code))
        {
            facts += $", code {code}";
        }

        if (!string.IsNullOrEmpty(field))
        {
            facts += $", field {field}";
        }

        return $"{message} ({facts})";
    }
}

/// <summary>
/// The request was rejected as invalid (HTTP 400, 413, 422): empty or too large code, timeout out of range, malformed JSON…
/// Also a file of the sandbox it may not touch (HTTP 403 <c>permission_denied</c>).
/// Subclasses: <see cref="FileTooLargeException"/>, <see cref="SandboxInvalidPathException"/>.
/// </summary>
public class SandboxBadRequestException : SandboxApiException
{
    internal SandboxBadRequestException(HttpStatusCode statusCode, string? title, string? detail, string? code, string? field)
        : base(statusCode, title, detail, code, field)
    {
    }
}

/// <summary>
/// What was asked for does not exist (HTTP 404): a sandbox id the server does not know or that has ended
/// (<c>sandbox_not_found</c>), or a template name it does not know (<c>unknown_template</c>).
/// A missing file inside a sandbox is a <see cref="SandboxFileNotFoundException"/> instead.
/// </summary>
public sealed class SandboxNotFoundException : SandboxApiException
{
    internal SandboxNotFoundException(HttpStatusCode statusCode, string? title, string? detail, string? code, string? field)
        : base(statusCode, title, detail, code, field)
    {
    }
}

/// <summary>The API key is missing, wrong or not allowed to do this (HTTP 401, 403); see <see cref="SandboxClientOptions.ApiKey"/>.</summary>
public sealed class SandboxAuthException : SandboxApiException
{
    internal SandboxAuthException(HttpStatusCode statusCode, string? title, string? detail, string? code, string? field)
        : base(statusCode, title, detail, code, field)
    {
    }
}

/// <summary>
/// The server cannot serve the request right now (HTTP 409, 429, 503): template unavailable or not built,
/// too many requests (<c>overloaded</c>), shutting down. Retrying later may succeed; <see cref="RetryAfter"/> says when,
/// if the server said. Subclass: <see cref="TooManySandboxesException"/>.
/// </summary>
public class SandboxUnavailableException : SandboxApiException
{
    internal SandboxUnavailableException(HttpStatusCode statusCode, string? title, string? detail, string? code, string? field, TimeSpan? retryAfter)
        : base(statusCode, title, detail, code, field)
    {
        RetryAfter = retryAfter;
    }

    /// <summary>How long to wait before retrying, from the <c>Retry-After</c> header; null when absent.</summary>
    public TimeSpan? RetryAfter { get; }
}

/// <summary>
/// The server already runs as many sandboxes as it allows (HTTP 429, <c>too_many_sandboxes</c>).
/// Kill a sandbox you no longer need, or retry after <see cref="SandboxUnavailableException.RetryAfter"/>.
/// </summary>
public sealed class TooManySandboxesException : SandboxUnavailableException
{
    internal TooManySandboxesException(HttpStatusCode statusCode, string? title, string? detail, string? code, string? field, TimeSpan? retryAfter)
        : base(statusCode, title, detail, code, field, retryAfter)
    {
    }
}

/// <summary>An upload is larger than the server accepts (HTTP 413, <c>file_too_large</c>; 100 MB by default).</summary>
public sealed class FileTooLargeException : SandboxBadRequestException
{
    internal FileTooLargeException(HttpStatusCode statusCode, string? title, string? detail, string? code, string? field)
        : base(statusCode, title, detail, code, field)
    {
    }
}

/// <summary>A path given for a file operation in a sandbox is not acceptable (HTTP 400, <c>invalid_path</c>), or names something other than a regular file (<c>not_regular_file</c>).</summary>
public sealed class SandboxInvalidPathException : SandboxBadRequestException
{
    internal SandboxInvalidPathException(HttpStatusCode statusCode, string? title, string? detail, string? code, string? field)
        : base(statusCode, title, detail, code, field)
    {
    }
}

/// <summary>
/// No file or directory at the given path inside the sandbox (HTTP 404, <c>file_not_found</c>); the sandbox itself is fine.
/// Not a <see cref="SandboxNotFoundException"/>, which means the sandbox (or template) is unknown.
/// </summary>
public sealed class SandboxFileNotFoundException : SandboxApiException
{
    internal SandboxFileNotFoundException(HttpStatusCode statusCode, string? title, string? detail, string? code, string? field)
        : base(statusCode, title, detail, code, field)
    {
    }
}

/// <summary>
/// The sandbox may not connect to the host a tool was asked to reach (HTTP 403, <c>egress_denied</c>): the server's
/// egress policy refuses it, e.g. a private or loopback address. Not an API key problem.
/// </summary>
public sealed class EgressDeniedException : SandboxApiException
{
    internal EgressDeniedException(HttpStatusCode statusCode, string? title, string? detail, string? code, string? field, string? reason)
        : base(statusCode, title, detail, code, field)
    {
        Reason = reason;
    }

    /// <summary>
    /// The egress policy's reason code: <c>private_address</c>, <c>denied_by_rule</c>, <c>metadata_endpoint</c>,
    /// <c>port_not_allowed</c>, <c>not_in_allow_list</c>, <c>invalid_request</c>…; null when the server sent none.
    /// </summary>
    public string? Reason { get; }
}

/// <summary>The server has no web search provider configured (HTTP 503, <c>search_not_configured</c>); retrying will not help until it has.</summary>
public sealed class SearchNotConfiguredException : SandboxUnavailableException
{
    internal SearchNotConfiguredException(HttpStatusCode statusCode, string? title, string? detail, string? code, string? field, TimeSpan? retryAfter)
        : base(statusCode, title, detail, code, field, retryAfter)
    {
    }
}

/// <summary>
/// A tool call failed on the way out or in the sandbox (HTTP 502, 504): the site could not be fetched (<c>fetch_failed</c>),
/// sent more than the tool reads (<c>fetch_too_large</c>), the search service failed (<c>search_failed</c>), the remote side
/// (<c>upstream_timeout</c>) or the tool's run (<c>tool_timeout</c>) took too long, the tool failed (<c>tool_failed</c>) or its
/// sandbox did (<c>sandbox_error</c>). <see cref="SandboxApiException.Code"/> says which.
/// </summary>
public sealed class ToolFailedException : SandboxApiException
{
    internal ToolFailedException(HttpStatusCode statusCode, string? title, string? detail, string? code, string? field)
        : base(statusCode, title, detail, code, field)
    {
    }

    /// <summary>True when the call failed for lack of time (<c>upstream_timeout</c>, <c>tool_timeout</c>): a retry may succeed.</summary>
    public bool IsTimeout => Code is "upstream_timeout" or "tool_timeout";
}

/// <summary>
/// The server could not be reached or did not answer in time (connection refused, DNS failure, reset, HTTP timeout).
/// The message names the base URL; <see cref="Exception.InnerException"/> holds the transport error.
/// </summary>
public sealed class SandboxConnectionException : SandboxException
{
    internal SandboxConnectionException(string message, Exception? innerException = null)
        : base(message, innerException)
    {
    }
}
