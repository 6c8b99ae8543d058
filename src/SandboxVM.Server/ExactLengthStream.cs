using SandboxVM.Core.Runs;

namespace SandboxVM.Server;

/// <summary>
/// The body of a file download, whose Content-Length is the size the guest's stat gave: it refuses the
/// first write that would go past that size (before writing it), so a file that grew while it was read,
/// or a pseudo-file whose stat says 0 bytes (/proc, /sys), is a problem the endpoint answers, not a
/// response the server cannot finish (which answered 500).
/// </summary>
internal sealed class ExactLengthStream(Stream inner, long length, string path) : Stream
{
    private long _written;

    /// <summary>Bytes written so far.</summary>
    public long Written => _written;

    public override async ValueTask WriteAsync(ReadOnlyMemory<byte> buffer, CancellationToken cancellationToken = default)
    {
        if (buffer.Length > length - _written)
        {
            throw length == 0
                ? new RunRequestException(ProblemCodes.NotRegularFile, "path",
                    $"'{path}' has content but a size of 0: a pseudo-file (/proc, /sys) cannot be downloaded; print it from a run", RefusalKind.Invalid)
                : Changed();
        }
        await inner.WriteAsync(buffer, cancellationToken);
        _written += buffer.Length;
    }

    /// <summary>The file was not as long as its size said by the time it was read.</summary>
    public RunRequestException Changed() =>
        new(ProblemCodes.FileChanged, "path", $"'{path}' changed while it was read (its size was {length} bytes); try again", RefusalKind.Conflict);

    public override Task WriteAsync(byte[] buffer, int offset, int count, CancellationToken cancellationToken) =>
        WriteAsync(buffer.AsMemory(offset, count), cancellationToken).AsTask();

    public override void Write(byte[] buffer, int offset, int count) => throw new NotSupportedException("write asynchronously");
    public override Task FlushAsync(CancellationToken cancellationToken) => inner.FlushAsync(cancellationToken);
    public override void Flush() => throw new NotSupportedException("flush asynchronously");
    public override bool CanRead => false;
    public override bool CanSeek => false;
    public override bool CanWrite => true;
    public override long Length => throw new NotSupportedException();
    public override long Position { get => _written; set => throw new NotSupportedException(); }
    public override int Read(byte[] buffer, int offset, int count) => throw new NotSupportedException();
    public override long Seek(long offset, SeekOrigin origin) => throw new NotSupportedException();
    public override void SetLength(long value) => throw new NotSupportedException();
}
