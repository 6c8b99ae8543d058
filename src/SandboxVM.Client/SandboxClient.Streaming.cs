using System.Net.ServerSentEvents;
using System.Runtime.CompilerServices;
using System.Text.Json;
using SandboxVM.Client.Internal;

namespace SandboxVM.Client;

public sealed partial class SandboxClient
{
    /// <summary>
    /// Runs code once in a fresh sandbox (<c>POST /v1/run</c>) and streams what happens as it happens:
    /// stdout and stderr text, artifacts, and last the <see cref="ResultEvent"/>.
    /// </summary>
    /// <param name="request">Template, code and optional stdin, environment and time limits.</param>
    /// <param name="cancellationToken">Abandons the call; leaving the loop early also disconnects, which cancels the run.</param>
    /// <returns>The events in the order they happened; the last is always a <see cref="ResultEvent"/>.</returns>
    /// <exception cref="SandboxApiException">The server rejected the request before running anything (a subclass says why).</exception>
    /// <exception cref="SandboxConnectionException">
    /// The server could not be reached, did not finish within <see cref="SandboxClientOptions.Timeout"/>, or the stream ended before the result.
    /// </exception>
    public IAsyncEnumerable<RunEvent> RunStreamAsync(RunRequest request, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(request);
        ObjectDisposedException.ThrowIf(_disposed, this);
        var body = JsonSerializer.SerializeToUtf8Bytes(request, SandboxJson.Default.RunRequest);
        return StreamRunAsync("v1/run", body, cancellationToken);
    }

    /// <summary>POSTs a run with <c>Accept: text/event-stream</c> and yields its events until the result.</summary>
    internal async IAsyncEnumerable<RunEvent> StreamRunAsync(
        string path, byte[] jsonBody, [EnumeratorCancellation] CancellationToken cancellationToken)
    {
        using var call = BeginCall(HttpMethod.Post, path, cancellationToken);
        var response = await OpenStreamAsync(call, path, jsonBody).ConfigureAwait(false);
        using (response)
        {
            if (!IsEventStream(response))
            {
                // A server that ignores Accept answers with the plain RunResult: one result event.
                yield return new ResultEvent(await ReadResultAsync(call, response, SandboxJson.Default.RunResult).ConfigureAwait(false));
                yield break;
            }

            var stream = await ReadStreamAsync(call, response).ConfigureAwait(false);
            await using (stream.ConfigureAwait(false))
            {
                // System.Net.ServerSentEvents' parser: LF, CRLF or CR line ends, comments, multi-line data;
                // an event not closed by a blank line before the end is dropped.
                var events = SseParser.Create(stream).EnumerateAsync(call.Token).GetAsyncEnumerator(call.Token);
                await using var _ = events.ConfigureAwait(false);
                while (true)
                {
                    var runEvent = await NextEventAsync(call, response, events, ToRunEvent).ConfigureAwait(false);
                    yield return runEvent;
                    if (runEvent is ResultEvent)
                    {
                        yield break;
                    }
                }
            }
        }
    }

    private async Task<HttpResponseMessage> OpenStreamAsync(Call call, string path, byte[] jsonBody)
    {
        try
        {
            return await SendCheckedAsync(HttpMethod.Post, path, JsonContent(jsonBody), s_acceptEvents,
                HttpCompletionOption.ResponseHeadersRead, call.Token).ConfigureAwait(false);
        }
        catch (Exception ex) when (call.Translate(ex) is { } translated)
        {
            throw translated;
        }
    }

    private static bool IsEventStream(HttpResponseMessage response) =>
        response.Content.Headers.ContentType?.MediaType is not { } type
        || string.Equals(type, "text/event-stream", StringComparison.OrdinalIgnoreCase);

    private static async Task<T> ReadResultAsync<T>(Call call, HttpResponseMessage response, System.Text.Json.Serialization.Metadata.JsonTypeInfo<T> type)
    {
        try
        {
            return await ReadAsync(response, type, call.Token).ConfigureAwait(false);
        }
        catch (Exception ex) when (call.Translate(ex) is { } translated)
        {
            throw translated;
        }
    }

