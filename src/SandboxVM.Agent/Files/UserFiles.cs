using System.Security.Cryptography;
using System.Text;
using Microsoft.Win32.SafeHandles;
using SandboxVM.Agent.Native;
using SandboxVM.Protocol;

namespace SandboxVM.Agent.Files;

/// <summary>
/// Every file operation the agent does on a user's behalf: each path syscall on a <see cref="PathThreads"/>
/// thread with that user's filesystem identity, a final component never followed (O_NOFOLLOW, lstat
/// first), only regular files opened (a symlink, FIFO, device or socket is refused with
/// <see cref="ErrorCodes.NotRegularFile"/>), written files with one link only (<see cref="ErrorCodes.HardLinked"/>),
/// and trees walked through directory descriptors, never by re-resolving a path the user could swap.
/// Paths are absolute and normalised (<see cref="Path.GetFullPath(string)"/>).
/// </summary>
internal static class UserFiles
{
    /// <summary>rw-r--r--, what a new file gets unless asked otherwise (less the umask).</summary>
    public const int DefaultFileMode = 0b110_100_100;

    /// <summary>rwxr-xr-x, new directories (less the umask).</summary>
    private const int DirectoryMode = 0b111_101_101;

    /// <summary>Directory levels a walk or recursive removal descends (one descriptor per level is open).</summary>
    public const int MaxDepth = 256;

    /// <summary>Entries one walk job reads before it hands them back (the hashing happens off the path threads).</summary>
    private const int WalkBatch = 64;

    public static Task<FileInfoBody> DescribeAsync(SandboxUser who, string path) => PathThreads.RunAsync(who, () => Describe(path));

    /// <summary>Like <see cref="DescribeAsync"/>, or null when nothing is there.</summary>
    public static Task<FileInfoBody?> TryDescribeAsync(SandboxUser who, string path) => PathThreads.RunAsync(who, () => TryDescribe(path));

    /// <summary>Opens a regular file for reading; anything else is refused. The status is the open file's.</summary>
    public static Task<(SafeFileHandle Handle, FileStatus Status)> OpenReadAsync(SandboxUser who, string path) =>
        PathThreads.RunAsync(who, () =>
        {
            using var parent = OpenParent(path, out byte[] name);
            var named = StatOrFail(parent, name, path);
            RequireRegular(named, path);
            int errno = Libc.OpenAt(parent, name, OpenFlags.ReadOnly | OpenFlags.NoFollow, 0, out var handle);
            if (errno != 0)
            {
                throw errno == Libc.ELoop ? NotRegular(path, FileKindBits.Symlink) : Fail(errno, path);
            }
            return (handle, CheckOpened(handle, path, forWrite: false));
        });

    /// <summary>
    /// Opens a regular file for writing, created with <paramref name="mode"/> (less the umask) and owned by
    /// <paramref name="who"/> when missing, else emptied. A symlink, FIFO, device, socket or a file with
    /// more than one link is refused before anything is written. With <paramref name="keepExisting"/> an
    /// existing file is left alone and null is returned.
    /// </summary>
    public static Task<SafeFileHandle?> OpenWriteAsync(SandboxUser who, string path, int mode, bool keepExisting = false) =>
        PathThreads.RunAsync(who, () => OpenWrite(path, mode, keepExisting));

    private static SafeFileHandle? OpenWrite(string path, int mode, bool keepExisting)
    {
        using var parent = OpenParent(path, out byte[] name);
        int errno = Libc.StatAt(parent, name, out var named);
        if (errno == 0)
        {
            if (keepExisting)
            {
                return null;
            }
            RequireRegular(named, path);
            RequireSingleLink(named, path);
        }
        else if (!Libc.IsNotFound(errno))
        {
            throw Fail(errno, path);
        }
        var flags = OpenFlags.WriteOnly | OpenFlags.Create | OpenFlags.NoFollow | (keepExisting ? OpenFlags.Exclusive : 0);
        errno = Libc.OpenAt(parent, name, flags, mode & 0x1ff, out var handle);
        if (errno == Libc.EExist && keepExisting)
        {
            return null;
        }
        if (errno != 0)
        {
            throw errno switch
            {
                Libc.ELoop => NotRegular(path, FileKindBits.Symlink),
                // O_NONBLOCK|O_WRONLY on a FIFO nobody reads (swapped in after the lstat).
                Libc.ENxIo => NotRegular(path, FileKindBits.Fifo),
                _ => Fail(errno, path),
            };
        }
        try
        {
            CheckOpened(handle, path, forWrite: true);
            errno = Libc.Truncate(handle, 0);
            if (errno != 0)
            {
                throw Fail(errno, path);
            }
            return handle;
        }
        catch
        {
            handle.Dispose();
            throw;
        }
    }

