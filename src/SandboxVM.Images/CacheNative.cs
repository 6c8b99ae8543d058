using System.Runtime.InteropServices;

namespace SandboxVM.Images;

/// <summary>lstat through statx (one layout on every architecture): what disk usage accounting needs.</summary>
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
}
