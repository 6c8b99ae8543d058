using System.Runtime.InteropServices;

namespace SandboxVM.Runtime.Qemu;

/// <summary>
/// The libc calls the qemu backend needs beyond <see cref="Native"/>: passing a file descriptor over
/// the QMP socket (SCM_RIGHTS; .NET sockets cannot send ancillary data), chown and geteuid (no managed
/// API) and a non-blocking read of the kernel log.
/// </summary>
internal static unsafe partial class QemuNative
{
    private const int SolSocket = 1;
    private const int ScmRights = 1;
    private const int MsgNoSignal = 0x4000;
    private const int EAgain = 11;
    private const int EIntr = 4;
    private const int EPipe = 32;
    private const int ORdOnly = 0;
    private const int ONonBlock = 0x800;
    private const int OCloExec = 0x80000;

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

    [LibraryImport("libc", EntryPoint = "sendmsg", SetLastError = true)]
    private static partial nint SysSendMsg(int socket, MsgHdr* message, int flags);

    [LibraryImport("libc", EntryPoint = "chown", StringMarshalling = StringMarshalling.Utf8, SetLastError = true)]
    private static partial int SysChown(string path, uint owner, uint group);

    [LibraryImport("libc", EntryPoint = "open", StringMarshalling = StringMarshalling.Utf8, SetLastError = true)]
    private static partial int SysOpen(string path, int flags);

    [LibraryImport("libc", EntryPoint = "read", SetLastError = true)]
    private static partial nint SysRead(int fd, byte* buffer, nuint count);

    [LibraryImport("libc", EntryPoint = "close")]
    private static partial int SysClose(int fd);

    [LibraryImport("libc", EntryPoint = "statx", StringMarshalling = StringMarshalling.Utf8, SetLastError = true)]
    private static partial int SysStatx(int dirfd, string path, int flags, uint mask, byte* buffer);

    [LibraryImport("libc", EntryPoint = "geteuid")]
    private static partial uint SysGetEuid();

    /// <summary>The server's effective uid (the owner of what it creates).</summary>
    internal static int EffectiveUid() => (int)SysGetEuid();

    /// <summary>Owner, group, mode and inode of a path (statx: one layout on every architecture).</summary>
    internal readonly record struct FileIdentity(int Uid, int Gid, int Mode, ulong Inode);

    internal static FileIdentity? Stat(string path)
    {
        const int AtFdCwd = -100;
        const uint StatxBasicStats = 0x7ff;
        byte* buffer = stackalloc byte[256];
        if (SysStatx(AtFdCwd, path, 0, StatxBasicStats, buffer) != 0)
        {
            return null;
        }
        // struct statx: mask u32 @0, blksize u32 @4, attributes u64 @8, nlink u32 @16, uid u32 @20,
        // gid u32 @24, mode u16 @28, ino u64 @32.
        return new FileIdentity(*(int*)(buffer + 20), *(int*)(buffer + 24), *(ushort*)(buffer + 28), *(ulong*)(buffer + 32));
    }

    /// <summary>
    /// Sends <paramref name="data"/> with <paramref name="fd"/> attached as SCM_RIGHTS. Returns the bytes
    /// sent (the caller sends any rest without the fd). The socket is non-blocking under .NET, so a full
    /// send buffer is waited out briefly.
    /// </summary>
    internal static int SendWithFd(SafeHandle socket, ReadOnlySpan<byte> data, SafeHandle fd)
    {
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

    internal static void Chown(string path, int uid, int gid)
    {
        if (SysChown(path, (uint)uid, (uint)gid) != 0)
        {
            throw new IOException($"chown {uid}:{gid} {path} failed: errno {Marshal.GetLastPInvokeError()}");
        }
    }

    /// <summary>Every record currently in the kernel log (/dev/kmsg), or nothing when it cannot be read.</summary>
    internal static List<string> ReadKernelLog()
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
