using System.Buffers.Binary;

namespace SandboxVM.Protocol;

/// <summary>
/// One duplex byte stream carried on an operation id (egress connections): Data frames both ways,
/// DataEnd = the sender will send no more (half-close), Cancel = abort. Flow control by credit: each
/// side may have at most <see cref="Window"/> bytes of Data unconsumed by the peer; the receiver returns
/// credit (a <see cref="FrameType.Credit"/> frame) as it hands the bytes on. So the reader loop that
/// calls <see cref="Deliver"/> never blocks, and nothing buffers more than one window per stream: small
/// frames share buffers (a window of one-byte frames costs a window, not a quarter million objects),
/// empty Data frames are dropped, and a peer that sends past its credit or returns more credit than it
/// was sent is cancelled (once; whatever it sends afterwards is dropped).
/// </summary>
public sealed class FrameStream
{
    /// <summary>Unconsumed bytes a sender may have in flight per stream.</summary>
    public const int Window = 256 * 1024;

    /// <summary>Credit is returned once this much was consumed (or the queue ran empty).</summary>
    private const int CreditBatch = 64 * 1024;

    private readonly FrameWriter _writer;
    private readonly TimeProvider _time;
    private readonly InboundBuffer _inbound = new();
    private readonly CancellationTokenSource _aborted = new();
    // At most one wake-up pending: a flood of Credit frames cannot overflow its count.
    private readonly SemaphoreSlim _creditSignal = new(0, 1);
    private long _sendCredit = Window;
    private long _buffered;
    private long _lastActivity;
    private string? _abortReason;

    /// <summary>A stream on <paramref name="id"/>; <paramref name="time"/> (null: the system clock) times <see cref="IdleTimeout"/>.</summary>
    public FrameStream(FrameWriter writer, uint id, TimeProvider? time = null)
    {
        _writer = writer;
        _time = time ?? TimeProvider.System;
        _lastActivity = _time.GetTimestamp();
        Id = id;
    }

    public uint Id { get; }

    /// <summary>No bytes either way for this long ends the relay (null: never); looked at every quarter of it.</summary>
    public TimeSpan? IdleTimeout { get; set; } = TimeSpan.FromMinutes(2);

    /// <summary>Why the stream was aborted (peer Cancel, protocol violation, channel gone); null while it is not.</summary>
    public string? AbortReason => Volatile.Read(ref _abortReason);

    public long BytesSent { get; private set; }

    public long BytesReceived { get; private set; }

    /// <summary>A frame for this id, from the connection's reader loop. Never blocks.</summary>
    public void Deliver(Frame frame)
    {
        if (AbortReason is not null)
        {
            return;
        }
        switch (frame.Type)
        {
            case FrameType.Data:
                if (frame.Payload.IsEmpty)
                {
                    return;
                }
                if (Interlocked.Add(ref _buffered, frame.Payload.Length) > Window)
                {
                    Violation("the peer sent more than its credit");
                    return;
                }
                _inbound.Append(frame.Payload);
                break;
            case FrameType.DataEnd:
                _inbound.Complete(null);
                break;
            case FrameType.Credit:
                if (frame.Payload.Length == 4)
                {
                    if (Interlocked.Add(ref _sendCredit, BinaryPrimitives.ReadUInt32BigEndian(frame.Payload.Span)) > Window)
                    {
                        Violation("the peer returned more credit than it was sent");
                        return;
                    }
                    try
                    {
                        _creditSignal.Release();
                    }
                    catch (SemaphoreFullException)
                    {
                        // A wake-up is pending already.
                    }
                }
                break;
            case FrameType.Cancel:
                Abort("the peer cancelled the stream");
                break;
        }
    }

    private void Violation(string reason)
    {
        if (TryAbort(reason))
        {
            _ = SendCancelAsync();
        }
    }

    /// <summary>Ends the stream at once (both directions); a running <see cref="RelayAsync"/> returns.</summary>
    public void Abort(string reason) => TryAbort(reason);

    private bool TryAbort(string reason)
    {
        bool first = Interlocked.CompareExchange(ref _abortReason, reason, null) is null;
        _inbound.Complete(new OperationCanceledException(reason));
        try
        {
            _aborted.Cancel();
        }
        catch (ObjectDisposedException)
        {
        }
        return first;
    }

