using System.Net;
using System.Net.Http.Headers;

namespace SandboxVM.Client.Internal;

/// <summary>
/// Streams a caller's stream as a request body without buffering it and without disposing it (StreamContent
/// disposes its stream). A seekable stream is sent from its current position with a Content-Length, and rewound
/// there if the handler has to send the body again; any other stream is sent chunked.
/// </summary>
internal sealed class UploadContent : HttpContent
{
    private const int BufferSize = 81920;
    private readonly Stream _source;
    private readonly long _start;
    private bool _sent;

    public UploadContent(Stream source)
    {
        _source = source;
        _start = source.CanSeek ? source.Position : -1;
        Headers.ContentType = new MediaTypeHeaderValue("application/octet-stream");
    }

    protected override Task SerializeToStreamAsync(Stream stream, TransportContext? context) =>
        SerializeToStreamAsync(stream, context, CancellationToken.None);

    protected override async Task SerializeToStreamAsync(Stream stream, TransportContext? context, CancellationToken cancellationToken)
    {
        if (_sent)
        {
            if (_start < 0)
            {
                throw new InvalidOperationException("The upload stream cannot be sent twice: it is not seekable.");
            }

            _source.Position = _start;
        }

        _sent = true;
        await _source.CopyToAsync(stream, BufferSize, cancellationToken).ConfigureAwait(false);
    }

    protected override bool TryComputeLength(out long length)
    {
        length = _start >= 0 ? Math.Max(0, _source.Length - _start) : 0;
        return _start >= 0;
    }
}
