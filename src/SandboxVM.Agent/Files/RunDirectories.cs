using System.Text;
using Microsoft.Win32.SafeHandles;
using SandboxVM.Agent.Native;
using SandboxVM.Protocol;

namespace SandboxVM.Agent.Files;

/// <summary>
/// The private directories of per-run users (<see cref="ExecRequest.User"/>) in a VM several callers
/// share: each is created fresh, 0700 and owned by its run's uid, in a parent that is root's and closed
/// to others (0711: nobody can list the runs or swap a directory), and every path under it is acted on
/// with that uid's identity until it is removed. A uid has at most one exec at a time; when a new one
/// starts, what an earlier run of that uid left (directories the host did not remove) goes first.
/// </summary>
internal sealed class RunDirectories
{
    private const int ParentMode = 0b111_001_001; // 0711
    private const int RunMode = 0b111_000_000; // 0700
    private const int GroupOrOtherWrite = 0b000_010_010;
    private const int Sticky = 0b1_000_000_000;

    private readonly Lock _lock = new();
    private readonly Dictionary<string, int> _owners = new(StringComparer.Ordinal);
    private readonly HashSet<int> _busy = [];

    /// <summary>The run user whose directory holds <paramref name="path"/>, or null.</summary>
    public SandboxUser? OwnerOf(string path)
    {
        lock (_lock)
        {
            foreach (var (dir, uid) in _owners)
            {
                if (path == dir || path.StartsWith(dir + "/", StringComparison.Ordinal))
                {
                    return SandboxUser.Of(uid, uid);
                }
            }
        }
        return null;
    }

    public bool IsRunDirectory(string path)
    {
        lock (_lock)
        {
            return _owners.ContainsKey(path);
        }
    }

    /// <summary>Whether an exec of a run user is in progress.</summary>
    public bool AnyBusy
    {
        get
        {
            lock (_lock)
            {
                return _busy.Count > 0;
            }
        }
    }

    /// <summary>Marks <paramref name="uid"/> as having an exec until the result is disposed; a second one is a bad request.</summary>
    public IDisposable Claim(int uid)
    {
        lock (_lock)
        {
            if (!_busy.Add(uid))
            {
                throw AgentException.BadRequest($"user {uid} already has an exec running: one exec per run user at a time");
            }
        }
        return new Release(this, uid);
    }

    private sealed class Release(RunDirectories owner, int uid) : IDisposable
    {
        private int _done;

        public void Dispose()
        {
            if (Interlocked.Exchange(ref _done, 1) == 0)
            {
                lock (owner._lock)
                {
                    owner._busy.Remove(uid);
                }
            }
        }
    }

    /// <summary>
    /// Creates <paramref name="path"/> fresh for <paramref name="uid"/> and returns it opened (the exec's
    /// working directory). Its parent is created root-owned 0711 when missing; it and every directory above
    /// it must be root's and not writable by others (a sticky one such as /tmp may be).
    /// </summary>
    public async Task<SafeFileHandle> CreateAsync(string path, int uid)
    {
        string parentPath = Path.GetDirectoryName(path) ?? throw AgentException.BadRequest("/ cannot be a run directory");
        byte[] name = Encoding.UTF8.GetBytes(Path.GetFileName(path));
        var dir = await PathThreads.RunAsync(SandboxUser.Self, () =>
        {
            using var parent = OpenRootsChain(parentPath, create: true);
            int errno = Libc.MakeDirectoryAt(parent, name, RunMode);
            if (errno == Libc.EExist)
            {
                throw AgentException.BadRequest($"{path} exists: a run directory must be fresh");
            }
            if (errno != 0)
            {
                throw UserFiles.Fail(errno, path);
            }
            // Nobody but root can change the parent, so this is the directory just made.
            errno = Libc.OpenAt(parent, name, OpenFlags.ReadOnly | OpenFlags.Directory | OpenFlags.NoFollow, 0, out var created);
            if (errno != 0)
            {
                throw UserFiles.Fail(errno, path);
            }
            if ((errno = Libc.Fchown(created, uid, uid)) != 0 || (errno = Libc.Fchmod(created, RunMode)) != 0)
            {
                created.Dispose();
                throw UserFiles.Fail(errno, path);
            }
            return created;
        });
        lock (_lock)
        {
            _owners[path] = uid;
        }
        return dir;
    }

    /// <summary>
    /// Removes a run directory: its content with its user's identity (through descriptors), the directory
    /// itself (an entry of the root-owned parent) as root. <paramref name="recursive"/> false: only when empty.
    /// </summary>
    public async Task RemoveAsync(string path, bool recursive)
    {
        int uid;
        lock (_lock)
        {
            if (!_owners.TryGetValue(path, out uid))
            {
                throw AgentException.NotFound(path);
            }
        }
        var user = SandboxUser.Of(uid, uid);
        var (parent, dir) = await OpenAsync(path, uid);
        using (parent)
        {
            if (dir is not null)
            {
                using (dir)
                {
                    if (recursive)
                    {
                        await PathThreads.RunAsync(user, () => UserFiles.RemoveContents(dir, path, 1));
                    }
                }
                await PathThreads.RunAsync(SandboxUser.Self, () =>
                {
                    int errno = Libc.UnlinkAt(parent, Encoding.UTF8.GetBytes(Path.GetFileName(path)), directory: true);
                    if (errno == Libc.ENotEmpty)
                    {
                        throw new AgentException(ErrorCodes.IoError, $"{path}: directory not empty (set recursive to remove it)");
                    }
                    if (errno != 0 && !Libc.IsNotFound(errno))
                    {
                        throw UserFiles.Fail(errno, path);
                    }
                });
            }
        }
        lock (_lock)
        {
            _owners.Remove(path);
        }
    }

