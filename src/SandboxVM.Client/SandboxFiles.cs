using System.Text;
using SandboxVM.Client.Internal;

namespace SandboxVM.Client;

/// <summary>
/// The files of one sandbox (<see cref="Sandbox.Files"/>). Relative paths are under the working directory
/// <c>/home/sandbox</c>, where runs start; absolute paths are taken as they are, inside the VM.
/// Uploads and downloads are streamed, not held in memory by the SDK; each call, transfer included, is bounded
/// by <see cref="SandboxClientOptions.Timeout"/> (raise it, or set <see cref="SandboxCreateOptions.RequestTimeout"/>, for very large files).
/// </summary>
public sealed class SandboxFiles
{
    private readonly SandboxClient _client;
    private readonly string _id;

    internal SandboxFiles(SandboxClient client, string id)
    {
        _client = client;
        _id = id;
    }

    /// <summary>Uploads <paramref name="content"/> from its current position to its end as the file at <paramref name="path"/>, replacing it.</summary>
    /// <param name="path">Where in the sandbox, e.g. <c>data/sales.csv</c>; parent directories are created.</param>
    /// <param name="content">What to upload; read, not disposed.</param>
    /// <param name="cancellationToken">Abandons the call.</param>
    /// <returns>The written file.</returns>
    /// <exception cref="FileTooLargeException">The file is larger than the server accepts.</exception>
    /// <exception cref="SandboxInvalidPathException">The server does not accept the path.</exception>
    /// <exception cref="SandboxNotFoundException">The sandbox has ended.</exception>
    /// <exception cref="SandboxApiException">The server answered with another error.</exception>
    /// <exception cref="SandboxConnectionException">The server could not be reached or did not answer in time.</exception>
    public Task<SandboxFileInfo> WriteAsync(string path, Stream content, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(content);
        return _client.SendStreamAsync(HttpMethod.Put, FilesPath(path), content, SandboxJson.Default.SandboxFileInfo, cancellationToken);
    }

    /// <summary>Uploads <paramref name="content"/> as the file at <paramref name="path"/>, replacing it.</summary>
    /// <param name="path">Where in the sandbox; parent directories are created.</param>
    /// <param name="content">The file's bytes.</param>
    /// <param name="cancellationToken">Abandons the call.</param>
    /// <returns>The written file.</returns>
    /// <exception cref="FileTooLargeException">The file is larger than the server accepts.</exception>
    /// <exception cref="SandboxApiException">The server answered with another error.</exception>
    /// <exception cref="SandboxConnectionException">The server could not be reached or did not answer in time.</exception>
    public async Task<SandboxFileInfo> WriteAsync(string path, byte[] content, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(content);
        using var stream = new MemoryStream(content, writable: false);
        return await WriteAsync(path, stream, cancellationToken).ConfigureAwait(false);
    }

    /// <summary>Uploads <paramref name="text"/>, encoded as UTF-8 without a byte order mark, as the file at <paramref name="path"/>.</summary>
    /// <param name="path">Where in the sandbox; parent directories are created.</param>
    /// <param name="text">The file's text.</param>
    /// <param name="cancellationToken">Abandons the call.</param>
    /// <returns>The written file.</returns>
    /// <exception cref="FileTooLargeException">The file is larger than the server accepts.</exception>
    /// <exception cref="SandboxApiException">The server answered with another error.</exception>
    /// <exception cref="SandboxConnectionException">The server could not be reached or did not answer in time.</exception>
    public Task<SandboxFileInfo> WriteAsync(string path, string text, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(text);
        return WriteAsync(path, Encoding.UTF8.GetBytes(text), cancellationToken);
    }

    /// <summary>Downloads the file at <paramref name="path"/>.</summary>
    /// <param name="path">The file in the sandbox.</param>
    /// <param name="cancellationToken">Abandons the call.</param>
    /// <returns>Its bytes.</returns>
    /// <exception cref="SandboxFileNotFoundException">No such file.</exception>
    /// <exception cref="SandboxNotFoundException">The sandbox has ended.</exception>
    /// <exception cref="SandboxApiException">The server answered with another error.</exception>
    /// <exception cref="SandboxConnectionException">The server could not be reached or did not answer in time.</exception>
    public Task<byte[]> ReadAsync(string path, CancellationToken cancellationToken = default) =>
        _client.SendAsync(HttpMethod.Get, FilesPath(path), null, SandboxClient.s_acceptOctets, HttpCompletionOption.ResponseHeadersRead,
            static (response, token) => response.Content.ReadAsByteArrayAsync(token), cancellationToken);

    /// <summary>Downloads the file at <paramref name="path"/> and decodes it as UTF-8.</summary>
    /// <param name="path">The file in the sandbox.</param>
    /// <param name="cancellationToken">Abandons the call.</param>
    /// <returns>Its text.</returns>
    /// <exception cref="SandboxFileNotFoundException">No such file.</exception>
    /// <exception cref="SandboxApiException">The server answered with another error.</exception>
    /// <exception cref="SandboxConnectionException">The server could not be reached or did not answer in time.</exception>
    public async Task<string> ReadTextAsync(string path, CancellationToken cancellationToken = default) =>
        Encoding.UTF8.GetString(await ReadAsync(path, cancellationToken).ConfigureAwait(false));

