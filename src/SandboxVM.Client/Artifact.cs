using System.Text.Json.Serialization;

namespace SandboxVM.Client;

/// <summary>A file the run left in its outputs directory (<c>/tmp/outputs</c>), e.g. a PNG figure.</summary>
public sealed class Artifact
{
    private const string OutputsPrefix = "/tmp/outputs/";

    /// <summary>Path of the file, relative to the run's outputs directory.</summary>
    public string Path { get; init => field = value ?? ""; } = "";

    /// <summary>MIME type, e.g. <c>image/png</c>.</summary>
    public string Mime { get; init => field = value ?? ""; } = "";

    /// <summary>Size in bytes.</summary>
    public long Size { get; init; }

    /// <summary>Lower-case hex SHA-256 of the content.</summary>
    public string Sha256 { get; init => field = value ?? ""; } = "";

    /// <summary>The file's bytes, or null when the server did not include them (sent as <c>content_base64</c>).</summary>
    [JsonPropertyName("content_base64")]
    public byte[]? Content { get; init; }

    /// <summary>
    /// Writes <see cref="Content"/> to <paramref name="directory"/> under the artifact's <see cref="Path"/>,
    /// creating subdirectories as needed and overwriting an existing file.
    /// </summary>
    /// <param name="directory">Target directory; created if missing.</param>
    /// <param name="cancellationToken">Cancels the write.</param>
    /// <returns>The full path of the written file.</returns>
    /// <exception cref="InvalidOperationException">The response carried no content for this artifact.</exception>
    /// <exception cref="UnauthorizedAccessException">
    /// The artifact's path is absolute or would land outside <paramref name="directory"/> (e.g. <c>../x</c>).
    /// </exception>
    public async Task<string> SaveToAsync(string directory, CancellationToken cancellationToken = default)
    {
        ArgumentException.ThrowIfNullOrEmpty(directory);
        var content = Content ?? throw new InvalidOperationException(
            $"Artifact '{Path}' has no content in the response; only its metadata was returned.");

        var target = ResolveInside(directory, Path);
        Directory.CreateDirectory(System.IO.Path.GetDirectoryName(target)!);
        await File.WriteAllBytesAsync(target, content, cancellationToken).ConfigureAwait(false);
        return target;
    }

    /// <summary>Full path of <paramref name="relative"/> under <paramref name="directory"/>; throws when it escapes.</summary>
    internal static string ResolveInside(string directory, string relative)
    {
        var name = relative.StartsWith(OutputsPrefix, StringComparison.Ordinal)
            ? relative[OutputsPrefix.Length..]
            : relative;
        if (name.Length == 0 || System.IO.Path.IsPathRooted(name))
        {
            throw new UnauthorizedAccessException(
                $"Refusing to save artifact '{relative}': its path must be relative to the output directory.");
        }

        var root = System.IO.Path.TrimEndingDirectorySeparator(System.IO.Path.GetFullPath(directory));
        var target = System.IO.Path.GetFullPath(System.IO.Path.Combine(root, name));
        var comparison = OperatingSystem.IsWindows() || OperatingSystem.IsMacOS()
            ? StringComparison.OrdinalIgnoreCase
            : StringComparison.Ordinal;
        var prefix = System.IO.Path.EndsInDirectorySeparator(root) ? root : root + System.IO.Path.DirectorySeparatorChar;
        if (!target.StartsWith(prefix, comparison) || target.Length <= prefix.Length)
        {
            throw new UnauthorizedAccessException(
                $"Refusing to save artifact '{relative}': it would be written outside '{root}'.");
        }

        return target;
    }

    /// <inheritdoc/>
    public override string ToString() => $"{Path} ({Mime}, {Size} bytes)";
}
