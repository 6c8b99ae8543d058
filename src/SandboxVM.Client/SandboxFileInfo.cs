using System.Text.Json.Serialization;
using SandboxVM.Client.Internal;

namespace SandboxVM.Client;

/// <summary>A file or directory inside a sandbox (<c>FileInfo</c> on the wire).</summary>
public sealed class SandboxFileInfo
{
    /// <summary>Full path inside the VM.</summary>
    public string Path { get; init => field = value ?? ""; } = "";

    /// <summary>Last element of <see cref="Path"/>.</summary>
    public string Name { get; init => field = value ?? ""; } = "";

    /// <summary>File, directory, symlink or other.</summary>
    public SandboxFileKind Kind { get; init; }

    /// <summary>Size in bytes.</summary>
    public long Size { get; init; }

    /// <summary>Last modification time; null when the server did not say.</summary>
    public DateTimeOffset? Mtime { get; init; }

    /// <summary>True for a directory.</summary>
    [JsonIgnore]
    public bool IsDirectory => Kind == SandboxFileKind.Directory;

    /// <inheritdoc/>
    public override string ToString() => IsDirectory ? Path + "/" : $"{Path} ({Size} bytes)";
}

/// <summary>What kind of entry a <see cref="SandboxFileInfo"/> is (<c>kind</c> on the wire).</summary>
[JsonConverter(typeof(SandboxFileKindConverter))]
public enum SandboxFileKind
{
    /// <summary>A kind this version of the SDK does not know, or none was sent.</summary>
    Unknown = 0,

    /// <summary><c>file</c>: a regular file.</summary>
    File,

    /// <summary><c>directory</c>.</summary>
    Directory,

    /// <summary><c>symlink</c>: a symbolic link (not followed).</summary>
    Symlink,

    /// <summary><c>other</c>: a device, socket or pipe.</summary>
    Other,
}
