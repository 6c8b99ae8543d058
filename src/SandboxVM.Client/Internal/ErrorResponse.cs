using System.Net;
using System.Text;
using System.Text.Json;

namespace SandboxVM.Client.Internal;

/// <summary>Turns a non-success HTTP response into the matching typed exception.</summary>
internal static class ErrorResponse
{
    private const int MaxSnippetChars = 300;

    public static async Task<SandboxApiException> ToExceptionAsync(HttpResponseMessage response, CancellationToken cancellationToken)
    {
        var body = await response.Content.ReadAsStringAsync(cancellationToken).ConfigureAwait(false);
        var problem = TryParseProblem(body);
        var status = response.StatusCode;

        var title = problem?.Title ?? (string.IsNullOrEmpty(response.ReasonPhrase) ? status.ToString() : response.ReasonPhrase);
        var detail = problem?.Detail ?? problem?.Error ?? problem?.Message;
        if (detail is null && problem?.Title is null)
        {
            detail = Snippet(body);
        }

        var code = problem?.Code;
        var field = problem?.Field;
        switch (code)
        {
            case "sandbox_not_found":
                return new SandboxNotFoundException(status, title, detail, code, field);
            case "file_not_found":
                return new SandboxFileNotFoundException(status, title, detail, code, field);
            case "too_many_sandboxes":
                return new TooManySandboxesException(status, title, detail, code, field, RetryAfter(response));
            case "file_too_large":
                return new FileTooLargeException(status, title, detail, code, field);
            case "invalid_path" or "not_regular_file":
                return new SandboxInvalidPathException(status, title, detail, code, field);
            case "permission_denied":
                // 403 about a file in the sandbox, not about the API key.
                return new SandboxBadRequestException(status, title, detail, code, field);
            case "command_not_found" or "stdin_closed":
                // About one command: the sandbox is there, and trying again will not help.
                return new SandboxApiException(status, title, detail, code, field);
            case "egress_denied":
                return new EgressDeniedException(status, title, detail, code, field, problem?.Reason);
            case "search_not_configured":
                return new SearchNotConfiguredException(status, title, detail, code, field, RetryAfter(response));
            case "fetch_failed" or "fetch_too_large" or "search_failed" or "upstream_timeout" or "tool_timeout" or "tool_failed" or "sandbox_error":
                return new ToolFailedException(status, title, detail, code, field);
        }

        return status switch
        {
            HttpStatusCode.BadRequest or HttpStatusCode.RequestEntityTooLarge or HttpStatusCode.UnprocessableEntity =>
                new SandboxBadRequestException(status, title, detail, code, field),
            HttpStatusCode.Unauthorized or HttpStatusCode.Forbidden =>
                new SandboxAuthException(status, title, detail, code, field),
            HttpStatusCode.NotFound =>
                new SandboxNotFoundException(status, title, detail, code, field),
            HttpStatusCode.Conflict or HttpStatusCode.TooManyRequests or HttpStatusCode.ServiceUnavailable =>
                new SandboxUnavailableException(status, title, detail, code, field, RetryAfter(response)),
            _ => new SandboxApiException(status, title, detail, code, field),
        };
    }

    private static ProblemDetails? TryParseProblem(string body)
    {
        if (!body.AsSpan().TrimStart().StartsWith("{"))
        {
            return null;
        }

        try
        {
            return JsonSerializer.Deserialize(body, SandboxJson.Default.ProblemDetails);
        }
        catch (JsonException)
        {
            return null;
        }
    }

    private static TimeSpan? RetryAfter(HttpResponseMessage response)
    {
        var header = response.Headers.RetryAfter;
        if (header?.Delta is { } delta)
        {
            return delta;
        }

        if (header?.Date is { } date)
        {
            var wait = date - DateTimeOffset.UtcNow;
            return wait > TimeSpan.Zero ? wait : TimeSpan.Zero;
        }

        return null;
    }

    /// <summary>The start of a non-JSON body (an HTML error page, plain text) on one line, or null when empty.</summary>
    private static string? Snippet(string body)
    {
        var text = new StringBuilder(Math.Min(body.Length, MaxSnippetChars));
        var lastWasSpace = true;
        foreach (var c in body)
        {
            if (text.Length >= MaxSnippetChars)
            {
                return text.ToString().TrimEnd() + "…";
            }

            if (char.IsWhiteSpace(c))
            {
                if (!lastWasSpace)
                {
                    text.Append(' ');
                }

                lastWasSpace = true;
            }
            else
            {
                text.Append(c);
                lastWasSpace = false;
            }
        }

        var result = text.ToString().TrimEnd();
        return result.Length == 0 ? null : result;
    }
}
