using System.Runtime.InteropServices;

namespace SandboxVM.Host;

/// <summary>
/// The libc calls the host assemblies need and .NET does not offer: statx (one layout on every
/// architecture), chown/lchown/chmod, geteuid, kill, a file descriptor passed over a unix socket
/// (SCM_RIGHTS; .NET sockets cannot send ancillary data), the KVM check and a non-blocking read of the
/// kernel log. Declared here once for Images and Runtime; the process runtime's libseccomp calls stay in
/// its own interop class.
/// </summary>
public static unsafe partial class HostNative
{
    public const int SIGKILL = 9;

    private const int AtFdCwd = -100;
    private const int AtSymlinkNoFollow = 0x100;
    private const uint StatxBasicStats = 0x7ff;
    private const int ModeTypeMask = 0xF000;
    private const int SolSocket = 1;
    private const int ScmRights = 1;
    private const int MsgNoSignal = 0x4000;
    private const int EAgain = 11;
    private const int EIntr = 4;
    private const int EPipe = 32;
    private const int ORdOnly = 0;
    private const int ORdWr = 2;
    private const int ONonBlock = 0x800;
    private const int OCloExec = 0x80000;
    private const ulong KvmGetApiVersion = 0xAE00;
    private const ulong KvmCreateVm = 0xAE01;
    private const int KvmApiVersion = 12;

    [StructLayout(LayoutKind.Sequential)]
    private struct IoVec
    {
        public void* Base;
        public nuint Length;
    }

    [StructLayout(LayoutKind.Sequential)]
    private struct MsgHdr
    {
        public void* Name;
        public uint NameLength;
        public IoVec* Iov;
        public nuint IovLength;
        public void* Control;
        public nuint ControlLength;
        public int Flags;
    }

    [StructLayout(LayoutKind.Sequential)]
    private struct CmsgHdrWithFd
    {
        public nuint Length;
        public int Level;
        public int Type;
        public int Fd;
        private readonly int _padding;
    }

    [LibraryImport("libc", EntryPoint = "statx", StringMarshalling = StringMarshalling.Utf8, SetLastError = true)]
    private static partial int SysStatx(int dirfd, string path, int flags, uint mask, byte* buffer);

    [LibraryImport("libc", EntryPoint = "chown", StringMarshalling = StringMarshalling.Utf8, SetLastError = true)]
    private static partial int SysChown(string path, uint owner, uint group);

    [LibraryImport("libc", EntryPoint = "fchownat", StringMarshalling = StringMarshalling.Utf8, SetLastError = true)]
    private static partial int SysFchownat(int dirfd, string path, uint owner, uint group, int flags);

    [LibraryImport("libc", EntryPoint = "chmod", StringMarshalling = StringMarshalling.Utf8, SetLastError = true)]
    private static partial int SysChmod(string path, uint mode);

    [LibraryImport("libc", EntryPoint = "geteuid")]
    private static partial uint SysGetEuid();

    [LibraryImport("libc", EntryPoint = "kill", SetLastError = true)]
    private static partial int SysKill(int pid, int signal);

    [LibraryImport("libc", EntryPoint = "sendmsg", SetLastError = true)]
    private static partial nint SysSendMsg(int socket, MsgHdr* message, int flags);

    [LibraryImport("libc", EntryPoint = "open", StringMarshalling = StringMarshalling.Utf8, SetLastError = true)]
    private static partial int SysOpen(string path, int flags);

    [LibraryImport("libc", EntryPoint = "read", SetLastError = true)]
    private static partial nint SysRead(int fd, byte* buffer, nuint count);

    [LibraryImport("libc", EntryPoint = "ioctl", SetLastError = true)]
    private static partial int SysIoctl(int fd, ulong request, ulong arg);

    [LibraryImport("libc", EntryPoint = "close")]
    private static partial int SysClose(int fd);

    /// <summary>What statx says of a path.</summary>
    /// <param name="Uid">Owner.</param>
    /// <param name="Gid">Group.</param>
    /// <param name="Mode">Type and permission bits (st_mode).</param>
    /// <param name="Inode">Inode number.</param>
    /// <param name="Device">major &lt;&lt; 32 | minor of the file system.</param>
    /// <param name="Links">Hard links to it.</param>
    /// <param name="AllocatedBytes">Blocks actually allocated (a sparse file counts what it holds).</param>
    public readonly record struct FileStat(int Uid, int Gid, int Mode, ulong Inode, ulong Device, uint Links, long AllocatedBytes)
    {
        public bool IsDirectory => (Mode & ModeTypeMask) == 0x4000;

        public bool IsRegular => (Mode & ModeTypeMask) == 0x8000;
    }

    /// <summary>statx of a path (a symlink is followed only when <paramref name="followLinks"/>); null when it is gone.</summary>
    public static FileStat? Stat(string path, bool followLinks = true)
    {
        byte* b = stackalloc byte[256];
        if (SysStatx(AtFdCwd, path, followLinks ? 0 : AtSymlinkNoFollow, StatxBasicStats, b) != 0)
        {
            return null;
        }
        // struct statx: nlink u32 @16, uid u32 @20, gid u32 @24, mode u16 @28, ino u64 @32,
        // blocks u64 @48 (512-byte units), dev_major u32 @136, dev_minor u32 @140.
        ulong device = ((ulong)*(uint*)(b + 136) << 32) | *(uint*)(b + 140);
        return new FileStat(*(int*)(b + 20), *(int*)(b + 24), *(ushort*)(b + 28), *(ulong*)(b + 32), device, *(uint*)(b + 16),
            (long)(*(ulong*)(b + 48) * 512));
    }

