using System.Text;

namespace SandboxVM.Client.Internal;

/// <summary>One dispatched server-sent event: its type (<c>message</c> when none was named) and its data lines joined by <c>\n</c>.</summary>
internal readonly record struct ServerSentEvent(string Type, string Data);

/// <summary>
/// Reads <c>text/event-stream</c> (the WHATWG server-sent events format) from a stream, as it arrives:
/// lines end with LF, CRLF or CR; <c>:</c> lines are comments (keep-alives); several <c>data:</c> lines join with LF;
/// a blank line dispatches the event; an event without data is dropped; an event not closed by a blank line
/// before the end of the stream is discarded. <c>id</c> and <c>retry</c> are ignored (no reconnection).
/// </summary>
internal sealed class ServerSentEventReader : IDisposable
{
    private readonly StreamReader _reader;

    public ServerSentEventReader(Stream stream) =>
        _reader = new StreamReader(stream, new UTF8Encoding(false), detectEncodingFromByteOrderMarks: true, bufferSize: 4096, leaveOpen: true);

    /// <summary>The next event, or null at the end of the stream.</summary>
    public async ValueTask<ServerSentEvent?> ReadAsync(CancellationToken cancellationToken)
    {
        string? type = null;
        StringBuilder? data = null;
        while (true)
        {
            var line = await _reader.ReadLineAsync(cancellationToken).ConfigureAwait(false);
            if (line is null)
            {
                return null;
            }

            if (line.Length == 0)
            {
                if (data is not null)
                {
                    return new ServerSentEvent(string.IsNullOrEmpty(type) ? "message" : type, data.ToString());
                }

                type = null;
                continue;
            }

            if (line[0] == ':')
            {
                continue;
            }

            var colon = line.IndexOf(':', StringComparison.Ordinal);
            var field = colon < 0 ? line : line[..colon];
            var value = colon < 0 ? "" : line[(colon + 1)..];
            if (value.StartsWith(' '))
            {
                value = value[1..];
            }

            switch (field)
            {
                case "event":
                    type = value;
                    break;
                case "data":
                    if (data is null)
                    {
                        data = new StringBuilder(value);
                    }
                    else
                    {
                        data.Append('\n').Append(value);
                    }

                    break;
            }
        }
    }

    public void Dispose() => _reader.Dispose();
}
