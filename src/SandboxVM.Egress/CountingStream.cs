namespace SandboxVM.Egress;

/// <summary>
/// A duplex stream over a connected socket's stream that counts bytes each way and reports once when
/// disposed. Writes are "up" (sandbox to remote), reads are "down" (remote to sandbox).
/// </summary>
internal sealed class CountingStream : Stream
{
    private readonly Stream _inner;
    private readonly Action<long, long> _onClose;
    // How long to wait after moving so many bytes (a sandbox's bandwidth budget); null: no limit.
    private readonly Func<long, TimeSpan>? _throttle;
    private readonly TimeProvider _time;
    private long _up;
    private long _down;
    private int _closed;

    public CountingStream(Stream inner, Action<long, long> onClose, Func<long, TimeSpan>? throttle = null, TimeProvider? time = null)
    {
        _inner = inner;
        _onClose = onClose;
        _throttle = throttle;
        _time = time ?? TimeProvider.System;
    }

    private void Pace(long bytes)
    {
        if (_throttle?.Invoke(bytes) is { } wait && wait > TimeSpan.Zero)
            Thread.Sleep(wait);
    }

    private Task PaceAsync(long bytes, CancellationToken cancellationToken) =>
        _throttle?.Invoke(bytes) is { } wait && wait > TimeSpan.Zero ? Task.Delay(wait, _time, cancellationToken) : Task.CompletedTask;

    public long BytesUp => Interlocked.Read(ref _up);

    public long BytesDown => Interlocked.Read(ref _down);

    public override bool CanRead => _inner.CanRead;

    public override bool CanWrite => _inner.CanWrite;

    public override bool CanSeek => false;

    public override bool CanTimeout => _inner.CanTimeout;

    public override int ReadTimeout { get => _inner.ReadTimeout; set => _inner.ReadTimeout = value; }

    public override int WriteTimeout { get => _inner.WriteTimeout; set => _inner.WriteTimeout = value; }

    public override long Length => throw new NotSupportedException();

    public override long Position { get => throw new NotSupportedException(); set => throw new NotSupportedException(); }

    public override int Read(byte[] buffer, int offset, int count) => Read(buffer.AsSpan(offset, count));

    public override int Read(Span<byte> buffer)
    {
        var n = _inner.Read(buffer);
        Interlocked.Add(ref _down, n);
        Pace(n);
        return n;
    }

    public override Task<int> ReadAsync(byte[] buffer, int offset, int count, CancellationToken cancellationToken) =>
        ReadAsync(buffer.AsMemory(offset, count), cancellationToken).AsTask();

    public override async ValueTask<int> ReadAsync(Memory<byte> buffer, CancellationToken cancellationToken = default)
    {
        var n = await _inner.ReadAsync(buffer, cancellationToken);
        Interlocked.Add(ref _down, n);
        // Paced after the read: the next read waits, so the remote side meets TCP back-pressure.
        await PaceAsync(n, cancellationToken);
        return n;
    }

    public override void Write(byte[] buffer, int offset, int count) => Write(buffer.AsSpan(offset, count));

    public override void Write(ReadOnlySpan<byte> buffer)
    {
        Pace(buffer.Length);
        _inner.Write(buffer);
        Interlocked.Add(ref _up, buffer.Length);
    }

    public override Task WriteAsync(byte[] buffer, int offset, int count, CancellationToken cancellationToken) =>
        WriteAsync(buffer.AsMemory(offset, count), cancellationToken).AsTask();

    public override async ValueTask WriteAsync(ReadOnlyMemory<byte> buffer, CancellationToken cancellationToken = default)
    {
        await PaceAsync(buffer.Length, cancellationToken);
        await _inner.WriteAsync(buffer, cancellationToken);
        Interlocked.Add(ref _up, buffer.Length);
    }

    public override void Flush() => _inner.Flush();

    public override Task FlushAsync(CancellationToken cancellationToken) => _inner.FlushAsync(cancellationToken);

    public override long Seek(long offset, SeekOrigin origin) => throw new NotSupportedException();

    public override void SetLength(long value) => throw new NotSupportedException();

    protected override void Dispose(bool disposing)
    {
        if (disposing && Interlocked.Exchange(ref _closed, 1) == 0)
        {
            try
            {
                _inner.Dispose();
            }
            finally
            {
                _onClose(BytesUp, BytesDown);
            }
        }

        base.Dispose(disposing);
    }

    public override async ValueTask DisposeAsync()
    {
        if (Interlocked.Exchange(ref _closed, 1) == 0)
        {
            try
            {
                await _inner.DisposeAsync();
            }
            finally
            {
                _onClose(BytesUp, BytesDown);
            }
        }

        GC.SuppressFinalize(this);
        await base.DisposeAsync();
    }
}
