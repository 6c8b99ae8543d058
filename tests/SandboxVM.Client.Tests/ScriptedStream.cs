using System.Text;

namespace SandboxVM.Client.Tests;

/// <summary>
/// A response body that arrives in the given pieces: each read returns at most the rest of one chunk, so events can be
/// split anywhere; a gate holds the stream until it is opened; an exception breaks it. Remembers being disposed.
/// </summary>
internal sealed class ScriptedStream : Stream
{
    private readonly Queue<object> _script;
    private byte[] _current = [];
    private int _offset;

    public ScriptedStream(params object[] script) => _script = new Queue<object>(script);

    public bool Disposed { get; private set; }

    public int ReadCalls { get; private set; }

    /// <summary>True once a read has gone past a gate (the content after it was asked for).</summary>
    public int GatesPassed { get; private set; }

    public static ScriptedStream Text(params string[] chunks) => new(chunks.Select(c => (object)Encoding.UTF8.GetBytes(c)).ToArray());

    public override bool CanRead => true;

    public override bool CanSeek => false;

    public override bool CanWrite => false;

    public override long Length => throw new NotSupportedException();

    public override long Position { get => throw new NotSupportedException(); set => throw new NotSupportedException(); }

    public override int Read(byte[] buffer, int offset, int count) =>
        ReadAsync(buffer.AsMemory(offset, count)).AsTask().GetAwaiter().GetResult();

    public override Task<int> ReadAsync(byte[] buffer, int offset, int count, CancellationToken cancellationToken) =>
        ReadAsync(buffer.AsMemory(offset, count), cancellationToken).AsTask();

    public override async ValueTask<int> ReadAsync(Memory<byte> buffer, CancellationToken cancellationToken = default)
    {
        ObjectDisposedException.ThrowIf(Disposed, this);
        ReadCalls++;
        while (_offset >= _current.Length)
        {
            if (!_script.TryDequeue(out var next))
            {
                return 0;
            }

            switch (next)
            {
                case byte[] bytes:
                    _current = bytes;
                    _offset = 0;
                    break;
                case string text:
                    _current = Encoding.UTF8.GetBytes(text);
                    _offset = 0;
                    break;
                case TaskCompletionSource gate:
                    await gate.Task.WaitAsync(cancellationToken);
                    GatesPassed++;
                    break;
                case Exception ex:
                    throw ex;
                default:
                    throw new InvalidOperationException("bad script item " + next);
            }
        }

        var n = Math.Min(buffer.Length, _current.Length - _offset);
        _current.AsMemory(_offset, n).CopyTo(buffer);
        _offset += n;
        return n;
    }

    public override void Flush()
    {
    }

    public override long Seek(long offset, SeekOrigin origin) => throw new NotSupportedException();

    public override void SetLength(long value) => throw new NotSupportedException();

    public override void Write(byte[] buffer, int offset, int count) => throw new NotSupportedException();

    protected override void Dispose(bool disposing)
    {
        Disposed = true;
        base.Dispose(disposing);
    }
}
