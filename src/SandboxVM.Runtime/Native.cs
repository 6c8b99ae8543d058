using System.Runtime.InteropServices;
using Microsoft.Win32.SafeHandles;

namespace SandboxVM.Runtime;

/// <summary>
/// The few libc calls the host side needs, and libseccomp (Debian's libseccomp2, present wherever
/// bubblewrap is) to compile the process runtime's seccomp filter. Nothing else in the runtime touches
/// native code but the qemu backend's <c>QemuNative</c>.
/// </summary>
internal static unsafe partial class Native
{
    internal const int SIGKILL = 9;

    private const int O_RDWR = 2;
    private const int O_CLOEXEC = 0x80000;
    private const ulong KVM_GET_API_VERSION = 0xAE00;
    private const ulong KVM_CREATE_VM = 0xAE01;
    private const int KvmApiVersion = 12;

    [LibraryImport("libc", EntryPoint = "open", StringMarshalling = StringMarshalling.Utf8, SetLastError = true)]
    private static partial int Open(string path, int flags);

    [LibraryImport("libc", EntryPoint = "ioctl", SetLastError = true)]
    private static partial int Ioctl(int fd, ulong request, ulong arg);

    [LibraryImport("libc", EntryPoint = "close")]
    private static partial int Close(int fd);

    /// <summary>
    /// True when KVM can really create a VM here: the device node alone proves nothing (it can exist
    /// without permission, or with an API the kernel refuses).
    /// </summary>
    internal static bool KvmCanCreateVm(string device = "/dev/kvm")
    {
        int kvm = Open(device, O_RDWR | O_CLOEXEC);
        if (kvm < 0)
        {
            return false;
        }
        try
        {
            if (Ioctl(kvm, KVM_GET_API_VERSION, 0) != KvmApiVersion)
            {
                return false;
            }
            int vm = Ioctl(kvm, KVM_CREATE_VM, 0);
            if (vm < 0)
            {
                return false;
            }
            _ = Close(vm);
            return true;
        }
        finally
        {
            _ = Close(kvm);
        }
    }

    [LibraryImport("libc", EntryPoint = "kill", SetLastError = true)]
    private static partial int SysKill(int pid, int signal);

    /// <summary>Sends a signal; a pid that is already gone is not an error.</summary>
    internal static void Kill(int pid, int signal)
    {
        if (pid > 0)
        {
            _ = SysKill(pid, signal);
        }
    }

    [LibraryImport("libc", EntryPoint = "statx", StringMarshalling = StringMarshalling.Utf8, SetLastError = true)]
    private static partial int SysStatx(int dirfd, string path, int flags, uint mask, byte* buffer);

    /// <summary>Owner uid of a path (symlinks not followed), or null when it is gone.</summary>
    internal static int? OwnerOf(string path)
    {
        const int AtFdCwd = -100;
        const int AtSymlinkNoFollow = 0x100;
        const uint StatxUid = 0x8;
        byte* buffer = stackalloc byte[256];
        // struct statx: uid u32 @20.
        return SysStatx(AtFdCwd, path, AtSymlinkNoFollow, StatxUid, buffer) == 0 ? *(int*)(buffer + 20) : null;
    }

    // libseccomp: the filter is built from names (resolved for the host's own architecture) and
    // exported as the classic BPF program bubblewrap loads with --seccomp.
    private const string LibSeccomp = "libseccomp.so.2";
    internal const uint SeccompAllow = 0x7fff0000;
    internal const uint SeccompKillProcess = 0x80000000;
    private const int SeccompAttrBadArchAction = 2;
    private const int ScmpNrError = -1;

    internal static uint SeccompErrno(int errno) => 0x00050000u | (uint)(errno & 0xffff);

    /// <summary>struct scmp_arg_cmp.</summary>
    [StructLayout(LayoutKind.Sequential)]
    internal struct SeccompArgCompare
    {
        public uint Arg;
        public int Op;
        public ulong DatumA;
        public ulong DatumB;
    }

    /// <summary>enum scmp_compare: (arg &amp; DatumA) == DatumB.</summary>
    internal const int SeccompMaskedEqual = 7;

