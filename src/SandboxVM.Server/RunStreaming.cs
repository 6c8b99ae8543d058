using System.Buffers;
using System.Net.ServerSentEvents;
using System.Runtime.CompilerServices;
using System.Text;
using System.Text.Json;
using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.DependencyInjection;
using SandboxVM.Core.Runs;

namespace SandboxVM.Server;

/// <summary>
/// Answers a run as a server-sent event stream: stdout, stderr and artifact events as they happen,
/// then one result event, written by System.Net.ServerSentEvents' <see cref="SseFormatter"/>. The stream starts with the first event, so a request refused before the run
/// begins (bad input, overload) still gets its problem+json status. A client that disconnects cancels
/// the run through the request's abort token.
/// </summary>
/// <remarks>
/// What waits for a slow client is bounded: the host caps a run's output (at most twice the template's
/// <c>output_bytes</c> reaches the queue: compile, then run), chunks of one stream that wait are merged
/// into one event, and at most <see cref="MaxQueuedEvents"/> events wait. A client further behind than
/// that is treated like one that left: the run is cancelled and the connection closed (Kestrel's
/// minimum response data rate ends clients that stop reading the final event).
/// Not <c>TypedResults.ServerSentEvents</c>: it sets the stream's headers before the first event, and
/// a run refused before its first event answers problem+json instead.
/// </remarks>
internal static class RunStreaming
{
    /// <summary>Events (after merging) that may wait for the client before the stream is ended.</summary>
    public const int MaxQueuedEvents = 4096;

    /// <summary>How long output that ends inside a line waits for the rest of the line before it is sent anyway.</summary>
    public static readonly TimeSpan PartialLineWait = TimeSpan.FromMilliseconds(50);

    public static bool Wanted(HttpContext context) =>
        context.Request.Headers.Accept.Any(a => a is not null && a.Contains("text/event-stream", StringComparison.OrdinalIgnoreCase));

    /// <summary>Runs <paramref name="run"/> with an event sink, writing the events as they arrive.</summary>
    public static Task WriteAsync(HttpContext context, JsonSerializerOptions json, Func<IRunEvents, CancellationToken, Task<RunResult>> run) =>
        WriteAsync(context, json, run, RunResultBody.From);

