using System.Runtime.InteropServices;
using Microsoft.Win32.SafeHandles;

namespace SandboxVM.Agent.Native;

/// <summary>Metadata of one path as <c>statx</c> reports it (symlinks not followed).</summary>
internal readonly record struct FileStatus(FileKindBits Kind, long Size, long MtimeMs, int Mode, long MtimeNs, ulong Inode,
    ulong Device = 0, uint Uid = 0, uint Gid = 0, uint Links = 1)
{
    /// <summary>Same file (device and inode) as <paramref name="other"/>.</summary>
    public bool IsSameFile(FileStatus other) => Inode == other.Inode && Device == other.Device;
}

/// <summary>File type bits of <c>st_mode</c>.</summary>
internal enum FileKindBits
{
    Other,
    Regular,
    Directory,
    Symlink,
    Fifo,
    CharDevice,
    BlockDevice,
    Socket,
}

/// <summary>How Libc.OpenAt opens; close-on-exec, non-blocking and no controlling tty always.</summary>
[Flags]
internal enum OpenFlags
{
    ReadOnly = 0,
    WriteOnly = 1,
    Create = 2,
    Exclusive = 4,
    Directory = 8,
    /// <summary>O_PATH: a handle to name the object in *at calls, nothing else (no read permission needed).</summary>
    PathOnly = 16,
    /// <summary>A final symlink fails (ELOOP) instead of being followed.</summary>
    NoFollow = 32,
}

/// <summary>posix_spawn failed; <see cref="Errno"/> says why (ENOENT, EACCES, ENOEXEC...).</summary>
internal sealed class SpawnException(int errno, string message) : Exception(message)
{
    public int Errno { get; } = errno;
}

/// <summary>
/// Every libc call the agent makes, and nothing else: raw imports are private, callers get safe
/// wrappers that take <see cref="SafeFileHandle"/>s and return typed results. Linux only (x64 and
/// arm64 share the constants used here); the published binary binds them at link time.
/// </summary>
internal static unsafe partial class Libc
{
    private const string LibName = "libc";

    public const int SigKill = 9;
    public const int SigInt = 2;
    public const int SigStop = 19;
    public const int EAccess = 13;
    public const int ENoExec = 8;
    public const int ENoEnt = 2;
    private const int EIntr = 4;
    private const int EAgain = 11;
    private const int EPipe = 32;
    public const int ENotDir = 20;
    private const int EPerm = 1;
    private const int ESrch = 3;
    private const int EConnRefused = 111;
    public const int EExist = 17;
    public const int ELoop = 40;
    public const int ENotEmpty = 39;
    public const int EIsDir = 21;
    public const int EMFile = 24;
    private const int ENoSys = 38;
    public const int ENxIo = 6;

    private const int OCloExec = 0x80000;
    private const int ONonBlock = 0x800;
    private const int FGetFl = 3;
    private const int FSetFl = 4;

    public const short PollIn = 0x1;
    public const short PollOut = 0x4;
    public const short PollErr = 0x8;
    public const short PollHup = 0x10;
    public const short PollNval = 0x20;

    private const int PrSetChildSubreaper = 36;
    private const short PosixSpawnSetSigDef = 0x04;
    private const short PosixSpawnSetSigMask = 0x08;
    private const short PosixSpawnSetSid = 0x80;

    private const int AtFdCwd = -100;
    private const int AtSymlinkNoFollow = 0x100;
    private const int AtEmptyPath = 0x1000;
    private const uint StatxBasicStats = 0x7ff;
    private const int ClockRealtime = 0;

    private const int AfUnix = 1;
    private const int SockStream = 1;
    private const int SockNonBlock = 0x800;
    private const int SockCloExec = 0x80000;
    private const int SolSocket = 1;
    private const int ScmRights = 1;
    private const int MsgNoSignal = 0x4000;
    /// <summary>sizeof(sockaddr_un.sun_path).</summary>
    public const int MaxUnixPathBytes = 108;

    // Opaque libc objects are allocated with room to spare: glibc's are 80 (file actions),
    // 336 (spawnattr) and 128 (sigset_t) bytes; musl's are smaller.
    private const int OpaqueSize = 1024;

    [StructLayout(LayoutKind.Sequential)]
    private struct PollFd
    {
        public int Fd;
        public short Events;
        public short REvents;
    }

    [StructLayout(LayoutKind.Sequential)]
    private struct TimeSpec
    {
        public long Seconds;
        public long Nanoseconds;
    }

    [StructLayout(LayoutKind.Sequential)]
    private struct IoVec
    {
        public void* Base;
        public nuint Length;
    }

    /// <summary>struct msghdr of glibc on LP64 (musl's int fields with padding read the same on little-endian).</summary>
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

    [LibraryImport(LibName, EntryPoint = "socket", SetLastError = true)]
    private static partial int SysSocket(int domain, int type, int protocol);

    [LibraryImport(LibName, EntryPoint = "connect", SetLastError = true)]
    private static partial int SysConnect(int fd, byte* address, uint addressLength);

    [LibraryImport(LibName, EntryPoint = "sendmsg", SetLastError = true)]
    private static partial nint SysSendMsg(int fd, MsgHdr* message, int flags);

    [LibraryImport(LibName, EntryPoint = "kill", SetLastError = true)]
    private static partial int SysKill(int pid, int sig);

    [LibraryImport(LibName, EntryPoint = "getpgid", SetLastError = true)]
    private static partial int SysGetPgid(int pid);

    [LibraryImport(LibName, EntryPoint = "geteuid")]
    private static partial uint SysGetEuid();

    // The agent's own ids: a path thread may have taken another effective id (see SetFilesystemIdentity).
    [LibraryImport(LibName, EntryPoint = "getuid")]
    private static partial uint SysGetUid();

    [LibraryImport(LibName, EntryPoint = "getgid")]
    private static partial uint SysGetGid();

    [LibraryImport(LibName, EntryPoint = "prctl", SetLastError = true)]
    private static partial int SysPrctl(int option, nuint arg2, nuint arg3, nuint arg4, nuint arg5);

    [LibraryImport(LibName, EntryPoint = "pipe2", SetLastError = true)]
    private static partial int SysPipe2(int* fds, int flags);

    [LibraryImport(LibName, EntryPoint = "close", SetLastError = true)]
    private static partial int SysClose(int fd);

    [LibraryImport(LibName, EntryPoint = "fcntl", SetLastError = true)]
    private static partial int SysFcntl(int fd, int cmd, int arg);

    [LibraryImport(LibName, EntryPoint = "poll", SetLastError = true)]
    private static partial int SysPoll(PollFd* fds, nuint count, int timeoutMs);

    [LibraryImport(LibName, EntryPoint = "read", SetLastError = true)]
    private static partial nint SysRead(int fd, byte* buffer, nuint count);

    [LibraryImport(LibName, EntryPoint = "write", SetLastError = true)]
    private static partial nint SysWrite(int fd, byte* buffer, nuint count);

    [LibraryImport(LibName, EntryPoint = "waitpid", SetLastError = true)]
    private static partial int SysWaitPid(int pid, int* status, int options);