    [LibraryImport(LibSeccomp, EntryPoint = "seccomp_init")]
    private static partial nint SysSeccompInit(uint defaultAction);

    [LibraryImport(LibSeccomp, EntryPoint = "seccomp_release")]
    private static partial void SysSeccompRelease(nint context);

    [LibraryImport(LibSeccomp, EntryPoint = "seccomp_syscall_resolve_name", StringMarshalling = StringMarshalling.Utf8)]
    private static partial int SysSeccompResolve(string name);

    [LibraryImport(LibSeccomp, EntryPoint = "seccomp_rule_add_array")]
    private static partial int SysSeccompRuleAdd(nint context, uint action, int syscall, uint count, SeccompArgCompare* compares);

    [LibraryImport(LibSeccomp, EntryPoint = "seccomp_attr_set")]
    private static partial int SysSeccompAttrSet(nint context, int attribute, uint value);

    [LibraryImport(LibSeccomp, EntryPoint = "seccomp_export_bpf")]
    private static partial int SysSeccompExportBpf(nint context, int fd);

    [LibraryImport("libc", EntryPoint = "memfd_create", StringMarshalling = StringMarshalling.Utf8, SetLastError = true)]
    private static partial int SysMemfdCreate(string name, uint flags);

    [LibraryImport("libc", EntryPoint = "fcntl", SetLastError = true)]
    private static partial int SysFcntl(int fd, int command, int argument);

    /// <summary>One rule: <paramref name="Syscall"/> (by name) answers <paramref name="Action"/>, when every compare holds.</summary>
    internal readonly record struct SeccompRule(string Syscall, uint Action, SeccompArgCompare[] Compares);

    /// <summary>
    /// Compiles a filter that allows everything but <paramref name="rules"/>, and answers a foreign
    /// architecture (on x86-64 also the x32 ABI) with <paramref name="badArchAction"/>, into a sealed
    /// memfd holding the BPF program. Names this libseccomp does not know are returned, not added.
    /// </summary>
    internal static SafeFileHandle CompileSeccomp(IEnumerable<SeccompRule> rules, uint badArchAction, out List<string> unknown)
    {
        unknown = [];
        nint context = SysSeccompInit(SeccompAllow);
        if (context == 0)
        {
            throw new InvalidOperationException("seccomp_init failed");
        }
        try
        {
            Check(SysSeccompAttrSet(context, SeccompAttrBadArchAction, badArchAction), "seccomp_attr_set");
            foreach (var rule in rules)
            {
                int nr = SysSeccompResolve(rule.Syscall);
                if (nr == ScmpNrError)
                {
                    unknown.Add(rule.Syscall);
                    continue;
                }
                fixed (SeccompArgCompare* compares = rule.Compares)
                {
                    Check(SysSeccompRuleAdd(context, rule.Action, nr, (uint)rule.Compares.Length, compares), "seccomp_rule_add " + rule.Syscall);
                }
            }
            // MFD_CLOEXEC | MFD_ALLOW_SEALING: children open it by its /proc path, never inherit it.
            int fd = SysMemfdCreate("sandboxvm-seccomp", 0x1 | 0x2);
            if (fd < 0)
            {
                throw new IOException($"memfd_create failed: errno {Marshal.GetLastPInvokeError()}");
            }
            var handle = new SafeFileHandle(fd, ownsHandle: true);
            try
            {
                Check(SysSeccompExportBpf(context, fd), "seccomp_export_bpf");
                // F_ADD_SEALS: F_SEAL_SEAL | F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_WRITE; the program never changes.
                if (SysFcntl(fd, 1033, 0x1 | 0x2 | 0x4 | 0x8) != 0)
                {
                    throw new IOException($"sealing the seccomp memfd failed: errno {Marshal.GetLastPInvokeError()}");
                }
                return handle;
            }
            catch
            {
                handle.Dispose();
                throw;
            }
        }
        finally
        {
            SysSeccompRelease(context);
        }

        static void Check(int result, string what)
        {
            if (result != 0)
            {
                throw new InvalidOperationException($"{what} failed: {result}");
            }
        }
    }
}