    /// <summary>A directory and what it holds (entries not followed), sorted by name.</summary>
    public static Task<FileListBody> ListAsync(SandboxUser who, string path) => PathThreads.RunAsync(who, () =>
    {
        if (Describe(path).Kind != FileKind.Directory)
        {
            throw new AgentException(ErrorCodes.IoError, $"{path}: not a directory");
        }
        using var dir = OpenDirectory(path, follow: false);
        var names = new List<byte[]>();
        int errno = Libc.ReadDirectory(dir, names);
        if (errno != 0)
        {
            throw Fail(errno, path);
        }
        var body = new FileListBody { Path = path };
        foreach (byte[] name in names)
        {
            // An entry removed while listing is simply left out.
            if (Libc.StatAt(dir, name, out var status) == 0)
            {
                body.Entries.Add(Info(Path.Combine(path, Encoding.UTF8.GetString(name)), status));
            }
        }
        body.Entries.Sort((a, b) => string.CompareOrdinal(a.Name, b.Name));
        return body;
    });

    /// <summary>Removes a file, symlink (not its target), other entry, empty directory, or with <paramref name="recursive"/> a whole tree.</summary>
    public static Task RemoveAsync(SandboxUser who, string path, bool recursive) => PathThreads.RunAsync(who, () => Remove(path, recursive));

    /// <summary>Creates a directory (with <paramref name="parents"/>, the missing levels above it too); an existing one is fine.</summary>
    public static Task<FileInfoBody> MakeDirectoryAsync(SandboxUser who, string path, bool parents) =>
        PathThreads.RunAsync(who, () => MakeDirectory(path, parents));

    private static FileInfoBody MakeDirectory(string path, bool parents)
    {
        if (TryDescribe(path) is { } existing)
        {
            return existing.Kind == FileKind.Directory
                ? existing
                : throw new AgentException(ErrorCodes.IoError, $"{path}: exists and is not a directory");
        }
        if (parents)
        {
            MakeDirectories(path);
        }
        else
        {
            using var parent = OpenParent(path, out byte[] name);
            int errno = Libc.MakeDirectoryAt(parent, name, DirectoryMode);
            if (errno != 0 && errno != Libc.EExist)
            {
                throw Fail(errno, path);
            }
        }
        return Describe(path);
    }

    /// <summary>
    /// Everything an exec does to files before its steps, in one path-thread job: the working directory
    /// (made when <paramref name="cwd"/> is null, then opened), the source files (parents made, written,
    /// refused over anything but a single-link regular file), and the outputs directory, emptied, or with
    /// <paramref name="keepOutputs"/> made if missing and its files' stamps returned.
    /// </summary>
    public static Task<(SafeFileHandle Cwd, Dictionary<string, FileStamp>? Before)> PrepareExecAsync(SandboxUser who, string cwdPath,
        SafeFileHandle? cwd, IReadOnlyList<(string Path, byte[] Content)> files, string outputs, bool keepOutputs) =>
        PathThreads.RunAsync(who, () =>
        {
            if (cwd is null)
            {
                MakeDirectory(cwdPath, parents: true);
            }
            var opened = cwd ?? OpenDirectory(cwdPath, follow: false);
            try
            {
                foreach (var (path, content) in files)
                {
                    MakeDirectory(Path.GetDirectoryName(path) ?? "/", parents: true);
                    using var handle = OpenWrite(path, DefaultFileMode, keepExisting: false)!;
                    try
                    {
                        RandomAccess.Write(handle, content, 0);
                    }
                    catch (Exception e) when (AgentException.IsIo(e))
                    {
                        throw AgentException.FromIo(e, path);
                    }
                }
                Dictionary<string, FileStamp>? before = null;
                var existing = TryDescribe(outputs);
                if (keepOutputs)
                {
                    if (existing is { Kind: not FileKind.Directory })
                    {
                        Remove(outputs, recursive: false);
                    }
                    MakeDirectory(outputs, parents: true);
                    before = [];
                    using var walk = new TreeWalk(outputs);
                    while (true)
                    {
                        var (batch, done) = walk.Next(open: false, skip: null);
                        foreach (var file in batch)
                        {
                            before[file.Path] = FileStamp.Of(file.Status);
                        }
                        if (done)
                        {
                            break;
                        }
                    }
                }
                else
                {
                    if (existing is not null)
                    {
                        Remove(outputs, recursive: true);
                    }
                    MakeDirectory(outputs, parents: true);
                }
                return (opened, before);
            }
            catch
            {
                if (cwd is null)
                {
                    opened.Dispose();
                }
                throw;
            }
        });