    [LibraryImport(LibName, EntryPoint = "posix_spawn", StringMarshalling = StringMarshalling.Utf8)]
    private static partial int SysPosixSpawn(int* pid, string path, void* fileActions, void* attr, byte** argv, byte** envp);

    [LibraryImport(LibName, EntryPoint = "posix_spawn_file_actions_init")]
    private static partial int SysFileActionsInit(void* fileActions);

    [LibraryImport(LibName, EntryPoint = "posix_spawn_file_actions_destroy")]
    private static partial int SysFileActionsDestroy(void* fileActions);

    [LibraryImport(LibName, EntryPoint = "posix_spawn_file_actions_adddup2")]
    private static partial int SysFileActionsAddDup2(void* fileActions, int fd, int newFd);

    [LibraryImport(LibName, EntryPoint = "posix_spawn_file_actions_addfchdir_np")]
    private static partial int SysFileActionsAddFchdir(void* fileActions, int fd);

    [LibraryImport(LibName, EntryPoint = "posix_spawnattr_init")]
    private static partial int SysSpawnAttrInit(void* attr);

    [LibraryImport(LibName, EntryPoint = "posix_spawnattr_destroy")]
    private static partial int SysSpawnAttrDestroy(void* attr);

    [LibraryImport(LibName, EntryPoint = "posix_spawnattr_setflags")]
    private static partial int SysSpawnAttrSetFlags(void* attr, short flags);

    [LibraryImport(LibName, EntryPoint = "posix_spawnattr_setsigdefault")]
    private static partial int SysSpawnAttrSetSigDefault(void* attr, void* sigset);

    [LibraryImport(LibName, EntryPoint = "posix_spawnattr_setsigmask")]
    private static partial int SysSpawnAttrSetSigMask(void* attr, void* sigset);

    [LibraryImport(LibName, EntryPoint = "sigfillset")]
    private static partial int SysSigFillSet(void* sigset);

    [LibraryImport(LibName, EntryPoint = "sigemptyset")]
    private static partial int SysSigEmptySet(void* sigset);

