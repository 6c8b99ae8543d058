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
    /// </summary>
    public static async Task<List<ArtifactInfo>> ListArtifactsAsync(string root, CancellationToken cancellationToken)
    {
        var found = new List<ArtifactInfo>();
        if (TryDescribe(root)?.Kind != FileKind.Directory)
        {
            return found;
        }
        var pending = new Stack<string>();
        pending.Push(root);
        while (pending.TryPop(out string? dir))
        {
            IEnumerable<string> entries;
            try
            {
                entries = Directory.EnumerateFileSystemEntries(dir).ToList();
            }
            catch (Exception e) when (AgentException.IsIo(e))
            {
                AgentLog.Write($"cannot list {dir}: {e.Message}");
                continue;
            }
            foreach (string entry in entries)
            {
                var info = TryDescribe(entry);
                if (info?.Kind == FileKind.Directory)
                {
                    pending.Push(entry);
                }
                else if (info?.Kind == FileKind.File)
                {
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
            }
        }
        found.Sort((a, b) => string.CompareOrdinal(a.Path, b.Path));
        return found;
    }
}