    /// <summary>Downloads the file at <paramref name="path"/> into <paramref name="destination"/> as it arrives.</summary>
    /// <param name="path">The file in the sandbox.</param>
    /// <param name="destination">Where to write it (e.g. a FileStream); written at its position, not disposed.</param>
    /// <param name="cancellationToken">Abandons the call.</param>
    /// <returns>A task that completes when the whole file has been written.</returns>
    /// <exception cref="SandboxFileNotFoundException">No such file.</exception>
    /// <exception cref="SandboxApiException">The server answered with another error.</exception>
    /// <exception cref="SandboxConnectionException">The server could not be reached, did not answer in time, or the connection broke.</exception>
    public Task ReadToAsync(string path, Stream destination, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(destination);
        return _client.SendAsync(HttpMethod.Get, FilesPath(path), null, SandboxClient.s_acceptOctets, HttpCompletionOption.ResponseHeadersRead,
            async (response, token) =>
            {
                var body = await response.Content.ReadAsStreamAsync(token).ConfigureAwait(false);
                await using (body.ConfigureAwait(false))
                {
                    await body.CopyToAsync(destination, token).ConfigureAwait(false);
                }

                return true;
            },
            cancellationToken);
    }

    /// <summary>
    /// Opens the file at <paramref name="path"/> for reading as it downloads. Dispose the stream to release the
    /// connection. The request time limit covers the call until the download starts; reads from the stream are
    /// bounded only by the token passed to them.
    /// </summary>
    /// <param name="path">The file in the sandbox.</param>
    /// <param name="cancellationToken">Abandons the call.</param>
    /// <returns>A read-only, forward-only stream of the file's bytes.</returns>
    /// <exception cref="SandboxFileNotFoundException">No such file.</exception>
    /// <exception cref="SandboxApiException">The server answered with another error.</exception>
    /// <exception cref="SandboxConnectionException">The server could not be reached or did not answer in time.</exception>
    public async Task<Stream> OpenReadAsync(string path, CancellationToken cancellationToken = default)
    {
        var target = FilesPath(path);
        var response = await _client.SendForResponseAsync(HttpMethod.Get, target, SandboxClient.s_acceptOctets, cancellationToken)
            .ConfigureAwait(false);
        try
        {
            var body = await response.Content.ReadAsStreamAsync(cancellationToken).ConfigureAwait(false);
            return new ResponseStream(response, body);
        }
        catch
        {
            response.Dispose();
            throw;
        }
    }

    /// <summary>Lists a directory.</summary>
    /// <param name="path">The directory in the sandbox; default the working directory.</param>
    /// <param name="cancellationToken">Abandons the call.</param>
    /// <returns>Its entries (files, directories, symlinks), not recursively.</returns>
    /// <exception cref="SandboxFileNotFoundException">No such directory.</exception>
    /// <exception cref="SandboxNotFoundException">The sandbox has ended.</exception>
    /// <exception cref="SandboxApiException">The server answered with another error.</exception>
    /// <exception cref="SandboxConnectionException">The server could not be reached or did not answer in time.</exception>
    public async Task<IReadOnlyList<SandboxFileInfo>> ListAsync(string path = ".", CancellationToken cancellationToken = default)
    {
        var list = await _client.SendJsonAsync(HttpMethod.Get, FilesPath(path) + "&list=true", null, SandboxJson.Default.FileList,
            cancellationToken).ConfigureAwait(false);
        return list.Entries ?? [];
    }

    /// <summary>Removes a file, or a directory with <paramref name="recursive"/>.</summary>
    /// <param name="path">What to remove.</param>
    /// <param name="recursive">Also remove a directory and everything in it.</param>
    /// <param name="cancellationToken">Abandons the call.</param>
    /// <returns>A task that completes when it is gone.</returns>
    /// <exception cref="SandboxFileNotFoundException">Nothing at that path.</exception>
    /// <exception cref="SandboxNotFoundException">The sandbox has ended.</exception>
    /// <exception cref="SandboxApiException">The server answered with another error, e.g. a non-empty directory without <paramref name="recursive"/>.</exception>
    /// <exception cref="SandboxConnectionException">The server could not be reached or did not answer in time.</exception>
    public Task RemoveAsync(string path, bool recursive = false, CancellationToken cancellationToken = default) =>
        _client.SendNoContentAsync(HttpMethod.Delete, FilesPath(path) + (recursive ? "&recursive=true" : ""), cancellationToken);

    /// <summary>Makes a directory and any missing parents.</summary>
    /// <param name="path">The directory to make.</param>
    /// <param name="cancellationToken">Abandons the call.</param>
    /// <returns>The directory.</returns>
    /// <exception cref="SandboxInvalidPathException">The server does not accept the path.</exception>
    /// <exception cref="SandboxNotFoundException">The sandbox has ended.</exception>
    /// <exception cref="SandboxApiException">The server answered with another error.</exception>
    /// <exception cref="SandboxConnectionException">The server could not be reached or did not answer in time.</exception>
    public Task<SandboxFileInfo> MakeDirAsync(string path, CancellationToken cancellationToken = default) =>
        _client.SendJsonAsync(HttpMethod.Post, SandboxClient.SandboxPath(_id, "/files/mkdir?path=" + EscapePath(path)), null,
            SandboxJson.Default.SandboxFileInfo, cancellationToken);

    private string FilesPath(string path) => SandboxClient.SandboxPath(_id, "/files?path=" + EscapePath(path));

    private static string EscapePath(string path)
    {
        ArgumentException.ThrowIfNullOrEmpty(path);
        return Uri.EscapeDataString(path);
    }
}