    /// <summary>A directory opened for use as a working directory (fchdir), following symlinks as the user would.</summary>
    public static Task<SafeFileHandle> OpenDirectoryAsync(SandboxUser who, string path) =>
        PathThreads.RunAsync(who, () => OpenDirectory(path, follow: true));

    /// <summary>Gives an existing directory (not a symlink) to <paramref name="user"/>, as the agent; nothing to do for <see cref="SandboxUser.Self"/>.</summary>
    public static Task GiveDirectoryAsync(string path, SandboxUser user) => PathThreads.RunAsync(SandboxUser.Self, () =>
    {
        if (!user.Switches)
        {
            return;
        }
        using var dir = OpenDirectory(path, follow: false);
        int errno = Libc.Fchown(dir, user.Uid!.Value, user.Gid!.Value);
        if (errno != 0)
        {
            throw Fail(errno, path);
        }
    });

    /// <summary>A fresh 0700 directory <c>PARENT/PREFIXrandom</c> of <paramref name="who"/>; returns its path.</summary>
    public static Task<string> CreatePrivateDirectoryAsync(SandboxUser who, string parent, string prefix) => PathThreads.RunAsync(who, () =>
    {
        using var dir = OpenDirectory(parent, follow: true);
        for (int attempt = 0; ; attempt++)
        {
            string name = prefix + Convert.ToHexStringLower(RandomNumberGenerator.GetBytes(6));
            int errno = Libc.MakeDirectoryAt(dir, Encoding.UTF8.GetBytes(name), 0b111_000_000);
            if (errno == 0)
            {
                return Path.Combine(parent, name);
            }
            if (errno != Libc.EExist || attempt > 10)
            {
                throw Fail(errno, Path.Combine(parent, name));
            }
        }
    });

    /// <summary>A symlink at <paramref name="path"/> to <paramref name="target"/>; false when something is already there.</summary>
    public static Task<bool> CreateSymlinkAsync(SandboxUser who, string target, string path) => PathThreads.RunAsync(who, () =>
    {
        using var parent = OpenParent(path, out byte[] name);
        int errno = Libc.SymlinkAt(target, parent, name);
        return errno == 0 || (errno == Libc.EExist ? false : throw Fail(errno, path));
    });

    /// <summary>
    /// argv[0] looked up the way a shell would, but on the step's own PATH and with the user's permissions
    /// (a regular file the user may execute). Names with a slash are taken relative to the working directory.
    /// </summary>
    public static Task<string?> ResolveExecutableAsync(SandboxUser who, string name, string cwd, string? pathVariable)
    {
        if (name.Contains('/', StringComparison.Ordinal))
        {
            return Task.FromResult<string?>(Path.GetFullPath(name, cwd));
        }
        return PathThreads.RunAsync(who, () =>
        {
            foreach (string dir in (pathVariable ?? "").Split(':', StringSplitOptions.RemoveEmptyEntries))
            {
                string candidate = Path.Combine(Path.GetFullPath(dir, cwd), name);
                if (Libc.StatAt(null, candidate, follow: true, out var status) == 0 && status.Kind == FileKindBits.Regular
                    && Libc.CanExecute(candidate))
                {
                    return candidate;
                }
            }
            return (string?)null;
        });
    }

