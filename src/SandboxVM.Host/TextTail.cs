using System.Text;

namespace SandboxVM.Host;

/// <summary>
/// The last characters of what a process or a guest console wrote, kept for error reports: a
/// misbehaving QEMU, runsc, agent or guest must not grow host memory, however much it writes.
/// </summary>
/// <param name="keep">How many characters are kept (the last ones).</param>
public sealed class TextTail(int keep)
{
    private readonly StringBuilder _text = new();

    /// <summary>Appends everything <paramref name="stream"/> yields (UTF-8) until it ends or breaks; never throws for a closed stream.</summary>
    public async Task PumpAsync(Stream stream)
    {
        ArgumentNullException.ThrowIfNull(stream);
        byte[] buffer = new byte[4096];
        var decoder = Encoding.UTF8.GetDecoder();
        char[] chars = new char[Encoding.UTF8.GetMaxCharCount(buffer.Length)];
        try
        {
            int n;
            while ((n = await stream.ReadAsync(buffer).ConfigureAwait(false)) > 0)
            {
                Append(chars.AsSpan(0, decoder.GetChars(buffer, 0, n, chars, 0)));
            }
        }
        catch (Exception e) when (e is IOException or ObjectDisposedException or System.Net.Sockets.SocketException)
        {
            // The process or socket went away: what was read is the tail.
        }
    }

    /// <summary>The kept tail.</summary>
    public override string ToString()
    {
        lock (_text)
        {
            return _text.ToString();
        }
    }

    private void Append(ReadOnlySpan<char> chars)
    {
        lock (_text)
        {
            _text.Append(chars);
            if (_text.Length > keep)
            {
                _text.Remove(0, _text.Length - keep);
            }
        }
    }
}
