using System.Text;
using System.Text.Json;
using System.Threading.Channels;
using Microsoft.AspNetCore.Http;
using SandboxVM.Core.Runs;

namespace SandboxVM.Server;

/// <summary>
/// Answers a run as a server-sent event stream: stdout, stderr and artifact events as they happen,
/// then one result event. The stream starts with the first event, so a request refused before the run
/// begins (bad input, overload) still gets its problem+json status. A client that disconnects cancels
/// the run through the request's abort token.
/// </summary>
internal static class RunStreaming
{
    public static bool Wanted(HttpContext context) =>
        context.Request.Headers.Accept.Any(a => a is not null && a.Contains("text/event-stream", StringComparison.OrdinalIgnoreCase));

    /// <summary>Runs <paramref name="run"/> with an event sink, writing each event as it arrives.</summary>
    public static async Task WriteAsync(HttpContext context, JsonSerializerOptions json, Func<IRunEvents, CancellationToken, Task<RunResult>> run)
    {
        var sink = new ChannelEvents();
        CancellationToken aborted = context.RequestAborted;
        Task<RunResult> running = Task.Run(async () =>
        {
            try
            {
                return await run(sink, aborted);
            }
            finally
            {
                sink.Complete();
            }
        }, CancellationToken.None);

        bool started = false;
        try
        {
            await foreach (var e in sink.Reader.ReadAllAsync(aborted))
            {
                if (!started)
                {
                    await StartAsync(context);
                    started = true;
                }
                await WriteEventAsync(context, e.Name, e.Payload, json, aborted);
            }
            RunResult result = await running;
            if (!started)
            {
                await StartAsync(context);
            }
            await WriteEventAsync(context, "result", result, json, aborted);
        }
        catch (RunRequestException e) when (!started)
        {
            await Problems.Write(context, e);
        }
        catch (OperationCanceledException) when (aborted.IsCancellationRequested)
        {
            // The client left; the run was cancelled with it. Wait for it so nothing outlives the request.
            try
            {
                await running;
            }
            catch (Exception)
            {
                // Cancelled or failed: nobody is listening any more.
            }
        }
    }

    private static async Task StartAsync(HttpContext context)
    {
        context.Response.StatusCode = 200;
        context.Response.ContentType = "text/event-stream";
        context.Response.Headers.CacheControl = "no-cache";
        context.Response.Headers["X-Accel-Buffering"] = "no";
        await context.Response.Body.FlushAsync(context.RequestAborted);
    }

    private static async Task WriteEventAsync(HttpContext context, string name, object payload, JsonSerializerOptions json, CancellationToken cancellationToken)
    {
        // JSON never contains a raw newline, so one data line carries the whole payload.
        string data = JsonSerializer.Serialize(payload, payload.GetType(), json);
        await context.Response.WriteAsync($"event: {name}\ndata: {data}\n\n", cancellationToken);
        await context.Response.Body.FlushAsync(cancellationToken);
    }

    private sealed record RunEvent(string Name, object Payload);

    private sealed record TextPayload(string Text);

    /// <summary>Queues events from the agent's reader thread; decodes UTF-8 per stream across chunk boundaries.</summary>
    private sealed class ChannelEvents : IRunEvents
    {
        private readonly Channel<RunEvent> _events = Channel.CreateUnbounded<RunEvent>(new UnboundedChannelOptions { SingleReader = true });
        private readonly Decoder _stdout = Encoding.UTF8.GetDecoder();
        private readonly Decoder _stderr = Encoding.UTF8.GetDecoder();

        public ChannelReader<RunEvent> Reader => _events.Reader;

        public void OnOutput(string stream, ReadOnlyMemory<byte> data)
        {
            Decoder decoder = stream == "stderr" ? _stderr : _stdout;
            char[] chars = new char[decoder.GetCharCount(data.Span, flush: false)];
            int n = decoder.GetChars(data.Span, chars, flush: false);
            if (n > 0)
            {
                _events.Writer.TryWrite(new RunEvent(stream, new TextPayload(new string(chars, 0, n))));
            }
        }

        public void OnArtifact(RunArtifact artifact) =>
            _events.Writer.TryWrite(new RunEvent("artifact", new
            {
                path = artifact.Path,
                mime = artifact.Mime,
                size = artifact.Size,
                sha256 = artifact.Sha256,
            }));

        public void Complete() => _events.Writer.TryComplete();
    }
}