    [LibraryImport(LibName, EntryPoint = "statx", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    private static partial int SysStatx(int dirFd, string path, int flags, uint mask, byte* buffer);

    [LibraryImport(LibName, EntryPoint = "fchown", SetLastError = true)]
    private static partial int SysFchown(int fd, uint uid, uint gid);

    [LibraryImport(LibName, EntryPoint = "statx", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    private static partial int SysStatxFd(int dirFd, string path, int flags, uint mask, byte* buffer);

    [LibraryImport(LibName, EntryPoint = "clock_settime", SetLastError = true)]
    private static partial int SysClockSetTime(int clockId, TimeSpec* time);

    public static bool IsRoot => SysGetUid() == 0;

    public static int EffectiveUid => (int)SysGetUid();

    /// <summary>SIGKILL to every process of group <paramref name="pgid"/>. False when the group is gone.</summary>
    public static bool KillGroup(int pgid) => pgid > 1 && SysKill(-pgid, SigKill) == 0;

    /// <summary>
    /// kill(-1, SIGKILL): every process this one may signal except itself (its whole thread group) and its
    /// PID namespace's init. True when at least one was signalled (zombies count until reaped), false when
    /// none was left (ESRCH).
    /// </summary>
    public static bool KillEveryoneElse() => SysKill(-1, SigKill) == 0 || Marshal.GetLastPInvokeError() != ESrch;

    /// <summary>kill(-1, SIGSTOP): as <see cref="KillEveryoneElse"/>, but they stop where they are (cannot be caught or ignored).</summary>
    public static bool StopEveryoneElse() => SysKill(-1, SigStop) == 0 || Marshal.GetLastPInvokeError() != ESrch;

    /// <summary>SIGINT to one process (KeyboardInterrupt in Python). Only call while the pid is known not to be reaped yet.</summary>
    public static bool InterruptProcess(int pid) => pid > 1 && SysKill(pid, SigInt) == 0;
    /// <summary>Signal <paramref name="sig"/> to every process of group <paramref name="pgid"/>. False when the group is gone.</summary>
    public static bool SignalGroup(int pgid, int sig) => pgid > 1 && SysKill(-pgid, sig) == 0;

    /// <summary>SIGKILL to one process. Only call while the pid is known not to be reaped yet.</summary>
    public static bool KillProcess(int pid) => pid > 1 && SysKill(pid, SigKill) == 0;

    /// <summary>True while process group <paramref name="pgid"/> has a member (zombies included).</summary>
    public static bool GroupExists(int pgid) =>
        pgid > 1 && (SysKill(-pgid, 0) == 0 || Marshal.GetLastPInvokeError() == EPerm);

    /// <summary>Process group of <paramref name="pid"/>, or -1 when there is no such process.</summary>
    public static int GetProcessGroup(int pid) => SysGetPgid(pid);

    /// <summary>
    /// Makes orphaned descendants re-parent to the agent instead of init, so it can reap them
    /// (and they do not outlive the agent's bookkeeping). Best effort.
    /// </summary>
    public static bool TrySetChildSubreaper() => SysPrctl(PrSetChildSubreaper, 1, 0, 0, 0) == 0;

    /// <summary>
    /// Blocks until any child changes state. Returns its pid and raw wait status, or -1 with the errno
    /// (ECHILD when there are no children, EINTR).
    /// </summary>
    public static int WaitAnyChild(out int status, out int errno)
    {
        int raw;
        int pid = SysWaitPid(-1, &raw, 0);
        status = raw;
        errno = pid < 0 ? Marshal.GetLastPInvokeError() : 0;
        return pid;
    }

    public static bool IsInterrupted(int errno) => errno == EIntr;

    /// <summary>Waits up to <paramref name="timeoutMs"/> for <paramref name="events"/>; returns revents (0 on timeout or EINTR).</summary>
    public static short Poll(SafeFileHandle handle, short events, int timeoutMs)
    {
        bool added = false;
        try
        {
            handle.DangerousAddRef(ref added);
            var pfd = new PollFd { Fd = (int)handle.DangerousGetHandle(), Events = events };
            int n = SysPoll(&pfd, 1, timeoutMs);
            if (n < 0)
            {
                int errno = Marshal.GetLastPInvokeError();
                return errno == EIntr ? (short)0 : throw new IOException($"poll failed: errno {errno}");
            }
            return n == 0 ? (short)0 : pfd.REvents;
        }
        finally
        {
            if (added)
            {
                handle.DangerousRelease();
            }
        }
    }

    /// <summary>One read(2): bytes read, 0 at end of file, -1 when it should be retried (EINTR/EAGAIN).</summary>
    public static int Read(SafeFileHandle handle, Span<byte> buffer)
    {
        bool added = false;
        try
        {
            handle.DangerousAddRef(ref added);
            fixed (byte* p = buffer)
            {
                nint n = SysRead((int)handle.DangerousGetHandle(), p, (nuint)buffer.Length);
                if (n >= 0)
                {
                    return (int)n;
                }
                int errno = Marshal.GetLastPInvokeError();
                return errno is EIntr or EAgain ? -1 : throw new IOException($"read failed: errno {errno}");
            }
        }
        finally
        {
            if (added)
            {
                handle.DangerousRelease();
            }
        }
    }

    /// <summary>One write(2) on a non-blocking fd: bytes written, 0 to retry later, -1 when the reader is gone (EPIPE).</summary>
    public static int Write(SafeFileHandle handle, ReadOnlySpan<byte> buffer)
    {
        bool added = false;
        try
        {
            handle.DangerousAddRef(ref added);
            fixed (byte* p = buffer)
            {
                nint n = SysWrite((int)handle.DangerousGetHandle(), p, (nuint)buffer.Length);
                if (n >= 0)
                {
                    return (int)n;
                }
                int errno = Marshal.GetLastPInvokeError();
                return errno switch
                {
                    EIntr or EAgain => 0,
                    EPipe => -1,
                    _ => throw new IOException($"write failed: errno {errno}"),
                };
            }
        }
        finally
        {
            if (added)
            {
                handle.DangerousRelease();
            }
        }
    }

    /// <summary>
    /// Starts <paramref name="path"/> in a new session (so its pid is its process group id), in the
    /// directory <paramref name="cwd"/> is open on (fchdir: the child never resolves a path the user could
    /// have changed, and it still is root at that point), with exactly <paramref name="environment"/>, every signal at its default
    /// disposition and none blocked (the runtime ignores SIGPIPE; children must not inherit that), and
    /// stdin/stdout/stderr on fresh pipes. Returns the pid and the agent's ends of the pipes; the stdin
    /// end is non-blocking so a child that never reads cannot wedge its writer.
    /// </summary>
    public static int Spawn(string path, IReadOnlyList<string> argv, IReadOnlyList<string> environment, SafeFileHandle cwd,
        out SafeFileHandle stdinWrite, out SafeFileHandle stdoutRead, out SafeFileHandle stderrRead)
    {
        int* fds = stackalloc int[6];
        for (int i = 0; i < 6; i++)
        {
            fds[i] = -1;
        }
        bool ok = false;
        try
        {
            for (int i = 0; i < 3; i++)
            {
                if (SysPipe2(fds + 2 * i, OCloExec) != 0)
                {
                    throw new IOException($"pipe2 failed: errno {Marshal.GetLastPInvokeError()}");
                }
            }
            // fds: [0]=stdin read (child), [1]=stdin write (agent), [2]=stdout read (agent),
            // [3]=stdout write (child), [4]=stderr read (agent), [5]=stderr write (child).
            int flags = SysFcntl(fds[1], FGetFl, 0);
            if (flags < 0 || SysFcntl(fds[1], FSetFl, flags | ONonBlock) != 0)
            {
                throw new IOException($"fcntl failed: errno {Marshal.GetLastPInvokeError()}");
            }
            int pid = SpawnCore(path, argv, environment, cwd, fds[0], fds[3], fds[5], terminal: null);
            stdinWrite = new SafeFileHandle(fds[1], ownsHandle: true);
            stdoutRead = new SafeFileHandle(fds[2], ownsHandle: true);
            stderrRead = new SafeFileHandle(fds[4], ownsHandle: true);
            fds[1] = fds[2] = fds[4] = -1;
            ok = true;
            return pid;
        }
        finally
        {
            // The child's ends always close here: the child holds its own copies after the spawn.
            for (int i = 0; i < 6; i++)
            {
                if (fds[i] >= 0)
                {
                    SysClose(fds[i]);
                }
            }
            if (!ok)
            {
                stdinWrite = stdoutRead = stderrRead = null!;
            }
        }
    }

    /// <summary>
    /// Starts a child in a session of its own whose stdin, stdout and stderr are the terminal <paramref name="terminalPath"/>
    /// (a pseudo-terminal's slave): opened after setsid and without O_NOCTTY, so it becomes the session's controlling terminal.
    /// </summary>
    public static int SpawnOnTerminal(string path, IReadOnlyList<string> argv, IReadOnlyList<string> environment, SafeFileHandle cwd, string terminalPath) =>
        SpawnCore(path, argv, environment, cwd, -1, -1, -1, terminalPath);

    /// <summary>posix_spawn in a new session with default signals and an empty mask; stdio from the three fds, or the terminal opened on 0, 1 and 2.</summary>
    private static int SpawnCore(string path, IReadOnlyList<string> argv, IReadOnlyList<string> environment, SafeFileHandle cwd,
        int stdin, int stdout, int stderr, string? terminal)
    {
        bool cwdAdded = false;
        void* fileActions = null;
        void* attr = null;
        void* sigset = null;
        byte** argvPtr = null;
        byte** envPtr = null;
        byte* terminalPtr = null;
        bool fileActionsReady = false;
        bool attrReady = false;
        try
        {
            fileActions = NativeMemory.AllocZeroed(OpaqueSize);
            attr = NativeMemory.AllocZeroed(OpaqueSize);
            sigset = NativeMemory.AllocZeroed(OpaqueSize);
            Check(SysFileActionsInit(fileActions), "posix_spawn_file_actions_init");
            fileActionsReady = true;
            if (terminal is null)
            {
                Check(SysFileActionsAddDup2(fileActions, stdin, 0), "adddup2");
                Check(SysFileActionsAddDup2(fileActions, stdout, 1), "adddup2");
                Check(SysFileActionsAddDup2(fileActions, stderr, 2), "adddup2");
            }
            else
            {
                // glibc runs the file actions after setsid: the open makes the terminal the controlling one.
                terminalPtr = (byte*)Marshal.StringToCoTaskMemUTF8(terminal);
                Check(SysFileActionsAddOpen(fileActions, 0, terminalPtr, ORdWr, 0), "addopen");
                Check(SysFileActionsAddDup2(fileActions, 0, 1), "adddup2");
                Check(SysFileActionsAddDup2(fileActions, 0, 2), "adddup2");
            }
            cwd.DangerousAddRef(ref cwdAdded);
            Check(SysFileActionsAddFchdir(fileActions, (int)cwd.DangerousGetHandle()), "addfchdir_np");
            Check(SysSpawnAttrInit(attr), "posix_spawnattr_init");
            attrReady = true;
            Check(SysSpawnAttrSetFlags(attr, PosixSpawnSetSid | PosixSpawnSetSigDef | PosixSpawnSetSigMask), "setflags");
            SysSigFillSet(sigset);
            Check(SysSpawnAttrSetSigDefault(attr, sigset), "setsigdefault");
            SysSigEmptySet(sigset);
            Check(SysSpawnAttrSetSigMask(attr, sigset), "setsigmask");

            argvPtr = AllocStringArray(argv);
            envPtr = AllocStringArray(environment);
            int pid;
            int rc = SysPosixSpawn(&pid, path, fileActions, attr, argvPtr, envPtr);
            if (rc != 0)
            {
                throw new SpawnException(rc, $"cannot start {path}: {DescribeErrno(rc)}");
            }
            return pid;
        }
        finally
        {
            if (fileActionsReady)
            {
                SysFileActionsDestroy(fileActions);
            }
            if (attrReady)
            {
                SysSpawnAttrDestroy(attr);
            }
            NativeMemory.Free(fileActions);
            NativeMemory.Free(attr);
            NativeMemory.Free(sigset);
            FreeStringArray(argvPtr, argv.Count);
            FreeStringArray(envPtr, environment.Count);
            Marshal.FreeCoTaskMem((nint)terminalPtr);
            if (cwdAdded)
            {
                cwd.DangerousRelease();
            }
        }
    }

    // ---- Pseudo-terminals.

    private const int ORdWr = 0x2;
    private const ulong TIOCSWINSZ = 0x5414;

    [LibraryImport(LibName, EntryPoint = "posix_openpt", SetLastError = true)]
    private static partial int SysPosixOpenpt(int flags);

    [LibraryImport(LibName, EntryPoint = "grantpt", SetLastError = true)]
    private static partial int SysGrantpt(int fd);

    [LibraryImport(LibName, EntryPoint = "unlockpt", SetLastError = true)]
    private static partial int SysUnlockpt(int fd);

    [LibraryImport(LibName, EntryPoint = "ptsname_r", SetLastError = true)]
    private static partial int SysPtsnameR(int fd, byte* buffer, nuint length);

    [LibraryImport(LibName, EntryPoint = "posix_spawn_file_actions_addopen")]
    private static partial int SysFileActionsAddOpen(void* fileActions, int fd, byte* path, int flags, uint mode);

    [LibraryImport(LibName, EntryPoint = "ioctl", SetLastError = true)]
    private static partial int IoctlWinsize(int fd, ulong request, ushort* winsize);

    /// <summary>
    /// A new pseudo-terminal: its master (close-on-exec, blocking: read on a thread of its own) and the path of its
    /// slave (/dev/pts/N), owned by <paramref name="uid"/>:<paramref name="gid"/> when given so that its user can reopen it.
    /// </summary>
    public static SafeFileHandle OpenPseudoTerminal(int cols, int rows, int? uid, int? gid, out string slavePath)
    {
        int master = SysPosixOpenpt(ORdWr | ONoCttyBit | OCloExec | ONonBlock);
        if (master < 0)
        {
            throw new IOException($"posix_openpt failed: {DescribeErrno(Marshal.GetLastPInvokeError())}");
        }
        var handle = new SafeFileHandle(master, ownsHandle: true);
        try
        {
            if (SysGrantpt(master) != 0 || SysUnlockpt(master) != 0)
            {
                throw new IOException($"grantpt/unlockpt failed: {DescribeErrno(Marshal.GetLastPInvokeError())}");
            }
            byte* name = stackalloc byte[128];
            int rc = SysPtsnameR(master, name, 128);
            if (rc != 0)
            {
                throw new IOException($"ptsname_r failed: {DescribeErrno(rc)}");
            }
            slavePath = Marshal.PtrToStringUTF8((nint)name)!;
            if (uid is { } u && gid is { } g)
            {
                int slave = OpenPath(slavePath, ORdWr | ONoCttyBit | OCloExec);
                if (slave < 0)
                {
                    throw new IOException($"cannot open {slavePath}: {DescribeErrno(Marshal.GetLastPInvokeError())}");
                }
                int owned = SysFchown(slave, (uint)u, (uint)g);
                int errno = owned != 0 ? Marshal.GetLastPInvokeError() : 0;
                _ = SysClose(slave);
                if (owned != 0)
                {
                    throw new IOException($"cannot give {slavePath} to its user: {DescribeErrno(errno)}");
                }
            }
            ResizeTerminal(handle, cols, rows);
            return handle;
        }
        catch
        {
            handle.Dispose();
            throw;
        }
    }

    /// <summary>TIOCSWINSZ on a terminal's master: the foreground group gets SIGWINCH.</summary>
    public static void ResizeTerminal(SafeFileHandle master, int cols, int rows)
    {
        ushort* size = stackalloc ushort[4];
        size[0] = (ushort)rows;
        size[1] = (ushort)cols;
        size[2] = 0;
        size[3] = 0;
        bool added = false;
        master.DangerousAddRef(ref added);
        try
        {
            if (IoctlWinsize((int)master.DangerousGetHandle(), TIOCSWINSZ, size) != 0)
            {
                throw new IOException($"TIOCSWINSZ failed: {DescribeErrno(Marshal.GetLastPInvokeError())}");
            }
        }
        finally
        {
            master.DangerousRelease();
        }
    }

    /// <summary>
    /// Three close-on-exec pipes for a child's stdio. The agent keeps the write end of stdin (non-blocking,
    /// like <see cref="Spawn"/>'s) and the read ends of stdout and stderr; the child's ends are handed on.
    /// </summary>
    public static void CreateStdioPipes(out SafeFileHandle stdinWrite, out SafeFileHandle stdoutRead, out SafeFileHandle stderrRead,
        out SafeFileHandle childStdin, out SafeFileHandle childStdout, out SafeFileHandle childStderr)
    {
        int* fds = stackalloc int[6];
        for (int i = 0; i < 6; i++)
        {
            fds[i] = -1;
        }
        try
        {
            for (int i = 0; i < 3; i++)
            {
                if (SysPipe2(fds + 2 * i, OCloExec) != 0)
                {
                    throw new IOException($"pipe2 failed: errno {Marshal.GetLastPInvokeError()}");
                }
            }
            int flags = SysFcntl(fds[1], FGetFl, 0);
            if (flags < 0 || SysFcntl(fds[1], FSetFl, flags | ONonBlock) != 0)
            {
                throw new IOException($"fcntl failed: errno {Marshal.GetLastPInvokeError()}");
            }
        }
        catch
        {
            for (int i = 0; i < 6; i++)
            {
                if (fds[i] >= 0)
                {
                    SysClose(fds[i]);
                }
            }
            throw;
        }
        // fds: [0]=stdin read (child), [1]=stdin write (agent), [2]=stdout read (agent),
        // [3]=stdout write (child), [4]=stderr read (agent), [5]=stderr write (child).
        childStdin = new SafeFileHandle(fds[0], ownsHandle: true);
        stdinWrite = new SafeFileHandle(fds[1], ownsHandle: true);
        stdoutRead = new SafeFileHandle(fds[2], ownsHandle: true);
        childStdout = new SafeFileHandle(fds[3], ownsHandle: true);
        stderrRead = new SafeFileHandle(fds[4], ownsHandle: true);
        childStderr = new SafeFileHandle(fds[5], ownsHandle: true);
    }

    /// <summary>
    /// A non-blocking, close-on-exec stream socket connected to the unix socket at <paramref name="path"/>.
    /// Throws <see cref="IOException"/> when nobody listens there (or its backlog is full).
    /// </summary>
    public static SafeFileHandle ConnectUnix(string path)
    {
        // connect() resolves the path and checks write permission on the socket with the thread's identity.
        RequirePathThread();
        byte[] pathBytes = System.Text.Encoding.UTF8.GetBytes(path);
        if (pathBytes.Length >= MaxUnixPathBytes)
        {
            throw new IOException($"socket path {path} is longer than {MaxUnixPathBytes - 1} bytes");
        }
        int fd = SysSocket(AfUnix, SockStream | SockNonBlock | SockCloExec, 0);
        if (fd < 0)
        {
            throw new IOException($"socket failed: errno {Marshal.GetLastPInvokeError()}");
        }
        // struct sockaddr_un: sa_family_t (u16) then the NUL-terminated path.
        byte* address = stackalloc byte[2 + MaxUnixPathBytes];
        new Span<byte>(address, 2 + MaxUnixPathBytes).Clear();
        *(ushort*)address = AfUnix;
        pathBytes.CopyTo(new Span<byte>(address + 2, MaxUnixPathBytes));
        if (SysConnect(fd, address, (uint)(2 + pathBytes.Length + 1)) != 0)
        {
            int errno = Marshal.GetLastPInvokeError();
            SysClose(fd);
            throw new IOException($"cannot connect to {path}: {DescribeErrno(errno)}");
        }
        return new SafeFileHandle(fd, ownsHandle: true);
    }

    /// <summary>
    /// Writes all of <paramref name="data"/> to a non-blocking stream socket, with <paramref name="fds"/>
    /// attached to the first bytes (SCM_RIGHTS). Throws <see cref="IOException"/> when the peer is gone
    /// or has not taken everything within <paramref name="timeoutMs"/>.
    /// </summary>
    public static void SendWithFds(SafeFileHandle socket, ReadOnlySpan<byte> data, ReadOnlySpan<SafeFileHandle> fds, int timeoutMs)
    {
        const int MaxFds = 8;
        if (fds.Length > MaxFds)
        {
            throw new ArgumentException($"at most {MaxFds} file descriptors", nameof(fds));
        }
        // One cmsghdr (size_t length, int level, int type: 16 bytes) followed by the fds, padded to 8.
        int controlLength = 16 + (fds.Length * sizeof(int) + 7) / 8 * 8;
        byte* control = stackalloc byte[16 + MaxFds * sizeof(int)];
        new Span<byte>(control, 16 + MaxFds * sizeof(int)).Clear();
        *(nuint*)control = (nuint)(16 + fds.Length * sizeof(int));
        *(int*)(control + 8) = SolSocket;
        *(int*)(control + 12) = ScmRights;

        var added = new bool[fds.Length];
        bool socketAdded = false;
        try
        {
            socket.DangerousAddRef(ref socketAdded);
            for (int i = 0; i < fds.Length; i++)
            {
                fds[i].DangerousAddRef(ref added[i]);
                ((int*)(control + 16))[i] = (int)fds[i].DangerousGetHandle();
            }
            int fd = (int)socket.DangerousGetHandle();
            long deadline = Environment.TickCount64 + timeoutMs;
            int offset = 0;
            bool fdsSent = fds.Length == 0;
            while (offset < data.Length || !fdsSent)
            {
                int remaining = (int)Math.Max(0, deadline - Environment.TickCount64);
                var pfd = new PollFd { Fd = fd, Events = PollOut };
                int ready = SysPoll(&pfd, 1, remaining);
                if (ready == 0 && remaining == 0)
                {
                    throw new IOException($"peer did not take the message within {timeoutMs} ms");
                }
                if (ready <= 0)
                {
                    continue;
                }
                fixed (byte* p = data)
                {
                    var iov = new IoVec { Base = p + offset, Length = (nuint)(data.Length - offset) };
                    var message = new MsgHdr { Iov = &iov, IovLength = 1 };
                    if (!fdsSent)
                    {
                        message.Control = control;
                        message.ControlLength = (nuint)controlLength;
                    }
                    nint n = SysSendMsg(fd, &message, MsgNoSignal);
                    if (n < 0)
                    {
                        int errno = Marshal.GetLastPInvokeError();
                        if (errno is EIntr or EAgain)
                        {
                            continue;
                        }
                        throw new IOException($"sendmsg failed: {DescribeErrno(errno)}");
                    }
                    offset += (int)n;
                    fdsSent = true;
                }
            }
        }
        finally
        {
            for (int i = 0; i < fds.Length; i++)
            {
                if (added[i])
                {
                    fds[i].DangerousRelease();
                }
            }
            if (socketAdded)
            {
                socket.DangerousRelease();
            }
        }
    }

    /// <summary>
    /// Metadata of <paramref name="name"/> in directory <paramref name="dir"/> (null: relative to the
    /// working directory, or absolute) through statx (one layout on every architecture); a final symlink is
    /// described unless <paramref name="follow"/>. Path thread only. Returns 0 or the errno.
    /// </summary>
    public static int StatAt(SafeFileHandle? dir, string name, bool follow, out FileStatus status)
    {
        RequirePathThread();
        bool added = false;
        try
        {
            dir?.DangerousAddRef(ref added);
            byte* buffer = stackalloc byte[256];
            int dirFd = dir is null ? AtFdCwd : (int)dir.DangerousGetHandle();
            if (SysStatx(dirFd, name, follow ? 0 : AtSymlinkNoFollow, StatxBasicStats, buffer) != 0)
            {
                status = default;
                return Marshal.GetLastPInvokeError();
            }
            status = ParseStatx(buffer);
            return 0;
        }
        finally
        {
            if (added)
            {
                dir!.DangerousRelease();
            }
        }
    }

    /// <summary>fstat-like metadata of an open file through statx. Returns 0 or the errno.</summary>
    public static int Stat(SafeFileHandle handle, out FileStatus status)
    {
        bool added = false;
        try
        {
            handle.DangerousAddRef(ref added);
            byte* buffer = stackalloc byte[256];
            if (SysStatxFd((int)handle.DangerousGetHandle(), "", AtEmptyPath, StatxBasicStats, buffer) != 0)
            {
                status = default;
                return Marshal.GetLastPInvokeError();
            }
            status = ParseStatx(buffer);
            return 0;
        }
        finally
        {
            if (added)
            {
                handle.DangerousRelease();
            }
        }
    }

    private static FileStatus ParseStatx(byte* buffer)
    {
        // struct statx: stx_uid u32 at 20, stx_gid u32 at 24, stx_mode u16 at 28, stx_ino u64 at 32,
        // stx_size u64 at 40, stx_mtime {s64 sec; u32 nsec} at 112, stx_dev_major/minor u32 at 136/140.
        uint links = *(uint*)(buffer + 16);
        uint uid = *(uint*)(buffer + 20);
        uint gid = *(uint*)(buffer + 24);
        int mode = *(ushort*)(buffer + 28);
        ulong inode = *(ulong*)(buffer + 32);
        long size = *(long*)(buffer + 40);
        long seconds = *(long*)(buffer + 112);
        uint nanos = *(uint*)(buffer + 120);
        ulong device = ((ulong)*(uint*)(buffer + 136) << 32) | *(uint*)(buffer + 140);
        var kind = (mode & 0xF000) switch
        {
            0x8000 => FileKindBits.Regular,
            0x4000 => FileKindBits.Directory,
            0xA000 => FileKindBits.Symlink,
            0x1000 => FileKindBits.Fifo,
            0x2000 => FileKindBits.CharDevice,
            0x6000 => FileKindBits.BlockDevice,
            0xC000 => FileKindBits.Socket,
            _ => FileKindBits.Other,
        };
        return new FileStatus(kind, size, seconds * 1000 + nanos / 1_000_000, mode & 0xFFF, seconds * 1_000_000_000 + nanos, inode,
            device, uid, gid, links);
    }

    /// <summary>chown of an open file. Returns 0 or the errno.</summary>
    public static int Fchown(SafeFileHandle handle, int uid, int gid)
    {
        bool added = false;
        try
        {
            handle.DangerousAddRef(ref added);
            return SysFchown((int)handle.DangerousGetHandle(), (uint)uid, (uint)gid) == 0 ? 0 : Marshal.GetLastPInvokeError();
        }
        finally
        {
            if (added)
            {
                handle.DangerousRelease();
            }
        }
    }

    public static bool IsNotFound(int errno) => errno is ENoEnt or ENotDir;

    public static bool IsPermissionDenied(int errno) => errno is EAccess or EPerm;

    /// <summary>Sets CLOCK_REALTIME. Returns 0 or the errno (EPERM without CAP_SYS_TIME).</summary>
    public static int SetRealtimeClock(long unixTimeMs)
    {
        var ts = new TimeSpec { Seconds = unixTimeMs / 1000, Nanoseconds = unixTimeMs % 1000 * 1_000_000 };
        return SysClockSetTime(ClockRealtime, &ts) == 0 ? 0 : Marshal.GetLastPInvokeError();
    }

    public static string DescribeErrno(int errno) => errno switch
    {
        ENoEnt => "no such file or directory",
        EAccess => "permission denied",
        ENoExec => "exec format error",
        ENotDir => "not a directory",
        EPipe => "broken pipe",
        ESrch => "no such process",
        EConnRefused => "connection refused",
        EPerm => "operation not permitted",
        EExist => "file exists",
        ELoop => "a symlink where none may be (or too many levels of them)",
        ENotEmpty => "directory not empty",
        EIsDir => "is a directory",
        EMFile => "too many open files",
        ENxIo => "no such device or address",
        _ => $"errno {errno}",
    };

    private static void Check(int rc, string what)
    {
        if (rc != 0)
        {
            throw new SpawnException(rc, $"{what} failed: {DescribeErrno(rc)}");
        }
    }

    private static byte** AllocStringArray(IReadOnlyList<string> values)
    {
        var array = (byte**)NativeMemory.AllocZeroed((nuint)(values.Count + 1), (nuint)sizeof(byte*));
        for (int i = 0; i < values.Count; i++)
        {
            array[i] = (byte*)Marshal.StringToCoTaskMemUTF8(values[i]);
        }
        return array;
    }

    private static void FreeStringArray(byte** array, int count)
    {
        if (array == null)
        {
            return;
        }
        for (int i = 0; i < count; i++)
        {
            Marshal.FreeCoTaskMem((nint)array[i]);
        }
        NativeMemory.Free(array);
    }

    private const ulong RNDRESEEDCRNG = 0x5207;

    [LibraryImport(LibName, EntryPoint = "open", StringMarshalling = StringMarshalling.Utf8, SetLastError = true)]
    private static partial int OpenPath(string path, int flags);

    [LibraryImport(LibName, EntryPoint = "ioctl", SetLastError = true)]
    private static partial int IoctlNoArg(int fd, ulong request, nint arg);

    /// <summary>
    /// Makes the kernel reseed its CRNG from the input pool now. Writing to /dev/urandom only mixes bytes
    /// into the pool; without a reseed, clones of one snapshot keep producing the same random stream for a
    /// while. Needs CAP_SYS_ADMIN (root in a VM). Returns 0 or an errno.
    /// </summary>
    internal static int ReseedCrng()
    {
        int fd = OpenPath("/dev/urandom", 0x1 | 0x80000); // O_WRONLY | O_CLOEXEC
        if (fd < 0)
        {
            return Marshal.GetLastPInvokeError();
        }
        int rc = IoctlNoArg(fd, RNDRESEEDCRNG, 0);
        int errno = rc < 0 ? Marshal.GetLastPInvokeError() : 0;
        _ = SysClose(fd);
        return errno;
    }

    // ---- Path syscalls. Each runs only on a path thread (Files/PathThreads), whose filesystem identity
    // (fsuid, fsgid, no supplementary groups) is the one the operation is done for: the kernel then
    // checks every lookup, open, create and remove exactly as for that user. ----

    [ThreadStatic]
    private static bool _onPathThread;

    private static readonly bool _arm64 = RuntimeInformation.ProcessArchitecture == Architecture.Arm64;

    // x86-64 and the generic table (arm64) differ in these O_* bits and syscall numbers.
    private static int ODirectoryBit => _arm64 ? 0x4000 : 0x10000;
    private static int ONoFollowBit => _arm64 ? 0x8000 : 0x20000;
    private static long SysOpenatNumber => _arm64 ? 56 : 257;
    private static long SysSetgroupsNumber => _arm64 ? 159 : 116;
    private const int OWrOnlyBit = 0x1;
    private const int OCreatBit = 0x40;
    private const int OExclBit = 0x80;
    private const int ONoCttyBit = 0x100;
    private const int OPathBit = 0x200000;
    private const int FDupFdCloExec = 1030;
    private const long SysOpenat2Number = 437;
    /// <summary>openat2: never follow a /proc magic link (/proc/PID/fd/N, cwd, root) while resolving.</summary>
    private const ulong ResolveNoMagicLinks = 0x02;
    private const int AtRemoveDir = 0x200;
    private const int AtEAccess = 0x200;
    private const int XOk = 1;
    /// <summary>d_name in glibc's 64-bit struct dirent (d_ino u64, d_off i64, d_reclen u16, d_type u8).</summary>
    private const int DirentNameOffset = 19;
    private static int _openat2Missing;

    [StructLayout(LayoutKind.Sequential)]
    private struct OpenHow
    {
        public ulong Flags;
        public ulong Mode;
        public ulong Resolve;
    }

    // glibc's syscall() is assembly that only moves registers, so calling it with fixed arguments is safe.
    [LibraryImport(LibName, EntryPoint = "syscall", SetLastError = true)]
    private static partial long SysCall(long number, nint a1, nint a2, nint a3, nint a4);

    [LibraryImport(LibName, EntryPoint = "mkdirat", SetLastError = true)]
    private static partial int SysMkdirAt(int dirFd, byte* path, uint mode);

    [LibraryImport(LibName, EntryPoint = "unlinkat", SetLastError = true)]
    private static partial int SysUnlinkAt(int dirFd, byte* path, int flags);

    [LibraryImport(LibName, EntryPoint = "symlinkat", SetLastError = true)]
    private static partial int SysSymlinkAt(byte* target, int dirFd, byte* path);

    [LibraryImport(LibName, EntryPoint = "faccessat", SetLastError = true)]
    private static partial int SysFaccessAt(int dirFd, byte* path, int mode, int flags);

    [LibraryImport(LibName, EntryPoint = "statx", SetLastError = true)]
    private static partial int SysStatxRaw(int dirFd, byte* path, int flags, uint mask, byte* buffer);

    [LibraryImport(LibName, EntryPoint = "fchmod", SetLastError = true)]
    private static partial int SysFchmod(int fd, uint mode);

    [LibraryImport(LibName, EntryPoint = "ftruncate", SetLastError = true)]
    private static partial int SysFtruncate(int fd, long length);

    [LibraryImport(LibName, EntryPoint = "fdopendir", SetLastError = true)]
    private static partial nint SysFdopendir(int fd);

    [LibraryImport(LibName, EntryPoint = "readdir", SetLastError = true)]
    private static partial byte* SysReaddir(nint dir);

    [LibraryImport(LibName, EntryPoint = "closedir", SetLastError = true)]
    private static partial int SysClosedir(nint dir);

    [LibraryImport(LibName, EntryPoint = "setfsuid")]
    private static partial int SysSetfsuid(uint uid);

    [LibraryImport(LibName, EntryPoint = "setfsgid")]
    private static partial int SysSetfsgid(uint gid);

    [LibraryImport(LibName, EntryPoint = "getegid")]
    private static partial uint SysGetEgid();

    /// <summary>
    /// Makes the calling thread a path thread: with <paramref name="dropGroups"/> (the agent is root), its
    /// supplementary groups are cleared for good. The raw syscall changes this thread only; glibc's
    /// setgroups() would change every thread of the process (it broadcasts set*id calls). Throws
    /// <see cref="InvalidOperationException"/> when it cannot.
    /// </summary>
    internal static void BecomePathThread(bool dropGroups)
    {
        if (dropGroups && SysCall(SysSetgroupsNumber, 0, 0, 0, 0) != 0)
        {
            throw new InvalidOperationException($"setgroups on a path thread failed: {DescribeErrno(Marshal.GetLastPInvokeError())}");
        }
        _onPathThread = true;
    }

    // x86-64 / generic (arm64) numbers: the raw calls change the calling thread only (glibc broadcasts).
    private static long SysSetfsuidNumber => _arm64 ? 151 : 122;
    private static long SysSetresuidNumber => _arm64 ? 147 : 117;
    private static long SysSetresgidNumber => _arm64 ? 149 : 119;
    private const int ENosys = 38;

    /// <summary>
    /// Whether the kernel has setfsuid. gVisor (runsc 20240729) answers ENOSYS; there a path thread takes
    /// the user's ids as its effective ids instead (see <see cref="SetFilesystemIdentity"/>).
    /// </summary>
    private static readonly Lazy<bool> _hasFsuid = new(() =>
        SysCall(SysSetfsuidNumber, unchecked((nint)uint.MaxValue), 0, 0, 0) != -1 || Marshal.GetLastPInvokeError() != ENosys);

    /// <summary>
    /// Sets this path thread's filesystem identity (fsgid first: it needs CAP_SETGID, which an fsuid
    /// other than 0 does not take away, unlike the file capabilities). Null: the agent's own. Checked by
    /// reading both back; throws <see cref="InvalidOperationException"/> when they did not take.
    /// Where the kernel has no setfsuid (gVisor), the thread's effective uid and gid are set instead with
    /// the raw per-thread setresuid/setresgid, real and saved ids staying the agent's: permission checks
    /// use the effective ids there, and signals and ptrace look at the real and saved ones, so user code
    /// still cannot reach these threads; the effective capabilities leave with euid 0 and come back with it.
    /// </summary>
    internal static void SetFilesystemIdentity(int? uid, int? gid)
    {
        RequirePathThread();
        uint wantUid = uid is { } u ? (uint)u : SysGetUid();
        uint wantGid = gid is { } g ? (uint)g : SysGetGid();
        if (!_hasFsuid.Value)
        {
            SetEffectiveIdentity(wantUid, wantGid);
            return;
        }
        SysSetfsgid(wantGid);
        SysSetfsuid(wantUid);
        // An invalid id (-1) changes nothing and returns the current one.
        if ((uint)SysSetfsgid(uint.MaxValue) != wantGid || (uint)SysSetfsuid(uint.MaxValue) != wantUid)
        {
            throw new InvalidOperationException($"cannot take filesystem identity {wantUid}:{wantGid}");
        }
    }

    private static void SetEffectiveIdentity(uint wantUid, uint wantGid)
    {
        nint keep = unchecked((nint)uint.MaxValue);
        if (SysGetEuid() == wantUid && SysGetEgid() == wantGid)
        {
            return;
        }
        // Back to the agent's euid first (allowed: it is the saved uid), so the gid can change, then to the user's.
        if (SysGetEuid() != SysGetUid() && SysCall(SysSetresuidNumber, keep, (nint)SysGetUid(), keep, 0) != 0
            || SysCall(SysSetresgidNumber, keep, (nint)wantGid, keep, 0) != 0
            || SysCall(SysSetresuidNumber, keep, (nint)wantUid, keep, 0) != 0)
        {
            throw new InvalidOperationException($"cannot take identity {wantUid}:{wantGid}: {DescribeErrno(Marshal.GetLastPInvokeError())}");
        }
        if (SysGetEuid() != wantUid || SysGetEgid() != wantGid)
        {
            throw new InvalidOperationException($"cannot take identity {wantUid}:{wantGid}");
        }
    }

    private static void RequirePathThread()
    {
        if (!_onPathThread)
        {
            throw new InvalidOperationException("a path syscall off the path threads would run with the agent's own identity");
        }
    }

    /// <summary>UTF-8 with the terminating NUL.</summary>
    private static byte[] CString(ReadOnlySpan<byte> utf8)
    {
        byte[] z = new byte[utf8.Length + 1];
        utf8.CopyTo(z);
        return z;
    }

    private static byte[] CString(string text) => CString(System.Text.Encoding.UTF8.GetBytes(text));

    /// <summary>Runs <paramref name="call"/> with the raw fd of <paramref name="dir"/> (AT_FDCWD when null) kept alive.</summary>
    private static int WithDir(SafeFileHandle? dir, Func<int, int> call)
    {
        bool added = false;
        try
        {
            dir?.DangerousAddRef(ref added);
            return call(dir is null ? AtFdCwd : (int)dir.DangerousGetHandle());
        }
        finally
        {
            if (added)
            {
                dir!.DangerousRelease();
            }
        }
    }

    /// <summary>
    /// openat2 (magic links never followed) of <paramref name="name"/> in <paramref name="dir"/> (null:
    /// absolute or relative to the working directory), always close-on-exec, non-blocking (a FIFO never
    /// blocks the open) and without taking a controlling terminal; openat where the kernel has no
    /// openat2. <paramref name="mode"/> is used with <see cref="OpenFlags.Create"/>. Path thread only.
    /// Returns 0 or the errno.
    /// </summary>
    public static int OpenAt(SafeFileHandle? dir, ReadOnlySpan<byte> name, OpenFlags flags, int mode, out SafeFileHandle handle)
    {
        RequirePathThread();
        int bits = OCloExec
            | ((flags & OpenFlags.Directory) != 0 ? ODirectoryBit : 0)
            | ((flags & OpenFlags.NoFollow) != 0 ? ONoFollowBit : 0);
        // O_PATH takes no other flags (openat2 refuses them).
        bits |= (flags & OpenFlags.PathOnly) != 0
            ? OPathBit
            : ONonBlock | ONoCttyBit
              | ((flags & OpenFlags.WriteOnly) != 0 ? OWrOnlyBit : 0)
              | ((flags & OpenFlags.Create) != 0 ? OCreatBit : 0)
              | ((flags & OpenFlags.Exclusive) != 0 ? OExclBit : 0);
        ulong createMode = (flags & OpenFlags.Create) != 0 ? (ulong)(mode & 0xfff) : 0;
        byte[] path = CString(name);
        long fd = -1;
        int errno = WithDir(dir, dirFd =>
        {
            fixed (byte* p = path)
            {
                if (Volatile.Read(ref _openat2Missing) == 0)
                {
                    var how = new OpenHow { Flags = (ulong)bits, Mode = createMode, Resolve = ResolveNoMagicLinks };
                    fd = SysCall(SysOpenat2Number, dirFd, (nint)p, (nint)(&how), sizeof(OpenHow));
                    if (fd >= 0)
                    {
                        return 0;
                    }
                    int e = Marshal.GetLastPInvokeError();
                    if (e != ENoSys)
                    {
                        return e;
                    }
                    Volatile.Write(ref _openat2Missing, 1);
                }
                fd = SysCall(SysOpenatNumber, dirFd, (nint)p, bits, (nint)createMode);
                return fd >= 0 ? 0 : Marshal.GetLastPInvokeError();
            }
        });
        handle = errno == 0 ? new SafeFileHandle((nint)fd, ownsHandle: true) : null!;
        return errno;
    }

    public static int OpenAt(SafeFileHandle? dir, string name, OpenFlags flags, int mode, out SafeFileHandle handle) =>
        OpenAt(dir, System.Text.Encoding.UTF8.GetBytes(name), flags, mode, out handle);

    /// <summary>Metadata of <paramref name="name"/> in <paramref name="dir"/>, a final symlink not followed. Path thread only.</summary>
    public static int StatAt(SafeFileHandle dir, ReadOnlySpan<byte> name, out FileStatus status)
    {
        RequirePathThread();
        byte[] path = CString(name);
        FileStatus found = default;
        int errno = WithDir(dir, dirFd =>
        {
            byte* buffer = stackalloc byte[256];
            fixed (byte* p = path)
            {
                if (SysStatxRaw(dirFd, p, AtSymlinkNoFollow, StatxBasicStats, buffer) != 0)
                {
                    return Marshal.GetLastPInvokeError();
                }
            }
            found = ParseStatx(buffer);
            return 0;
        });
        status = found;
        return errno;
    }

    /// <summary>mkdirat. Path thread only. Returns 0 or the errno (EEXIST when something is there).</summary>
    public static int MakeDirectoryAt(SafeFileHandle? dir, ReadOnlySpan<byte> name, int mode)
    {
        RequirePathThread();
        byte[] path = CString(name);
        return WithDir(dir, dirFd =>
        {
            fixed (byte* p = path)
            {
                return SysMkdirAt(dirFd, p, (uint)mode) == 0 ? 0 : Marshal.GetLastPInvokeError();
            }
        });
    }

    /// <summary>unlinkat: the entry itself (a symlink, not its target); <paramref name="directory"/>: rmdir. Path thread only.</summary>
    public static int UnlinkAt(SafeFileHandle dir, ReadOnlySpan<byte> name, bool directory)
    {
        RequirePathThread();
        byte[] path = CString(name);
        return WithDir(dir, dirFd =>
        {
            fixed (byte* p = path)
            {
                return SysUnlinkAt(dirFd, p, directory ? AtRemoveDir : 0) == 0 ? 0 : Marshal.GetLastPInvokeError();
            }
        });
    }

    /// <summary>symlinkat: <paramref name="name"/> in <paramref name="dir"/> pointing at <paramref name="target"/>. Path thread only.</summary>
    public static int SymlinkAt(string target, SafeFileHandle dir, ReadOnlySpan<byte> name)
    {
        RequirePathThread();
        byte[] to = CString(target);
        byte[] path = CString(name);
        return WithDir(dir, dirFd =>
        {
            fixed (byte* t = to)
            fixed (byte* p = path)
            {
                return SysSymlinkAt(t, dirFd, p) == 0 ? 0 : Marshal.GetLastPInvokeError();
            }
        });
    }

    /// <summary>Whether the thread's filesystem identity may execute <paramref name="path"/> (faccessat with AT_EACCESS). Path thread only.</summary>
    public static bool CanExecute(string path)
    {
        RequirePathThread();
        byte[] z = CString(path);
        fixed (byte* p = z)
        {
            return SysFaccessAt(AtFdCwd, p, XOk, AtEAccess) == 0;
        }
    }

    /// <summary>
    /// The names in the directory <paramref name="dir"/> is open on (without . and ..), as raw bytes. Reads
    /// through a fresh descriptor of it ("." opened relative to it), so the read permission is checked with
    /// the thread's identity and the handle's own offset is untouched. Path thread only.
    /// </summary>
    public static int ReadDirectory(SafeFileHandle dir, List<byte[]> names)
    {
        int errno = OpenAt(dir, "."u8, OpenFlags.ReadOnly | OpenFlags.Directory, 0, out var reading);
        if (errno != 0)
        {
            return errno;
        }
        // fdopendir takes the descriptor over; closedir closes it.
        int fd = (int)reading.DangerousGetHandle();
        reading.SetHandleAsInvalid();
        nint stream = SysFdopendir(fd);
        if (stream == 0)
        {
            errno = Marshal.GetLastPInvokeError();
            SysClose(fd);
            return errno;
        }
        try
        {
            while (true)
            {
                byte* entry = SysReaddir(stream);
                if (entry == null)
                {
                    return Marshal.GetLastPInvokeError();
                }
                var name = MemoryMarshal.CreateReadOnlySpanFromNullTerminated(entry + DirentNameOffset);
                if (!name.SequenceEqual("."u8) && !name.SequenceEqual(".."u8))
                {
                    names.Add(name.ToArray());
                }
            }
        }
        finally
        {
            SysClosedir(stream);
        }
    }

    /// <summary>chmod of an open file. Returns 0 or the errno.</summary>
    public static int Fchmod(SafeFileHandle handle, int mode) =>
        WithDir(handle, fd => SysFchmod(fd, (uint)mode) == 0 ? 0 : Marshal.GetLastPInvokeError());

    /// <summary>Cuts an open file to <paramref name="length"/> bytes. Returns 0 or the errno.</summary>
    public static int Truncate(SafeFileHandle handle, long length) =>
        WithDir(handle, fd => SysFtruncate(fd, length) == 0 ? 0 : Marshal.GetLastPInvokeError());
}
