using System.Security.Cryptography;
using SandboxVM.Agent.Native;
using SandboxVM.Protocol;

namespace SandboxVM.Agent.Operations;

/// <summary>File metadata and artifact listing, shared by the file ops and exec.</summary>
internal static class FileSystem
{
    /// <summary>Metadata of <paramref name="path"/> (a symlink is described, not followed).</summary>
    public static FileInfoBody Describe(string path)
    {
        int errno = Libc.Stat(path, out var status);
        if (errno != 0)
        {
            throw Libc.IsNotFound(errno)
                ? AgentException.NotFound(path)
                : new AgentException(ErrorCodes.IoError, $"{path}: {Libc.DescribeErrno(errno)}");
        }
        return new FileInfoBody
        {
            Path = path,
            Name = path == "/" ? "/" : Path.GetFileName(path),
            Kind = status.Kind switch
            {
                FileKindBits.Regular => FileKind.File,
                FileKindBits.Directory => FileKind.Directory,
                FileKindBits.Symlink => FileKind.Symlink,
                _ => FileKind.Other,
            },
            Size = status.Size,
            MtimeMs = status.MtimeMs,
        };
    }

    /// <summary>Like <see cref="Describe"/>, or null when nothing is there.</summary>
    public static FileInfoBody? TryDescribe(string path)
    {
        try
        {
            return Describe(path);
        }
        catch (AgentException e) when (e.Code == ErrorCodes.NotFound)
        {
            return null;
        }
    }

    /// <summary>
    /// Every regular file under <paramref name="root"/> (recursively, symlinks not followed, other
    /// kinds skipped) with its size and SHA-256, sorted by path. A missing directory has none.
    /// With <paramref name="before"/> (a <see cref="Snapshot"/>), only files that are new or whose
    /// stamp differs from it.
    /// </summary>
    public static async Task<List<ArtifactInfo>> ListArtifactsAsync(string root, CancellationToken cancellationToken,
        IReadOnlyDictionary<string, FileStamp>? before = null)
    {
        var found = new List<ArtifactInfo>();
        foreach (var (entry, status) in RegularFiles(root))
        {
            if (before is not null && before.TryGetValue(entry, out var stamp) && stamp == FileStamp.Of(status))
            {
                continue;
            }
            try
            {
                await using var stream = new FileStream(entry, FileMode.Open, FileAccess.Read, FileShare.ReadWrite, bufferSize: 0);
                byte[] hash = await SHA256.HashDataAsync(stream, cancellationToken);
                found.Add(new ArtifactInfo { Path = entry, Size = stream.Length, Sha256 = Convert.ToHexStringLower(hash) });
            }
            catch (Exception e) when (AgentException.IsIo(e))
            {
                AgentLog.Write($"cannot hash {entry}: {e.Message}");
            }
        }
        found.Sort((a, b) => string.CompareOrdinal(a.Path, b.Path));
        return found;
    }

    /// <summary>The stamp of every regular file under <paramref name="root"/>, by path (see <see cref="ListArtifactsAsync"/>).</summary>
    public static Dictionary<string, FileStamp> Snapshot(string root)
    {
        var stamps = new Dictionary<string, FileStamp>(StringComparer.Ordinal);
        foreach (var (entry, status) in RegularFiles(root))
        {
            stamps[entry] = FileStamp.Of(status);
        }
        return stamps;
    }

    /// <summary>Regular files under <paramref name="root"/>, recursively, without following symlinks; none when it is no directory.</summary>
    private static IEnumerable<(string Path, FileStatus Status)> RegularFiles(string root)
    {
        if (TryDescribe(root)?.Kind != FileKind.Directory)
        {
            yield break;
        }
        var pending = new Stack<string>();
        pending.Push(root);
        while (pending.TryPop(out string? dir))
        {
            List<string> entries;
            try
            {
                entries = [.. Directory.EnumerateFileSystemEntries(dir)];
            }
            catch (Exception e) when (AgentException.IsIo(e))
            {
                AgentLog.Write($"cannot list {dir}: {e.Message}");
                continue;
            }
            foreach (string entry in entries)
            {
                if (Libc.Stat(entry, out var status) != 0)
                {
                    continue; // gone meanwhile
                }
                if (status.Kind == FileKindBits.Directory)
                {
                    pending.Push(entry);
                }
                else if (status.Kind == FileKindBits.Regular)
                {
                    yield return (entry, status);
                }
            }
        }
    }
}

/// <summary>
/// What tells a file's content changed without reading it: size, modification time (ns) and inode (a
/// file replaced by rename has another).
/// </summary>
internal readonly record struct FileStamp(long Size, long MtimeNs, ulong Inode)
{
    public static FileStamp Of(FileStatus status) => new(status.Size, status.MtimeNs, status.Inode);
}