    /// <summary>
    /// Copies <paramref name="local"/> to the peer and the peer to <paramref name="local"/> until both
    /// directions have ended (end of file read from local: DataEnd sent; DataEnd received:
    /// <paramref name="shutdownLocalSend"/> called), or either side fails, is aborted or idles out (then the
    /// peer gets a Cancel). <paramref name="initialUp"/> is sent first (bytes already read from local).
    /// True when both directions ended cleanly.
    /// </summary>
    public async Task<bool> RelayAsync(Stream local, Action shutdownLocalSend, ReadOnlyMemory<byte> initialUp, CancellationToken cancellationToken)
    {
        using var linked = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken, _aborted.Token);
        var token = linked.Token;
        var up = PumpUpAsync(local, initialUp, token);
        var down = PumpDownAsync(local, shutdownLocalSend, token);
        var both = Task.WhenAll(up, down);
        // The timer only looks (every quarter of the limit); the relay aborts, so the Cancel is out before it returns.
        TimeSpan? limit = IdleTimeout;
        var idled = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        using ITimer? idleCheck = limit is { } idle
            ? _time.CreateTimer(_ =>
            {
                if (_time.GetElapsedTime(Interlocked.Read(ref _lastActivity)) > idle)
                {
                    idled.TrySetResult();
                }
            }, null, idle / 4, idle / 4)
            : null;
        while (!both.IsCompleted)
        {
            var first = await Task.WhenAny(both, up.IsCompleted ? down : up, idled.Task).ConfigureAwait(false);
            if (first == idled.Task)
            {
                Abort($"no data for {limit!.Value.TotalSeconds:0} s");
                await linked.CancelAsync().ConfigureAwait(false);
                await SendCancelAsync().ConfigureAwait(false);
                break;
            }
            if (first is { IsFaulted: true } or { IsCanceled: true })
            {
                await linked.CancelAsync().ConfigureAwait(false);
            }
        }
        try
        {
            await both.ConfigureAwait(false);
            return true;
        }
        catch (Exception e) when (e is OperationCanceledException or IOException or ObjectDisposedException or System.Net.Sockets.SocketException)
        {
            if (AbortReason is null)
            {
                Abort(e.Message);
                await SendCancelAsync().ConfigureAwait(false);
            }
            return false;
        }
    }

    private async Task PumpUpAsync(Stream local, ReadOnlyMemory<byte> initialUp, CancellationToken token)
    {
        while (!initialUp.IsEmpty)
        {
            int credit = await WaitCreditAsync(token).ConfigureAwait(false);
            int n = Math.Min(Math.Min(credit, Frame.ChunkSize), initialUp.Length);
            await SendDataAsync(initialUp[..n], token).ConfigureAwait(false);
            initialUp = initialUp[n..];
        }
        byte[] buffer = new byte[Frame.ChunkSize];
        while (true)
        {
            int credit = await WaitCreditAsync(token).ConfigureAwait(false);
            int n = await local.ReadAsync(buffer.AsMemory(0, Math.Min(credit, buffer.Length)), token).ConfigureAwait(false);
            if (n == 0)
            {
                await _writer.WriteAsync(FrameType.DataEnd, Id, ReadOnlyMemory<byte>.Empty, token).ConfigureAwait(false);
                return;
            }
            await SendDataAsync(buffer.AsMemory(0, n), token).ConfigureAwait(false);
        }
    }

    private async Task SendDataAsync(ReadOnlyMemory<byte> data, CancellationToken token)
    {
        Interlocked.Add(ref _sendCredit, -data.Length);
        await _writer.WriteAsync(FrameType.Data, Id, data, token).ConfigureAwait(false);
        // Stamped before the count (a fence): whoever sees the bytes counted sees the activity.
        Interlocked.Exchange(ref _lastActivity, _time.GetTimestamp());
        BytesSent += data.Length;
    }

    private async Task<int> WaitCreditAsync(CancellationToken token)
    {
        while (true)
        {
            long credit = Interlocked.Read(ref _sendCredit);
            if (credit > 0)
            {
                return (int)Math.Min(credit, int.MaxValue);
            }
            await _creditSignal.WaitAsync(token).ConfigureAwait(false);
        }
    }

    private async Task PumpDownAsync(Stream local, Action shutdownLocalSend, CancellationToken token)
    {
        int pending = 0;
        byte[] creditFrame = new byte[4];
        while (await _inbound.ReadAsync(token).ConfigureAwait(false) is { } chunk)
        {
            await local.WriteAsync(chunk, token).ConfigureAwait(false);
            Interlocked.Add(ref _buffered, -chunk.Length);
            Interlocked.Exchange(ref _lastActivity, _time.GetTimestamp());
            BytesReceived += chunk.Length;
            pending += chunk.Length;
            if (pending >= CreditBatch || _inbound.IsEmpty)
            {
                BinaryPrimitives.WriteUInt32BigEndian(creditFrame, (uint)pending);
                await _writer.WriteAsync(FrameType.Credit, Id, creditFrame, token).ConfigureAwait(false);
                pending = 0;
            }
        }
        // The peer's DataEnd (an abort throws instead).
        await local.FlushAsync(token).ConfigureAwait(false);
        shutdownLocalSend();
    }

    private async Task SendCancelAsync()
    {
        try
        {
            await _writer.WriteAsync(FrameType.Cancel, Id, ReadOnlyMemory<byte>.Empty, CancellationToken.None).ConfigureAwait(false);
        }
        catch (Exception e) when (e is IOException or ObjectDisposedException or InvalidOperationException)
        {
            // The channel is gone; the peer aborts every stream then anyway.
        }
    }

    /// <summary>
    /// Bytes received and not yet written on, in arrival order. Frames up to <see cref="SmallFrame"/>
    /// bytes are copied into a shared segment; larger ones are queued as they are.
    /// </summary>
    private sealed class InboundBuffer
    {
        private const int SmallFrame = 1024;
        private const int SegmentSize = 16 * 1024;

        private readonly Queue<Segment> _segments = new();
        private Segment? _tail;
        private TaskCompletionSource? _waiter;
        private bool _completed;
        private Exception? _error;

        private sealed class Segment(ReadOnlyMemory<byte> data, byte[]? shared)
        {
            public ReadOnlyMemory<byte> Data = data;
            public readonly byte[]? Shared = shared;
        }

        public bool IsEmpty
        {
            get
            {
                lock (_segments)
                {
                    return _segments.Count == 0;
                }
            }
        }

        public void Append(ReadOnlyMemory<byte> data)
        {
            lock (_segments)
            {
                if (_completed)
                {
                    return;
                }
                if (data.Length > SmallFrame)
                {
                    _segments.Enqueue(new Segment(data, null));
                    _tail = null;
                }
                else if (_tail is { Shared: { } buffer } tail && buffer.Length - tail.Data.Length >= data.Length)
                {
                    data.CopyTo(buffer.AsMemory(tail.Data.Length));
                    tail.Data = buffer.AsMemory(0, tail.Data.Length + data.Length);
                }
                else
                {
                    byte[] shared = new byte[SegmentSize];
                    data.CopyTo(shared);
                    _tail = new Segment(shared.AsMemory(0, data.Length), shared);
                    _segments.Enqueue(_tail);
                }
                WakeLocked();
            }
        }

        /// <summary>The next bytes; null after DataEnd; throws once aborted.</summary>
        public async ValueTask<ReadOnlyMemory<byte>?> ReadAsync(CancellationToken cancellationToken)
        {
            while (true)
            {
                Task wait;
                lock (_segments)
                {
                    if (_error is not null)
                    {
                        throw new OperationCanceledException(_error.Message, _error);
                    }
                    if (_segments.TryDequeue(out var segment))
                    {
                        if (ReferenceEquals(segment, _tail))
                        {
                            _tail = null;
                        }
                        return segment.Data;
                    }
                    if (_completed)
                    {
                        return null;
                    }
                    _waiter ??= new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
                    wait = _waiter.Task;
                }
                await wait.WaitAsync(cancellationToken).ConfigureAwait(false);
            }
        }

        /// <summary>No more bytes: a clean end (null) or an abort, which drops what is queued.</summary>
        public void Complete(Exception? error)
        {
            lock (_segments)
            {
                if (error is not null && _error is null)
                {
                    _error = error;
                    _segments.Clear();
                    _tail = null;
                }
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