    /// <summary>Connects to a unix socket as <paramref name="who"/> (who must be allowed to write to it). Throws <see cref="IOException"/>.</summary>
    public static Task<SafeFileHandle> ConnectUnixAsync(SandboxUser who, string path) => PathThreads.RunAsync(who, () => Libc.ConnectUnix(path));

    /// <summary>
    /// Every regular file under <paramref name="root"/> (recursively, symlinks never followed, other kinds
    /// skipped) with its size and SHA-256, sorted by path; none when root is no directory. Each file is
    /// hashed through the descriptor the walk opened, up to the size it had then: a file that grows
    /// meanwhile is cut there and its reported size is what was hashed. With <paramref name="before"/> (see
    /// <see cref="PrepareExecAsync"/>), only files that are new or whose stamp differs.
    /// </summary>
    public static async Task<List<ArtifactInfo>> ListArtifactsAsync(SandboxUser who, string root, CancellationToken cancellationToken,
        IReadOnlyDictionary<string, FileStamp>? before = null)
    {
        var found = new List<ArtifactInfo>();
        await foreach (var batch in WalkArtifactsAsync(who, root, open: true, before))
        {
            foreach (var file in batch)
            {
                using var handle = file.Handle!;
                try
                {
                    var (size, hash) = await HashAsync(handle, file.Status.Size, cancellationToken);
                    found.Add(new ArtifactInfo { Path = file.Path, Size = size, Sha256 = hash });
                }
                catch (Exception e) when (AgentException.IsIo(e))
                {
                    AgentLog.Write($"cannot hash {file.Path}: {e.Message}");
                }
            }
        }
        found.Sort((a, b) => string.CompareOrdinal(a.Path, b.Path));
        return found;
    }

    /// <summary>
    /// Whether <see cref="ListArtifactsAsync"/> would find a file under <paramref name="root"/> (with
    /// <paramref name="before"/>: a new or changed one), without opening or hashing any.
    /// </summary>
    public static async Task<bool> HoldsArtifactsAsync(SandboxUser who, string root, IReadOnlyDictionary<string, FileStamp>? before = null)
    {
        await foreach (var batch in WalkArtifactsAsync(who, root, open: false, before))
        {
            if (batch.Count > 0)
            {
                return true;
            }
        }
        return false;
    }

    /// <summary>The regular files under <paramref name="root"/> in batches, each walked on a path thread as <paramref name="who"/>; with <paramref name="before"/>, unchanged ones left out.</summary>
    private static async IAsyncEnumerable<List<WalkedFile>> WalkArtifactsAsync(SandboxUser who, string root, bool open, IReadOnlyDictionary<string, FileStamp>? before)
    {
        Func<string, FileStatus, bool>? skip = before is null ? null : (path, status) => before.TryGetValue(path, out var stamp) && stamp == FileStamp.Of(status);
        using var walk = new TreeWalk(root);
        bool done = false;
        while (!done)
        {
            List<WalkedFile> batch;
            (batch, done) = await PathThreads.RunAsync(who, () => walk.Next(open, skip));
            yield return batch;
        }
    }

    /// <summary>SHA-256 of at most <paramref name="limit"/> bytes from the start; the bytes hashed and the hex hash.</summary>
    private static async Task<(long Size, string Sha256)> HashAsync(SafeFileHandle handle, long limit, CancellationToken cancellationToken)
    {
        using var hash = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
        byte[] buffer = new byte[Frame.ChunkSize];
        long offset = 0;
        while (offset < limit)
        {
            int n = await RandomAccess.ReadAsync(handle, buffer.AsMemory(0, (int)Math.Min(buffer.Length, limit - offset)), offset, cancellationToken);
            if (n == 0)
            {
                break; // it shrank: what is there was hashed
            }
            hash.AppendData(buffer, 0, n);
            offset += n;
        }
        return (offset, Convert.ToHexStringLower(hash.GetHashAndReset()));
    }

    // ---- On a path thread ----

    internal static FileInfoBody Describe(string path)
    {
        using var parent = OpenParent(path, out byte[] name);
        return Info(path, StatOrFail(parent, name, path));
    }