    /// <summary>The server's effective uid (the owner of what it creates).</summary>
    public static int EffectiveUid() => (int)SysGetEuid();

    /// <summary>chown, following a symlink.</summary>
    public static void Chown(string path, int uid, int gid)
    {
        if (SysChown(path, (uint)uid, (uint)gid) != 0)
        {
            throw new IOException($"chown {uid}:{gid} {path} failed: errno {Marshal.GetLastPInvokeError()}");
        }
    }

    /// <summary>chown of the path itself, never a symlink's target.</summary>
    public static void LChown(string path, uint uid, uint gid)
    {
        if (SysFchownat(AtFdCwd, path, uid, gid, AtSymlinkNoFollow) != 0)
        {
            throw new IOException($"chown {uid}:{gid} {path} failed: errno {Marshal.GetLastPInvokeError()}");
        }
    }

    /// <summary>chmod; only for a path known not to be a symlink.</summary>
    public static void Chmod(string path, int mode)
    {
        if (SysChmod(path, (uint)mode & 0xfff) != 0)
        {
            throw new IOException($"chmod {path} failed: errno {Marshal.GetLastPInvokeError()}");
        }
    }

    /// <summary>Sends a signal; a pid that is already gone is not an error.</summary>
    public static void Kill(int pid, int signal)
    {
        if (pid > 0)
        {
            _ = SysKill(pid, signal);
        }
    }

    /// <summary>
    /// True when KVM can really create a VM here: the device node alone proves nothing (it can exist
    /// without permission, or with an API the kernel refuses).
    /// </summary>
    public static bool KvmCanCreateVm(string device = "/dev/kvm")
    {
        int kvm = SysOpen(device, ORdWr | OCloExec);
        if (kvm < 0)
        {
            return false;
        }
        try
        {
            if (SysIoctl(kvm, KvmGetApiVersion, 0) != KvmApiVersion)
            {
                return false;
            }
            int vm = SysIoctl(kvm, KvmCreateVm, 0);
            if (vm < 0)
            {
                return false;
            }
            _ = SysClose(vm);
            return true;
        }
        finally
        {
            _ = SysClose(kvm);
        }
    }

    /// <summary>
    /// Sends <paramref name="data"/> with <paramref name="fd"/> attached as SCM_RIGHTS. Returns the bytes
    /// sent (the caller sends any rest without the fd). The socket is non-blocking under .NET, so a full
    /// send buffer is waited out briefly.
    /// </summary>
    public static int SendWithFd(SafeHandle socket, ReadOnlySpan<byte> data, SafeHandle fd)
    {
        ArgumentNullException.ThrowIfNull(socket);
        ArgumentNullException.ThrowIfNull(fd);
        bool addedSocket = false, addedFd = false;
        try
        {
            socket.DangerousAddRef(ref addedSocket);
            fd.DangerousAddRef(ref addedFd);
            fixed (byte* p = data)
            {
                var iov = new IoVec { Base = p, Length = (nuint)data.Length };
                var control = new CmsgHdrWithFd
                {
                    // CMSG_LEN(sizeof(int)): header plus one int, without trailing padding.
                    Length = (nuint)(sizeof(nuint) + 8 + sizeof(int)),
                    Level = SolSocket,
                    Type = ScmRights,
                    Fd = (int)fd.DangerousGetHandle(),
                };
                var message = new MsgHdr
                {
                    Iov = &iov,
                    IovLength = 1,
                    Control = &control,
                    ControlLength = (nuint)sizeof(CmsgHdrWithFd),
                };
                var deadline = Environment.TickCount64 + 5000;
                while (true)
                {
                    nint n = SysSendMsg((int)socket.DangerousGetHandle(), &message, MsgNoSignal);
                    if (n >= 0)
                    {
                        return (int)n;
                    }
                    int errno = Marshal.GetLastPInvokeError();
                    if ((errno == EAgain || errno == EIntr) && Environment.TickCount64 < deadline)
                    {
                        Thread.Sleep(1);
                        continue;
                    }
                    throw new IOException($"sendmsg with a file descriptor failed: errno {errno}");
                }
            }
        }
        finally
        {
            if (addedFd)
            {
                fd.DangerousRelease();
            }
            if (addedSocket)
            {
                socket.DangerousRelease();
            }
        }
    }

    /// <summary>Every record currently in the kernel log (/dev/kmsg), or nothing when it cannot be read.</summary>
    public static List<string> ReadKernelLog()
    {
        var lines = new List<string>();
        int fd = SysOpen("/dev/kmsg", ORdOnly | ONonBlock | OCloExec);
        if (fd < 0)
        {
            return lines;
        }
        try
        {
            byte[] buffer = new byte[8192];
            fixed (byte* p = buffer)
            {
                // Each read returns one record; EAGAIN means the end, EPIPE that a record was overwritten.
                while (lines.Count < 100_000)
                {
                    nint n = SysRead(fd, p, (nuint)buffer.Length);
                    if (n > 0)
                    {
                        lines.Add(System.Text.Encoding.UTF8.GetString(buffer, 0, (int)n));
                        continue;
                    }
                    if (n < 0 && Marshal.GetLastPInvokeError() is EPipe or EIntr)
                    {
                        continue;
                    }
                    break;
                }
            }
        }
        finally
        {
            _ = SysClose(fd);
        }
        return lines;
    }
}
