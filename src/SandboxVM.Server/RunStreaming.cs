using System.Text;
using System.Text.Json;
using Microsoft.AspNetCore.Http;
using SandboxVM.Core.Runs;

namespace SandboxVM.Server;

/// <summary>
/// Answers a run as a server-sent event stream: stdout, stderr and artifact events as they happen,
/// then one result event. The stream starts with the first event, so a request refused before the run
/// begins (bad input, overload) still gets its problem+json status. A client that disconnects cancels
/// the run through the request's abort token.
/// </summary>
/// <remarks>
/// What waits for a slow client is bounded: the host caps a run's output (at most twice the template's
/// <c>output_bytes</c> reaches the queue: compile, then run), chunks of one stream that wait are merged
/// into one event, and at most <see cref="MaxQueuedEvents"/> events wait. A client further behind than
/// that is treated like one that left: the run is cancelled and the connection closed (Kestrel's
/// minimum response data rate ends clients that stop reading the final event).
/// </remarks>
internal static class RunStreaming
{
    /// <summary>Events (after merging) that may wait for the client before the stream is ended.</summary>
    public const int MaxQueuedEvents = 4096;

    public static bool Wanted(HttpContext context) =>
        context.Request.Headers.Accept.Any(a => a is not null && a.Contains("text/event-stream", StringComparison.OrdinalIgnoreCase));

    /// <summary>Runs <paramref name="run"/> with an event sink, writing the events as they arrive.</summary>
    public static async Task WriteAsync(HttpContext context, JsonSerializerOptions json, Func<IRunEvents, CancellationToken, Task<RunResult>> run)
    {
        CancellationToken aborted = context.RequestAborted;
        using var stop = CancellationTokenSource.CreateLinkedTokenSource(aborted);
        var sink = new EventQueue(MaxQueuedEvents, stop);
        Task<RunResult> running = Task.Run(async () =>
        {
            try
            {
                return await run(sink, stop.Token);
            }
            finally
            {
                sink.Complete();
            }
        }, CancellationToken.None);

        bool started = false;
        try
        {
            while (await sink.WaitAsync(stop.Token))
            {
                if (!started)
                {
                    await StartAsync(context);
                    started = true;
                }
                foreach (var e in sink.TakeAll())
                {
                    await WriteEventAsync(context, e.Name, e.Payload, json, stop.Token);
                }
                await context.Response.Body.FlushAsync(stop.Token);
            }
            RunResult result = await running;
            if (!started)
            {
                await StartAsync(context);
            }
            await WriteEventAsync(context, "result", result, json, stop.Token);
            await context.Response.Body.FlushAsync(stop.Token);
        }
        catch (RunRequestException e) when (!started)
        {
            await Problems.Write(context, e);
        }
        catch (OperationCanceledException) when (stop.IsCancellationRequested)
        {
            if (sink.Overflowed && !aborted.IsCancellationRequested)
            {
                // Too slow to take its own run's events: ended like a client that left.
                context.Abort();
            }
            // The run was cancelled with the stream. Wait for it so nothing outlives the request.
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
    }

    private sealed record RunEvent(string Name, object Payload);

    private sealed record TextPayload(string Text);

    /// <summary>
    /// Events from the run (called on the agent's reader: never blocks) for the response writer. Output
    /// is decoded per stream across chunk boundaries; consecutive output of one stream merges into the
    /// event that is still waiting; past <c>maxEvents</c> waiting the stream is stopped.
    /// </summary>
    private sealed class EventQueue(int maxEvents, CancellationTokenSource stop) : IRunEvents
    {
        private readonly Queue<Queued> _queue = new();
        private readonly Decoder _stdout = Encoding.UTF8.GetDecoder();
        private readonly Decoder _stderr = Encoding.UTF8.GetDecoder();
        private Queued? _tail;
        private TaskCompletionSource? _waiter;
        private bool _completed;
        private int _overflowed;

        private sealed class Queued(string name, StringBuilder? text, object? payload)
        {
            public string Name { get; } = name;
            public StringBuilder? Text { get; } = text;
            public object? Payload { get; } = payload;
        }

        public bool Overflowed => Volatile.Read(ref _overflowed) != 0;

        public void OnOutput(string stream, ReadOnlyMemory<byte> data)
        {
            Decoder decoder = stream == "stderr" ? _stderr : _stdout;
            char[] chars = new char[decoder.GetCharCount(data.Span, flush: false)];
            int n = decoder.GetChars(data.Span, chars, flush: false);
            if (n == 0)
            {
                return;
            }
            lock (_queue)
            {
                if (_tail is { Text: { } waiting } tail && tail.Name == stream)
                {
                    waiting.Append(chars, 0, n);
                    return;
                }
                EnqueueLocked(new Queued(stream, new StringBuilder().Append(chars, 0, n), null));
            }
        }

        public void OnArtifact(RunArtifact artifact)
        {
            lock (_queue)
            {
                EnqueueLocked(new Queued("artifact", null, new
                {
                    path = artifact.Path,
                    mime = artifact.Mime,
                    size = artifact.Size,
                    sha256 = artifact.Sha256,
                }));
            }
        }

        private void EnqueueLocked(Queued e)
        {
            if (_overflowed != 0 || _completed)
            {
                return;
            }
            if (_queue.Count >= maxEvents)
            {
                _overflowed = 1;
                _queue.Clear();
                _tail = null;
                // Not under the lock, not on the agent's reader: cancelling runs the run's cancel callbacks.
                _ = Task.Run(() =>
                {
                    try
                    {
                        stop.Cancel();
                    }
                    catch (ObjectDisposedException)
                    {
                        // The request is over already.
                    }
                });
                return;
            }
            _queue.Enqueue(e);
            _tail = e;
            WakeLocked();
        }

        /// <summary>True when events are waiting; false once the run has ended and all were taken.</summary>
        public async ValueTask<bool> WaitAsync(CancellationToken cancellationToken)
        {
            while (true)
            {
                Task wait;
                lock (_queue)
                {
                    if (_queue.Count > 0)
                    {
                        return true;
                    }
                    if (_completed)
                    {
                        return false;
                    }
                    _waiter ??= new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
                    wait = _waiter.Task;
                }
                await wait.WaitAsync(cancellationToken);
            }
        }

        public List<RunEvent> TakeAll()
        {
            lock (_queue)
            {
                var events = _queue.Select(q => new RunEvent(q.Name, q.Text is { } t ? new TextPayload(t.ToString()) : q.Payload!)).ToList();
                _queue.Clear();
                _tail = null;
                return events;
            }
        }

        public void Complete()
        {
            lock (_queue)
            {
                _completed = true;
                WakeLocked();
            }
        }

        private void WakeLocked()
        {
            _waiter?.TrySetResult();
            _waiter = null;
        }
    }
}