    /// <summary>The same for anything that streams output and ends with a result (a command): <paramref name="resultBody"/> is the data of the final <c>result</c> event.</summary>
    public static async Task WriteAsync<TResult>(HttpContext context, JsonSerializerOptions json, Func<IRunEvents, CancellationToken, Task<TResult>> run,
        Func<TResult, object> resultBody)
    {
        CancellationToken aborted = context.RequestAborted;
        using var stop = CancellationTokenSource.CreateLinkedTokenSource(aborted);
        var time = context.RequestServices.GetService<TimeProvider>() ?? TimeProvider.System;
        var sink = new EventQueue(MaxQueuedEvents, stop, time, PartialLineWait);
        Task<TResult> running = Task.Run(async () =>
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
        async IAsyncEnumerable<SseItem<object>> EventsAsync([EnumeratorCancellation] CancellationToken cancellationToken)
        {
            while (await sink.WaitAsync(cancellationToken))
            {
                if (!started)
                {
                    await StartAsync(context);
                    started = true;
                }
                foreach (var e in sink.TakeAll())
                {
                    yield return new SseItem<object>(e.Payload, e.Name);
                }
            }
            TResult result = await running;
            if (!started)
            {
                await StartAsync(context);
                started = true;
            }
            yield return new SseItem<object>(resultBody(result), "result");
        }

        try
        {
            // Each event is one write; Kestrel sends every write at once.
            await SseFormatter.WriteAsync(EventsAsync(stop.Token), context.Response.Body, (item, buffer) => WriteJson(item.Data, buffer, json), stop.Token);
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

    /// <summary>An event's data: its JSON on one line (JSON never contains a raw newline).</summary>
    private static void WriteJson(object payload, IBufferWriter<byte> buffer, JsonSerializerOptions json)
    {
        using var writer = new Utf8JsonWriter(buffer, new JsonWriterOptions { Encoder = json.Encoder, MaxDepth = json.MaxDepth });
        JsonSerializer.Serialize(writer, payload, payload.GetType(), json);
    }

    private sealed record RunEvent(string Name, object Payload);

    /// <summary>
    /// Events from the run (called on the agent's reader: never blocks) for the response writer. Output
    /// is decoded per stream across chunk boundaries; consecutive output of one stream merges into the
    /// event that is still waiting; past <c>maxEvents</c> waiting the stream is stopped. Output that ends
    /// inside a line, with nothing after it, is held up to <c>partialLineWait</c> for the rest of its line:
    /// <c>python3 -u</c> writes <c>print</c>'s text and its newline with two system calls.
    /// </summary>
    private sealed class EventQueue(int maxEvents, CancellationTokenSource stop, TimeProvider time, TimeSpan partialLineWait) : IRunEvents
    {
        private readonly Queue<Queued> _queue = new();
        private readonly Decoder _stdout = Encoding.UTF8.GetDecoder();
        private readonly Decoder _stderr = Encoding.UTF8.GetDecoder();
        private Queued? _tail;
        private TaskCompletionSource? _waiter;
        private bool _completed;
        private int _overflowed;
        /// <summary>When the waiting tail started to end inside a line; null when it does not.</summary>
        private long? _partialSince;
        /// <summary>The held tail waited its time: the next take sends it.</summary>
        private bool _releaseTail;

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
                    WakeLocked();
                    return;
                }
                EnqueueLocked(new Queued(stream, new StringBuilder().Append(chars, 0, n), null));
            }
        }

        public void OnArtifact(RunArtifact artifact)
        {
            lock (_queue)
            {
                EnqueueLocked(new Queued("artifact", null, new ArtifactInfoDto(artifact.Path, artifact.Mime, artifact.Size, artifact.Sha256)));
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
            _partialSince = null;
            WakeLocked();
        }

        /// <summary>True while the tail is output that ends inside a line and may still wait for the rest.</summary>
        private bool TailHeldLocked()
        {
            if (_completed || _releaseTail || _tail is not { Text: { Length: > 0 } text } || text[^1] == '\n')
            {
                _partialSince = null;
                return false;
            }
            _partialSince ??= time.GetTimestamp();
            return true;
        }

        /// <summary>True when events are ready to send; false once the run has ended and all were taken.</summary>
        public async ValueTask<bool> WaitAsync(CancellationToken cancellationToken)
        {
            while (true)
            {
                Task wait;
                TimeSpan hold = Timeout.InfiniteTimeSpan;
                lock (_queue)
                {
                    bool held = TailHeldLocked();
                    if (_queue.Count > (held ? 1 : 0))
                    {
                        return true;
                    }
                    if (_queue.Count == 0 && _completed)
                    {
                        return false;
                    }
                    if (held)
                    {
                        hold = partialLineWait - time.GetElapsedTime(_partialSince!.Value);
                        if (hold <= TimeSpan.Zero)
                        {
                            _releaseTail = true;
                            return true;
                        }
                    }
                    _waiter ??= new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
                    wait = _waiter.Task;
                }
                if (hold == Timeout.InfiniteTimeSpan)
                {
                    await wait.WaitAsync(cancellationToken);
                }
                else
                {
                    try
                    {
                        await wait.WaitAsync(hold, time, cancellationToken);
                    }
                    catch (TimeoutException)
                    {
                        // The rest of the line did not come in time: the next round sends what there is.
                    }
                }
            }
        }

        /// <summary>The events ready to send (a held partial line stays, first in the queue).</summary>
        public List<RunEvent> TakeAll()
        {
            lock (_queue)
            {
                bool held = TailHeldLocked();
                var events = new List<RunEvent>(_queue.Count);
                while (_queue.Count > (held ? 1 : 0))
                {
                    var q = _queue.Dequeue();
                    events.Add(new RunEvent(q.Name, q.Text is { } t ? new StreamText(t.ToString()) : q.Payload!));
                }
                if (_queue.Count == 0)
                {
                    _tail = null;
                    _partialSince = null;
                    _releaseTail = false;
                }
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
