using System.Buffers.Binary;
using System.Text.Json.Serialization.Metadata;
using System.Text.Json;

namespace SandboxVM.Protocol;

/// <summary>A frame write made no progress for <see cref="FrameWriter.WriteTimeout"/>: the peer does not read.</summary>
public sealed class FrameWriteTimeoutException(TimeSpan timeout)
    : IOException($"the peer did not read for {timeout.TotalSeconds:0.#} s (a frame write timed out)")
{
    public TimeSpan Timeout { get; } = timeout;
}

/// <summary>
/// Writes frames to a byte stream. Thread-safe: concurrent operations share one connection, and each
/// frame is written whole under a lock so frames never interleave. With a <see cref="WriteTimeout"/>, a
/// frame whose bytes the peer does not take within it breaks the writer for good: that write and every
/// later one (also those waiting for the lock) throw <see cref="FrameWriteTimeoutException"/>, and
/// <c>onTimeout</c> is told once, so a peer that stops reading costs a bounded wait, not a stuck caller.
/// </summary>
public sealed class FrameWriter : IAsyncDisposable
{
    private readonly Stream _stream;
    private readonly SemaphoreSlim _lock = new(1, 1);
    private readonly CancellationTokenSource _abort = new();
    private readonly Action<FrameWriteTimeoutException>? _onTimeout;
    private readonly TimeProvider _time;
    private volatile FrameWriteTimeoutException? _timedOut;

    public FrameWriter(Stream stream) : this(stream, Timeout.InfiniteTimeSpan)
    {
    }

    /// <param name="stream">The connection.</param>
    /// <param name="writeTimeout">Longest time one frame may take to be written (not counting the wait for earlier frames); infinite: no limit.</param>
    /// <param name="onTimeout">Called once, on the writing task, when a write times out.</param>
    /// <param name="time">The clock of <paramref name="writeTimeout"/>; null: the system clock.</param>
    public FrameWriter(Stream stream, TimeSpan writeTimeout, Action<FrameWriteTimeoutException>? onTimeout = null, TimeProvider? time = null)
    {
        _stream = stream;
        WriteTimeout = writeTimeout;
        _onTimeout = onTimeout;
        _time = time ?? TimeProvider.System;
    }

    public TimeSpan WriteTimeout { get; }

    public async ValueTask WriteAsync(FrameType type, uint id, ReadOnlyMemory<byte> payload, CancellationToken cancellationToken = default)
    {
        if (payload.Length > Frame.MaxPayload)
        {
            throw new ArgumentOutOfRangeException(nameof(payload), $"payload of {payload.Length} bytes exceeds {Frame.MaxPayload}; send it in chunks");
        }
        byte[] header = new byte[4 + Frame.HeaderSize];
        BinaryPrimitives.WriteUInt32BigEndian(header, (uint)(Frame.HeaderSize + payload.Length));
        header[4] = (byte)type;
        BinaryPrimitives.WriteUInt32BigEndian(header.AsSpan(5), id);
        ThrowIfTimedOut();
        await _lock.WaitAsync(cancellationToken);
        try
        {
            ThrowIfTimedOut();
            if (WriteTimeout == Timeout.InfiniteTimeSpan)
            {
                // Once started a frame is written whole: a cancelled half frame would desynchronise the peer.
                await WriteFrameAsync(header, payload, CancellationToken.None);
                return;
            }
            Task write = WriteFrameAsync(header, payload, _abort.Token);
            try
            {
                await write.WaitAsync(WriteTimeout, _time, CancellationToken.None);
            }
            catch (TimeoutException)
            {
                var e = new FrameWriteTimeoutException(WriteTimeout);
                if (Interlocked.CompareExchange(ref _timedOut, e, null) is null)
                {
                    // The stuck write is cancelled where the stream can; its end is observed, never awaited.
                    _ = write.ContinueWith(t => _ = t.Exception, CancellationToken.None, TaskContinuationOptions.ExecuteSynchronously, TaskScheduler.Default);
                    await _abort.CancelAsync();
                    _onTimeout?.Invoke(e);
                }
                throw _timedOut!;
            }
        }
        finally
        {
            _lock.Release();
        }
    }

    private async Task WriteFrameAsync(byte[] header, ReadOnlyMemory<byte> payload, CancellationToken cancellationToken)
    {
        await _stream.WriteAsync(header, cancellationToken);
        if (!payload.IsEmpty)
        {
            await _stream.WriteAsync(payload, cancellationToken);
        }
        await _stream.FlushAsync(cancellationToken);
    }

    private void ThrowIfTimedOut()
    {
        if (_timedOut is { } e)
        {
            throw new FrameWriteTimeoutException(e.Timeout);
        }
    }

    public ValueTask WriteJsonAsync<T>(FrameType type, uint id, T value, JsonTypeInfo<T> typeInfo, CancellationToken cancellationToken = default)
        => WriteAsync(type, id, JsonSerializer.SerializeToUtf8Bytes(value, typeInfo), cancellationToken);

    /// <summary>Sends bytes of any length as consecutive frames of at most <see cref="Frame.ChunkSize"/>.</summary>
    public async ValueTask WriteChunkedAsync(FrameType type, uint id, ReadOnlyMemory<byte> data, CancellationToken cancellationToken = default)
    {
        for (int offset = 0; offset < data.Length; offset += Frame.ChunkSize)
        {
            await WriteAsync(type, id, data.Slice(offset, Math.Min(Frame.ChunkSize, data.Length - offset)), cancellationToken);
        }
    }

    /// <summary>
    /// Nothing to release: the lock has no wait handle and a write that timed out may still hold the
    /// abort token; a write after the stream is closed fails on the stream.
    /// </summary>
    public ValueTask DisposeAsync() => ValueTask.CompletedTask;
}