    /// <summary>
    /// Removes every directory an earlier run of <paramref name="uid"/> left. One that cannot be removed
    /// (the user made it too deep, say) is taken from the user instead: root-owned and 0700, so the next
    /// run of the uid cannot read it.
    /// </summary>
    public async Task RemoveLeftoversAsync(int uid)
    {
        string[] leftovers;
        lock (_lock)
        {
            leftovers = [.. _owners.Where(o => o.Value == uid).Select(o => o.Key)];
        }
        foreach (string path in leftovers)
        {
            try
            {
                await RemoveAsync(path, recursive: true);
                AgentLog.Write($"removed {path}, left by an earlier run of user {uid}");
            }
            catch (AgentException e)
            {
                AgentLog.Write($"cannot remove {path}, left by an earlier run of user {uid} ({e.Message}): taken from the user");
                var (parent, dir) = await OpenAsync(path, uid);
                parent.Dispose();
                if (dir is not null)
                {
                    using (dir)
                    {
                        await PathThreads.RunAsync(SandboxUser.Self, () =>
                        {
                            if (Libc.Fchown(dir, 0, 0) != 0 || Libc.Fchmod(dir, RunMode) != 0)
                            {
                                AgentLog.Write($"cannot take {path} from user {uid}");
                            }
                        });
                    }
                }
                lock (_lock)
                {
                    _owners.Remove(path);
                }
            }
        }
    }

    /// <summary>The root-owned parent and the run directory (null when gone), both opened by root; the directory must be the uid's.</summary>
    private static Task<(SafeFileHandle Parent, SafeFileHandle? Dir)> OpenAsync(string path, int uid) =>
        PathThreads.RunAsync(SandboxUser.Self, () =>
        {
            var parent = OpenRootsChain(Path.GetDirectoryName(path)!, create: false);
            int errno = Libc.OpenAt(parent, Encoding.UTF8.GetBytes(Path.GetFileName(path)),
                OpenFlags.PathOnly | OpenFlags.Directory | OpenFlags.NoFollow, 0, out var dir);
            if (Libc.IsNotFound(errno))
            {
                return (parent, (SafeFileHandle?)null);
            }
            if (errno != 0 || Libc.Stat(dir, out var status) != 0 || status.Uid != (uint)uid)
            {
                if (errno == 0)
                {
                    dir.Dispose();
                }
                parent.Dispose();
                throw new AgentException(ErrorCodes.IoError, $"{path}: not the run directory of user {uid} any more");
            }
            return (parent, dir);
        });

    /// <summary>
    /// Opens <paramref name="path"/> (as root, on a path thread) walking down from / without following
    /// symlinks, checking that every level is root's and not writable by others (a sticky level may be:
    /// nobody can rename what root owns in it) and that the last one is not writable by others at all.
    /// With <paramref name="create"/> a missing last level is made 0711; the last level is set to 0711.
    /// </summary>
    private static SafeFileHandle OpenRootsChain(string path, bool create)
    {
        int errno = Libc.OpenAt(null, "/", OpenFlags.PathOnly | OpenFlags.Directory, 0, out var current);
        if (errno != 0)
        {
            throw UserFiles.Fail(errno, "/");
        }
        try
        {
            string[] parts = path.Split('/', StringSplitOptions.RemoveEmptyEntries);
            string prefix = "/";
            for (int i = 0; i < parts.Length; i++)
            {
                bool last = i == parts.Length - 1;
                prefix = "/" + string.Join('/', parts[..(i + 1)]);
                byte[] name = Encoding.UTF8.GetBytes(parts[i]);
                errno = Libc.OpenAt(current, name, OpenFlags.PathOnly | OpenFlags.Directory | OpenFlags.NoFollow, 0, out var next);
                if (last && create && errno == Libc.ENoEnt)
                {
                    errno = Libc.MakeDirectoryAt(current, name, ParentMode);
                    if (errno == 0 || errno == Libc.EExist)
                    {
                        errno = Libc.OpenAt(current, name, OpenFlags.PathOnly | OpenFlags.Directory | OpenFlags.NoFollow, 0, out next);
                    }
                }
                if (errno != 0)
                {
                    throw errno is Libc.ELoop or Libc.ENotDir
                        ? NotRootsOwn(prefix, "is not a directory")
                        : UserFiles.Fail(errno, prefix);
                }
                current.Dispose();
                current = next;
                if (Libc.Stat(current, out var status) != 0 || status.Uid != 0)
                {
                    throw NotRootsOwn(prefix, "is not root's");
                }
                if ((status.Mode & GroupOrOtherWrite) != 0 && (last || (status.Mode & Sticky) == 0))
                {
                    throw NotRootsOwn(prefix, "can be written by others");
                }
            }
            if (parts.Length == 0)
            {
                throw AgentException.BadRequest("a run directory needs a parent below /");
            }
            // O_PATH descriptors take no fchmod: the last level is reopened for it.
            errno = Libc.OpenAt(current, "."u8, OpenFlags.ReadOnly | OpenFlags.Directory, 0, out var readable);
            if (errno == 0)
            {
                using (readable)
                {
                    errno = Libc.Fchmod(readable, ParentMode);
                }
            }
            if (errno != 0)
            {
                throw UserFiles.Fail(errno, path);
            }
            var result = current;
            current = null!;
            return result;
        }
        finally
        {
            current?.Dispose();
        }
    }

    private static AgentException NotRootsOwn(string path, string why) => AgentException.BadRequest(
        $"{path} {why}: a run directory's parent and every directory above it must be root's and closed to others (sticky ones aside)");
}