    internal static FileInfoBody? TryDescribe(string path)
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

    internal static void Remove(string path, bool recursive)
    {
        if (path == "/")
        {
            throw AgentException.BadRequest("/ cannot be removed");
        }
        using var parent = OpenParent(path, out byte[] name);
        var status = StatOrFail(parent, name, path);
        if (status.Kind == FileKindBits.Directory)
        {
            if (recursive)
            {
                using var dir = OpenChildDirectory(parent, name, path) ?? throw AgentException.NotFound(path);
                RemoveContents(dir, path, 1);
            }
            int errno = Libc.UnlinkAt(parent, name, directory: true);
            if (errno == Libc.ENotEmpty)
            {
                throw new AgentException(ErrorCodes.IoError, $"{path}: directory not empty (set recursive to remove it)");
            }
            if (errno != 0)
            {
                throw Fail(errno, path);
            }
            return;
        }
        int unlinked = Libc.UnlinkAt(parent, name, directory: false);
        if (unlinked != 0)
        {
            throw Fail(unlinked, path);
        }
    }

    /// <summary>Removes everything in the directory <paramref name="dir"/> is open on, through descriptors only.</summary>
    internal static void RemoveContents(SafeFileHandle dir, string path, int depth)
    {
        if (depth > MaxDepth)
        {
            throw new AgentException(ErrorCodes.IoError, $"{path}: more than {MaxDepth} directory levels");
        }
        var names = new List<byte[]>();
        int errno = Libc.ReadDirectory(dir, names);
        if (errno != 0)
        {
            throw Fail(errno, path);
        }
        foreach (byte[] name in names)
        {
            string child = Path.Combine(path, Encoding.UTF8.GetString(name));
            // Unlink first: for everything but a directory that is all (a symlink goes, not its target).
            errno = Libc.UnlinkAt(dir, name, directory: false);
            if (errno == Libc.EIsDir)
            {
                using (var sub = OpenChildDirectory(dir, name, child))
                {
                    if (sub is null)
                    {
                        continue; // gone meanwhile
                    }
                    RemoveContents(sub, child, depth + 1);
                }
                errno = Libc.UnlinkAt(dir, name, directory: true);
            }
            if (errno != 0 && !Libc.IsNotFound(errno))
            {
                throw Fail(errno, child);
            }
        }
    }

    /// <summary>Opens directory <paramref name="name"/> of <paramref name="parent"/>, never through a symlink; null when it is gone.</summary>
    private static SafeFileHandle? OpenChildDirectory(SafeFileHandle parent, ReadOnlySpan<byte> name, string path)
    {
        int errno = Libc.OpenAt(parent, name, OpenFlags.PathOnly | OpenFlags.Directory | OpenFlags.NoFollow, 0, out var handle);
        return errno switch
        {
            0 => handle,
            _ when Libc.IsNotFound(errno) => null,
            Libc.ELoop => throw new AgentException(ErrorCodes.IoError, $"{path}: became a symlink while it was removed"),
            _ => throw Fail(errno, path),
        };
    }

    /// <summary>mkdir -p, one level at a time from /, each level looked up with the user's permissions.</summary>
    private static void MakeDirectories(string path)
    {
        int errno = Libc.OpenAt(null, "/", OpenFlags.PathOnly | OpenFlags.Directory, 0, out var current);
        if (errno != 0)
        {
            throw Fail(errno, "/");
        }
        try
        {
            string prefix = "";
            foreach (string part in path.Split('/', StringSplitOptions.RemoveEmptyEntries))
            {
                prefix += "/" + part;
                byte[] name = Encoding.UTF8.GetBytes(part);
                errno = Libc.MakeDirectoryAt(current, name, DirectoryMode);
                if (errno != 0 && errno != Libc.EExist)
                {
                    throw Fail(errno, prefix);
                }
                errno = Libc.OpenAt(current, name, OpenFlags.PathOnly | OpenFlags.Directory, 0, out var next);
                if (errno != 0)
                {
                    throw errno == Libc.ENotDir // a file is in the way
                        ? new AgentException(ErrorCodes.IoError, $"{prefix}: exists and is not a directory")
                        : Fail(errno, prefix);
                }
                current.Dispose();
                current = next;
            }
        }
        finally
        {
            current.Dispose();
        }
    }

