using System.Buffers.Binary;
using System.Text.Json;
using System.Text.Json.Nodes;
using Microsoft.AspNetCore.Http;
using SandboxVM.Core.Runs;

namespace SandboxVM.Server.E2b;

/// <summary>An answer of a Connect call that is an error: its Connect code (not_found, invalid_argument, ...) and message.</summary>
internal sealed class ConnectException(string code, string message) : Exception(message)
{
    public string Code { get; } = code;

    public static ConnectException From(RunRequestException e) => new(e.Kind switch
    {
        RefusalKind.Invalid => "invalid_argument",
        RefusalKind.Forbidden => "permission_denied",
        RefusalKind.NotFound => e.Code == ProblemCodes.SandboxNotFound ? "unavailable" : "not_found",
        RefusalKind.Conflict => "failed_precondition",
        RefusalKind.TooLarge => "resource_exhausted",
        RefusalKind.Busy => "resource_exhausted",
        RefusalKind.Unavailable or RefusalKind.SandboxFailed => "unavailable",
        _ => "internal",
    }, e.Message);
}

/// <summary>
/// The Connect protocol with the JSON codec, by hand (the SDK's transport sets useBinaryFormat: false):
/// unary calls are a JSON body in and out, errors an HTTP status with {"code","message"}; server-streaming
/// calls read one enveloped request and write enveloped messages (1 flag byte, 4 length bytes big-endian,
/// JSON) ending with an end-of-stream envelope (flag 2) that carries the error if there was one.
/// </summary>
internal static class E2bConnect
{
    /// <summary>Requests of envd calls are small (a path, a command line); more is refused.</summary>
    public const int MaxRequestBytes = 1 << 20;

    public static async Task<JsonObject> ReadUnaryAsync(HttpRequest request, CancellationToken ct)
    {
        byte[] body = await ReadBodyAsync(request, MaxRequestBytes, ct);
        return Parse(body.Length == 0 ? "{}"u8.ToArray() : body);
    }

    public static async Task<JsonObject> ReadEnvelopedAsync(HttpRequest request, CancellationToken ct)
    {
        byte[] body = await ReadBodyAsync(request, MaxRequestBytes + 5, ct);
        if (body.Length < 5)
        {
            throw new ConnectException("invalid_argument", "a streaming call needs one enveloped request message");
        }
        int length = BinaryPrimitives.ReadInt32BigEndian(body.AsSpan(1, 4));
        if ((body[0] & 1) != 0 || length < 0 || length != body.Length - 5)
        {
            throw new ConnectException("invalid_argument", "the request envelope is compressed or its length is wrong");
        }
        return Parse(body[5..]);
    }

    private static JsonObject Parse(byte[] json)
    {
        try
        {
            return JsonNode.Parse(json) as JsonObject ?? throw new ConnectException("invalid_argument", "the request message is not a JSON object");
        }
        catch (JsonException e)
        {
            throw new ConnectException("invalid_argument", $"the request message is not JSON: {e.Message}");
        }
    }

    public static async Task<byte[]> ReadBodyAsync(HttpRequest request, int limit, CancellationToken ct)
    {
        if (request.ContentLength > limit)
        {
            throw new ConnectException("resource_exhausted", $"the request is {request.ContentLength} bytes; the limit is {limit}");
        }
        using var buffer = new MemoryStream();
        byte[] chunk = new byte[16384];
        int n;
        while ((n = await request.Body.ReadAsync(chunk, ct)) > 0)
        {
            if (buffer.Length + n > limit)
            {
                throw new ConnectException("resource_exhausted", $"the request is over the limit of {limit} bytes");
            }
            buffer.Write(chunk, 0, n);
        }
        return buffer.ToArray();
    }

    public static int StatusOf(string code) => code switch
    {
        "invalid_argument" or "failed_precondition" or "out_of_range" => 400,
        "unauthenticated" => 401,
        "permission_denied" => 403,
        "not_found" => 404,
        "already_exists" or "aborted" => 409,
        "resource_exhausted" => 429,
        "canceled" => 499,
        "unimplemented" => 501,
        "unavailable" => 503,
        "deadline_exceeded" => 504,
        _ => 500,
    };

    public static Task WriteUnaryErrorAsync(HttpContext context, string code, string message)
    {
        context.Response.StatusCode = StatusOf(code);
        context.Response.ContentType = "application/json";
        return context.Response.WriteAsync(new JsonObject { ["code"] = code, ["message"] = message }.ToJsonString(), context.RequestAborted);
    }

    public static Task WriteUnaryAsync(HttpContext context, JsonObject message)
    {
        context.Response.StatusCode = 200;
        context.Response.ContentType = "application/json";
        return context.Response.WriteAsync(message.ToJsonString(), context.RequestAborted);
    }

    /// <summary>Starts a streaming answer: 200 with the Connect streaming content type, flushed so the client sees it.</summary>
    public static async Task StartStreamAsync(HttpContext context)
    {
        context.Response.StatusCode = 200;
        context.Response.ContentType = "application/connect+json";
        await context.Response.StartAsync(context.RequestAborted);
    }

    public static async Task WriteMessageAsync(HttpContext context, JsonObject message, CancellationToken ct)
    {
        await WriteEnvelopeAsync(context.Response.Body, 0, JsonSerializer.SerializeToUtf8Bytes(message), ct);
        await context.Response.Body.FlushAsync(ct);
    }

    public static async Task EndStreamAsync(HttpContext context, ConnectException? error)
    {
        var end = new JsonObject();
        if (error is not null)
        {
            end["error"] = new JsonObject { ["code"] = error.Code, ["message"] = error.Message };
        }
        await WriteEnvelopeAsync(context.Response.Body, 2, JsonSerializer.SerializeToUtf8Bytes(end), CancellationToken.None);
        await context.Response.Body.FlushAsync(CancellationToken.None);
    }

    private static async Task WriteEnvelopeAsync(Stream body, byte flags, byte[] payload, CancellationToken ct)
    {
        byte[] frame = new byte[5 + payload.Length];
        frame[0] = flags;
        BinaryPrimitives.WriteInt32BigEndian(frame.AsSpan(1, 4), payload.Length);
        payload.CopyTo(frame, 5);
        await body.WriteAsync(frame, ct);
    }
}
