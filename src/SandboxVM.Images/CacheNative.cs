using System.Runtime.InteropServices;

namespace SandboxVM.Images;

/// <summary>
/// lstat through statx (one layout on every architecture): what disk usage accounting and the build
/// steps' ownership shift need; lchown and chmod for that shift.
/// </summary>
internal static unsafe partial class CacheNative
{
    private const int AtFdCwd = -100;
    private const int AtSymlinkNoFollow = 0x100;
    private const uint StatxBasicStats = 0x7ff;
    private const int ModeTypeMask = 0xF000;
    private const int ModeDirectory = 0x4000;

    [LibraryImport("libc", EntryPoint = "statx", StringMarshalling = StringMarshalling.Utf8, SetLastError = true)]
    private static partial int SysStatx(int dirfd, string path, int flags, uint mask, byte* buffer);

    /// <param name="Device">major &lt;&lt; 32 | minor of the file system.</param>
    /// <param name="Inode">Inode number.</param>
    /// <param name="Links">Hard links to it.</param>
    /// <param name="AllocatedBytes">Blocks actually allocated (a sparse ext4 image counts what it holds).</param>
    /// <param name="IsDirectory">A directory (symlinks are not followed).</param>
    internal readonly record struct Entry(ulong Device, ulong Inode, uint Links, long AllocatedBytes, bool IsDirectory);

    /// <summary>The path itself, not a symlink's target; null when it is gone.</summary>
    internal static Entry? LStat(string path)
    {
        byte* b = stackalloc byte[256];
        if (SysStatx(AtFdCwd, path, AtSymlinkNoFollow, StatxBasicStats, b) != 0)
        {
            return null;
        }
        // struct statx: nlink u32 @16, mode u16 @28, ino u64 @32, blocks u64 @48 (512-byte units),
        // dev_major u32 @136, dev_minor u32 @140.
        ulong device = ((ulong)*(uint*)(b + 136) << 32) | *(uint*)(b + 140);
        int mode = *(ushort*)(b + 28);
        return new Entry(device, *(ulong*)(b + 32), *(uint*)(b + 16), (long)(*(ulong*)(b + 48) * 512), (mode & ModeTypeMask) == ModeDirectory);
    }

    [LibraryImport("libc", EntryPoint = "fchownat", StringMarshalling = StringMarshalling.Utf8, SetLastError = true)]
    private static partial int SysFchownat(int dirfd, string path, uint owner, uint group, int flags);

    [LibraryImport("libc", EntryPoint = "chmod", StringMarshalling = StringMarshalling.Utf8, SetLastError = true)]
    private static partial int SysChmod(string path, uint mode);

    /// <param name="Uid">Owner.</param>
    /// <param name="Gid">Group.</param>
    /// <param name="Mode">Type and permission bits (st_mode).</param>
    /// <param name="Device">major &lt;&lt; 32 | minor of the file system.</param>
    /// <param name="Inode">Inode number.</param>
    /// <param name="Links">Hard links to it.</param>
    internal readonly record struct Owner(uint Uid, uint Gid, int Mode, ulong Device, ulong Inode, uint Links)
    {
        public bool IsDirectory => (Mode & ModeTypeMask) == ModeDirectory;
        public bool IsRegular => (Mode & ModeTypeMask) == 0x8000;
    }

    /// <summary>Owner and mode of the path itself (a symlink is not followed); null when it is gone.</summary>
    internal static Owner? LStatOwner(string path)
    {
        byte* b = stackalloc byte[256];
        if (SysStatx(AtFdCwd, path, AtSymlinkNoFollow, StatxBasicStats, b) != 0)
        {
            return null;
        }
        ulong device = ((ulong)*(uint*)(b + 136) << 32) | *(uint*)(b + 140);
        return new Owner(*(uint*)(b + 20), *(uint*)(b + 24), *(ushort*)(b + 28), device, *(ulong*)(b + 32), *(uint*)(b + 16));
    }

    /// <summary>chown of the path itself, never a symlink's target.</summary>
    internal static void LChown(string path, uint uid, uint gid)
    {
        if (SysFchownat(AtFdCwd, path, uid, gid, AtSymlinkNoFollow) != 0)
        {
            throw new IOException($"chown {uid}:{gid} {path} failed: errno {Marshal.GetLastPInvokeError()}");
        }
    }

    /// <summary>chmod; only for a path known not to be a symlink.</summary>
    internal static void Chmod(string path, int mode)
    {
        if (SysChmod(path, (uint)mode & 0xfff) != 0)
        {
            throw new IOException($"chmod {path} failed: errno {Marshal.GetLastPInvokeError()}");
        }
    }
}