    private static SafeFileHandle OpenDirectory(string path, bool follow)
    {
        var flags = OpenFlags.ReadOnly | OpenFlags.Directory | (follow ? 0 : OpenFlags.NoFollow);
        int errno = Libc.OpenAt(null, path, flags, 0, out var handle);
        return errno switch
        {
            0 => handle,
            Libc.ELoop when !follow => throw new AgentException(ErrorCodes.IoError, $"{path}: not a directory"),
            Libc.ENotDir => throw new AgentException(ErrorCodes.IoError, $"{path}: not a directory"),
            _ => throw Fail(errno, path),
        };
    }

    /// <summary>
    /// The directory above <paramref name="path"/>, opened O_PATH (looked up with the thread's identity,
    /// symlinks above the last component followed as they would be for the user, /proc magic links never),
    /// and the last component. For / itself: / and ".".
    /// </summary>
    internal static SafeFileHandle OpenParent(string path, out byte[] name)
    {
        string parent = Path.GetDirectoryName(path) ?? "/";
        name = path == "/" ? "."u8.ToArray() : Encoding.UTF8.GetBytes(Path.GetFileName(path));
        int errno = Libc.OpenAt(null, path == "/" ? "/" : parent, OpenFlags.PathOnly | OpenFlags.Directory, 0, out var dir);
        return errno == 0 ? dir : throw Fail(errno, parent);
    }

    private static FileStatus StatOrFail(SafeFileHandle parent, ReadOnlySpan<byte> name, string path)
    {
        int errno = Libc.StatAt(parent, name, out var status);
        return errno == 0 ? status : throw Fail(errno, path);
    }

    /// <summary>fstat of what was opened: still a regular file (and for writing, one link).</summary>
    private static FileStatus CheckOpened(SafeFileHandle handle, string path, bool forWrite)
    {
        int errno = Libc.Stat(handle, out var opened);
        if (errno != 0)
        {
            handle.Dispose();
            throw Fail(errno, path);
        }
        try
        {
            RequireRegular(opened, path);
            if (forWrite)
            {
                RequireSingleLink(opened, path);
            }
        }
        catch
        {
            handle.Dispose();
            throw;
        }
        return opened;
    }

    private static void RequireRegular(FileStatus status, string path)
    {
        if (status.Kind == FileKindBits.Directory)
        {
            throw new AgentException(ErrorCodes.IoError, $"{path}: is a directory");
        }
        if (status.Kind != FileKindBits.Regular)
        {
            throw NotRegular(path, status.Kind);
        }
    }

    private static void RequireSingleLink(FileStatus status, string path)
    {
        if (status.Links > 1)
        {
            throw new AgentException(ErrorCodes.HardLinked,
                $"{path} has {status.Links} links: the agent does not write a file that has another name (a hard link could be someone else's file)");
        }
    }

    private static AgentException NotRegular(string path, FileKindBits kind) => new(ErrorCodes.NotRegularFile,
        $"{path} is {KindName(kind)}: the agent only opens regular files for the user, never a symlink, FIFO, device or socket");

    private static string KindName(FileKindBits kind) => kind switch
    {
        FileKindBits.Symlink => "a symlink",
        FileKindBits.Fifo => "a FIFO",
        FileKindBits.CharDevice => "a character device",
        FileKindBits.BlockDevice => "a block device",
        FileKindBits.Socket => "a socket",
        FileKindBits.Directory => "a directory",
        _ => "not a regular file",
    };

    /// <summary>An errno of a path operation as the error the host sees: not_found, or io_error naming the path.</summary>
    internal static AgentException Fail(int errno, string path) => errno switch
    {
        _ when Libc.IsNotFound(errno) => AgentException.NotFound(path),
        _ when Libc.IsPermissionDenied(errno) => new AgentException(ErrorCodes.PermissionDenied, $"{path}: permission denied"),
        _ => new AgentException(ErrorCodes.IoError, $"{path}: {Libc.DescribeErrno(errno)}"),
    };

    private static FileInfoBody Info(string path, FileStatus status) => new()
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