    private static async Task<Stream> ReadStreamAsync(Call call, HttpResponseMessage response)
    {
        try
        {
            return await response.Content.ReadAsStreamAsync(call.Token).ConfigureAwait(false);
        }
        catch (Exception ex) when (call.Translate(ex) is { } translated)
        {
            throw translated;
        }
    }

    /// <summary>The next event the SDK knows (<paramref name="convert"/> gives null for others: skipped); throws when the stream ends first.</summary>
    private static async Task<T> NextEventAsync<T>(Call call, HttpResponseMessage response, IAsyncEnumerator<SseItem<string>> events,
        Func<SseItem<string>, HttpResponseMessage, T?> convert) where T : class
    {
        try
        {
            while (await events.MoveNextAsync().ConfigureAwait(false))
            {
                if (convert(events.Current, response) is { } known)
                {
                    return known;
                }
            }
        }
        catch (Exception ex) when (call.Translate(ex) is { } translated)
        {
            throw translated;
        }

        throw call.StreamEnded();
    }

    private static RunEvent? ToRunEvent(SseItem<string> sse, HttpResponseMessage response)
    {
        try
        {
            return sse.EventType switch
            {
                "stdout" => new StdoutEvent(Parse(sse, SandboxJson.Default.StreamText).Text ?? ""),
                "stderr" => new StderrEvent(Parse(sse, SandboxJson.Default.StreamText).Text ?? ""),
                "artifact" => new ArtifactEvent(Parse(sse, SandboxJson.Default.Artifact)),
                "result" => new ResultEvent(Parse(sse, SandboxJson.Default.RunResult)),
                _ => null,
            };
        }
        catch (JsonException ex)
        {
            throw InvalidResponse(response, $"malformed '{sse.EventType}' event: {ex.Message}", ex);
        }
    }

    /// <summary>
    /// POSTs a foreground command with <c>Accept: text/event-stream</c>: its stdout and stderr go to the callbacks
    /// as the command prints them; the command as it ended at the end.
    /// </summary>
    internal async Task<SandboxCommand> StreamCommandAsync(string path, byte[] jsonBody, Action<string>? onStdout, Action<string>? onStderr,
        CancellationToken cancellationToken)
    {
        using var call = BeginCall(HttpMethod.Post, path, cancellationToken);
        using var response = await OpenStreamAsync(call, path, jsonBody).ConfigureAwait(false);
        if (!IsEventStream(response))
        {
            // A server that does not stream answers with the whole command: its output is handed over at once.
            var whole = await ReadResultAsync(call, response, SandboxJson.Default.SandboxCommand).ConfigureAwait(false);
            Deliver(whole.Stdout, onStdout);
            Deliver(whole.Stderr, onStderr);
            return whole;
        }
        var stream = await ReadStreamAsync(call, response).ConfigureAwait(false);
        await using (stream.ConfigureAwait(false))
        {
            var events = SseParser.Create(stream).EnumerateAsync(call.Token).GetAsyncEnumerator(call.Token);
            await using var _ = events.ConfigureAwait(false);
            while (true)
            {
                switch (await NextEventAsync(call, response, events, ToCommandEvent).ConfigureAwait(false))
                {
                    case StdoutEvent o:
                        Deliver(o.Text, onStdout);
                        break;
                    case StderrEvent e:
                        Deliver(e.Text, onStderr);
                        break;
                    case SandboxCommand ended:
                        return ended;
                }
            }
        }

        static void Deliver(string? text, Action<string>? callback)
        {
            if (!string.IsNullOrEmpty(text))
            {
                callback?.Invoke(text);
            }
        }
    }

    /// <summary>A command's stream: output events as a run's, then <c>result</c> whose data is the command.</summary>
    private static object? ToCommandEvent(SseItem<string> sse, HttpResponseMessage response)
    {
        if (sse.EventType != "result")
        {
            return ToRunEvent(sse, response);
        }
        try
        {
            return Parse(sse, SandboxJson.Default.SandboxCommand);
        }
        catch (JsonException ex)
        {
            throw InvalidResponse(response, $"malformed '{sse.EventType}' event: {ex.Message}", ex);
        }
    }

    private static T Parse<T>(SseItem<string> sse, System.Text.Json.Serialization.Metadata.JsonTypeInfo<T> type) =>
        JsonSerializer.Deserialize(sse.Data, type) ?? throw new JsonException("the data was JSON null");
}
