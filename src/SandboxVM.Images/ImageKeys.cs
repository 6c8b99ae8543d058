using System.Globalization;
using System.Security.Cryptography;
using System.Text;

namespace SandboxVM.Images;

/// <summary>Cache keys of the build phases: lowercase hex SHA-256 over a canonical encoding of each
/// phase's inputs, so an unchanged input always maps to the same directory.</summary>
public static class ImageKeys
{
    /// <summary>Bump when the builder's output for the same inputs changes (layout, users, dpkg filters):
    /// every image is then rebuilt once.</summary>
    public const int BuilderVersion = 1;

    /// <summary>How build steps run, part of the key of a base that has any (see <see cref="BuildStepSandbox"/>).</summary>
    internal const string StepsRunAs = "userns-root-2";

    /// <summary>Key of the <c>base</c> phase: suite, packages (order and duplicates do not matter),
    /// build steps (order matters) and <see cref="BuilderVersion"/>. For an OCI image: the reference as
    /// written (pin it with <c>@sha256:</c> to follow content), or a layout's manifest digest (read from its
    /// <c>index.json</c>, so a layout whose tag moves gives a new key).</summary>
    public static string Base(ImageSpec spec)
    {
        ArgumentNullException.ThrowIfNull(spec);
        var sb = new StringBuilder();
        Field(sb, "phase", "base");
        Field(sb, "builder", BuilderVersion.ToString(CultureInfo.InvariantCulture));
        Field(sb, "source", spec.SourceType);
        if (spec.Oci is { } oci)
        {
            if (oci.LayoutPath is not null)
                Field(sb, "manifest", OciLayout.ResolveManifest(oci.LayoutPath, oci.Tag).Digest);
            else
                Field(sb, "reference", oci.Reference ?? "");
        }
        Field(sb, "suite", spec.Suite);
        foreach (var p in spec.Packages.Distinct(StringComparer.Ordinal).Order(StringComparer.Ordinal))
            Field(sb, "package", p);
        foreach (var step in spec.BuildSteps)
            Field(sb, "step", step);
        // How steps run: as root of a user namespace (not host root) since version 2. Images without
        // steps keep their key.
        if (spec.BuildSteps.Count > 0)
            Field(sb, "steps-run-as", StepsRunAs);
        return Hash(sb);
    }

    /// <summary>Key of the <c>rootfs</c> phase: the base key, the agent binary's SHA-256 and, when the
    /// template has a <c>files</c> tree, its <see cref="HashTree"/> (absent: the key is as before files existed).</summary>
    public static string Rootfs(string baseKey, string agentSha256, string? filesSha256 = null)
    {
        var sb = new StringBuilder();
        Field(sb, "phase", "rootfs");
        Field(sb, "base", baseKey);
        Field(sb, "agent", agentSha256);
        if (filesSha256 is not null)
            Field(sb, "files", filesSha256);
        return Hash(sb);
    }

    /// <summary>
    /// SHA-256 over a directory tree: every regular file's path relative to <paramref name="root"/> (ordinal
    /// order, '/' separated), whether it is executable, and its content. Directories count only through
    /// their files. Throws <see cref="InvalidDataException"/> for anything else (symlinks, devices).
    /// </summary>
    public static string HashTree(string root)
    {
        var sb = new StringBuilder();
        Field(sb, "tree", "1");
        foreach (var (relative, full) in TreeFiles(root))
        {
            Field(sb, "file", relative);
            Field(sb, "exec", IsExecutable(full) ? "1" : "0");
            using var stream = File.OpenRead(full);
            Field(sb, "sha256", Convert.ToHexStringLower(SHA256.HashData(stream)));
        }
        return Hash(sb);
    }

    /// <summary>The regular files under <paramref name="root"/> as (relative path with '/', full path), in ordinal order.</summary>
    public static IReadOnlyList<(string Relative, string Full)> TreeFiles(string root)
    {
        var full = Path.GetFullPath(root);
        var result = new List<(string, string)>();
        foreach (var entry in new DirectoryInfo(full).EnumerateFileSystemInfos("*", new EnumerationOptions { RecurseSubdirectories = true, AttributesToSkip = 0 }))
        {
            var relative = Path.GetRelativePath(full, entry.FullName).Replace(Path.DirectorySeparatorChar, '/');
            if (entry.LinkTarget is not null)
                throw new InvalidDataException($"{entry.FullName}: template files may not be symbolic links");
            if (entry is DirectoryInfo)
                continue;
            result.Add((relative, entry.FullName));
        }
        result.Sort((a, b) => string.CompareOrdinal(a.Item1, b.Item1));
        return result;
    }

    internal static bool IsExecutable(string path) =>
        !OperatingSystem.IsWindows() && (File.GetUnixFileMode(path) & UnixFileMode.UserExecute) != 0;

    /// <summary>Key of the <c>ext4</c> phase: the rootfs key and the disk size.</summary>
    public static string Ext4(string rootfsKey, int diskMib)
    {
        var sb = new StringBuilder();
        Field(sb, "phase", "ext4");
        Field(sb, "builder", BuilderVersion.ToString(CultureInfo.InvariantCulture));
        Field(sb, "rootfs", rootfsKey);
        Field(sb, "disk_mib", diskMib.ToString(CultureInfo.InvariantCulture));
        return Hash(sb);
    }

    /// <summary>SHA-256 of a file's bytes, lowercase hex.</summary>
    public static async Task<string> HashFileAsync(string path, CancellationToken cancellationToken)
    {
        await using var stream = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.Read, 1 << 16, FileOptions.Asynchronous | FileOptions.SequentialScan);
        return Convert.ToHexStringLower(await SHA256.HashDataAsync(stream, cancellationToken).ConfigureAwait(false));
    }

    // Length-prefixed so that e.g. packages [a,bc] and [ab,c] never encode the same.
    private static void Field(StringBuilder sb, string name, string value) =>
        sb.Append(name).Append(' ').Append(Encoding.UTF8.GetByteCount(value)).Append(':').Append(value).Append('\n');

    private static string Hash(StringBuilder sb) =>
        Convert.ToHexStringLower(SHA256.HashData(Encoding.UTF8.GetBytes(sb.ToString())));
}