    /// <summary>A regular file found by a walk: its path, status and (when asked) the descriptor it was opened on.</summary>
    private readonly record struct WalkedFile(string Path, FileStatus Status, SafeFileHandle? Handle);

    /// <summary>
    /// A depth-first walk of a tree through directory descriptors (one per level), in batches: each batch
    /// is one path-thread job, so files can be hashed elsewhere between them. The root is opened by the
    /// first batch; a root that is no directory (a symlink to one included) has no files.
    /// </summary>
    private sealed class TreeWalk(string root) : IDisposable
    {
        private readonly Stack<Level> _levels = new();
        private bool _started;

        private sealed class Level(SafeFileHandle dir, string path)
        {
            public SafeFileHandle Dir { get; } = dir;
            public string Path { get; } = path;
            public List<byte[]>? Names { get; set; }
            public int Next { get; set; }
        }

        /// <summary>
        /// On a path thread: the next regular files, and whether the walk is done. <paramref name="open"/>:
        /// each is opened (O_NOFOLLOW, checked to be the file that was found); <paramref name="skip"/>: files
        /// to leave out unopened.
        /// </summary>
        public (List<WalkedFile> Batch, bool Done) Next(bool open, Func<string, FileStatus, bool>? skip)
        {
            var batch = new List<WalkedFile>();
            if (!_started)
            {
                _started = true;
                int errno = Libc.OpenAt(null, root, OpenFlags.PathOnly | OpenFlags.Directory | OpenFlags.NoFollow, 0, out var dir);
                if (errno != 0)
                {
                    if (!Libc.IsNotFound(errno) && errno != Libc.ELoop)
                    {
                        AgentLog.Write($"cannot list {root}: {Libc.DescribeErrno(errno)}");
                    }
                    return (batch, true);
                }
                _levels.Push(new Level(dir, root));
            }
            while (batch.Count < WalkBatch && _levels.TryPeek(out var level))
            {
                if (level.Names is null)
                {
                    level.Names = [];
                    int errno = Libc.ReadDirectory(level.Dir, level.Names);
                    if (errno != 0)
                    {
                        AgentLog.Write($"cannot list {level.Path}: {Libc.DescribeErrno(errno)}");
                        level.Names.Clear();
                    }
                }
                if (level.Next >= level.Names.Count)
                {
                    _levels.Pop().Dir.Dispose();
                    continue;
                }
                byte[] name = level.Names[level.Next++];
                string path = System.IO.Path.Combine(level.Path, Encoding.UTF8.GetString(name));
                if (Libc.StatAt(level.Dir, name, out var status) != 0)
                {
                    continue; // gone meanwhile
                }
                if (status.Kind == FileKindBits.Directory)
                {
                    if (_levels.Count >= MaxDepth)
                    {
                        AgentLog.Write($"{path}: more than {MaxDepth} directory levels, not listed");
                    }
                    else if (Libc.OpenAt(level.Dir, name, OpenFlags.PathOnly | OpenFlags.Directory | OpenFlags.NoFollow, 0, out var sub) == 0)
                    {
                        _levels.Push(new Level(sub, path));
                    }
                    continue;
                }
                if (status.Kind != FileKindBits.Regular || skip?.Invoke(path, status) == true)
                {
                    continue; // symlinks, FIFOs, devices, sockets are never artifacts
                }
                if (!open)
                {
                    batch.Add(new WalkedFile(path, status, null));
                    continue;
                }
                if (Libc.OpenAt(level.Dir, name, OpenFlags.ReadOnly | OpenFlags.NoFollow, 0, out var handle) != 0)
                {
                    AgentLog.Write($"cannot open {path} to hash it (gone, swapped or not readable): left out");
                    continue;
                }
                if (Libc.Stat(handle, out var opened) != 0 || opened.Kind != FileKindBits.Regular || !opened.IsSameFile(status))
                {
                    handle.Dispose();
                    AgentLog.Write($"{path} changed while it was opened: left out");
                    continue;
                }
                batch.Add(new WalkedFile(path, opened, handle));
            }
            return (batch, _levels.Count == 0);
        }

        public void Dispose()
        {
            while (_levels.TryPop(out var level))
            {
                level.Dir.Dispose();
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
