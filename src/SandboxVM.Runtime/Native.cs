using System.Runtime.InteropServices;
using Microsoft.Win32.SafeHandles;

namespace SandboxVM.Runtime;

/// <summary>
/// libseccomp (Debian's libseccomp2, present wherever bubblewrap is), and the memfd its program is
/// exported to, for the process runtime's seccomp filter. Every other libc call of the runtime is
/// <see cref="HostNative"/>'s.
/// </summary>
internal static unsafe partial class Native
{
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
