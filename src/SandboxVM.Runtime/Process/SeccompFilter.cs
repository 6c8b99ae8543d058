using Microsoft.Win32.SafeHandles;
using static SandboxVM.Runtime.Native;

namespace SandboxVM.Runtime.Process;

/// <summary>
/// The seccomp filter bubblewrap installs just before it execs the agent (and so over everything the
/// agent starts). Everything is allowed but the system calls below: a sandbox never needs them, and each
/// widens the host kernel's attack surface (the process runtime shares the host kernel). They fail with
/// EPERM, as they would for any unprivileged process, so programs that probe them carry on. A foreign
/// architecture (32-bit x86 through int 0x80) and on x86-64 the x32 ABI are not filtered by name: the
/// process is killed (SIGSYS), since a program of a foreign ABI that sees EPERM even on exit would spin.
/// </summary>
internal static class SeccompFilter
{
    private const int EPerm = 1;
    private const int ENoSys = 38;

    /// <summary>Denied with EPERM whatever their arguments: (system call, why).</summary>
    internal static readonly (string Syscall, string Why)[] Denied =
    [
        ("add_key", "kernel keyrings: state shared per host uid, a steady source of kernel bugs"),
        ("keyctl", "kernel keyrings"),
        ("request_key", "kernel keyrings"),
        ("bpf", "eBPF programs and maps"),
        ("perf_event_open", "performance counters: kernel memory layout, side channels"),
        ("userfaultfd", "lets an exploit stall the kernel on a page fault at will"),
        ("io_uring_setup", "io_uring: a second system call interface that seccomp cannot see into"),
        ("io_uring_enter", "io_uring"),
        ("io_uring_register", "io_uring"),
        ("kexec_load", "loading a new kernel"),
        ("kexec_file_load", "loading a new kernel"),
        ("init_module", "kernel modules"),
        ("finit_module", "kernel modules"),
        ("delete_module", "kernel modules"),
        ("create_module", "kernel modules (obsolete)"),
        ("get_kernel_syms", "kernel modules (obsolete)"),
        ("query_module", "kernel modules (obsolete)"),
        ("mount", "mounts: the sandbox's file system is fixed by bubblewrap"),
        ("umount2", "mounts"),
        ("pivot_root", "mounts"),
        ("chroot", "mounts"),
        ("move_mount", "the new mount API"),
        ("open_tree", "the new mount API"),
        ("fsopen", "the new mount API"),
        ("fsmount", "the new mount API"),
        ("fspick", "the new mount API"),
        ("fsconfig", "the new mount API"),
        ("mount_setattr", "the new mount API"),
        ("unshare", "new namespaces (nested user namespaces are disabled too)"),
        ("setns", "entering namespaces"),
        ("ptrace", "tracing: no toolchain of the templates needs it"),
        ("process_vm_readv", "another process's memory, as ptrace"),
        ("process_vm_writev", "another process's memory, as ptrace"),
        ("kcmp", "comparing kernel objects of other processes"),
        ("pidfd_getfd", "taking another process's file descriptors"),
        ("swapon", "swap"),
        ("swapoff", "swap"),
        ("reboot", "reboot"),
        ("acct", "process accounting"),
        ("quotactl", "disk quotas"),
        ("quotactl_fd", "disk quotas"),
        ("open_by_handle_at", "opens files by handle, around every path check"),
        ("name_to_handle_at", "file handles"),
        ("lookup_dcookie", "kernel profiling"),
        ("syslog", "the kernel log"),
        ("fanotify_init", "file system wide notifications"),
        ("uselib", "obsolete library loading"),
        ("ustat", "obsolete"),
        ("sysfs", "obsolete"),
        ("_sysctl", "obsolete"),
        ("nfsservctl", "obsolete"),
        ("iopl", "I/O ports"),
        ("ioperm", "I/O ports"),
        ("settimeofday", "the host clock"),
        ("clock_settime", "the host clock"),
        ("clock_adjtime", "the host clock"),
        ("mbind", "NUMA memory policy: host memory placement"),
        ("set_mempolicy", "NUMA memory policy"),
        ("set_mempolicy_home_node", "NUMA memory policy"),
        ("migrate_pages", "NUMA page migration"),
        ("move_pages", "NUMA page migration"),
    ];

    /// <summary>clone flags that create namespaces (CLONE_NEWTIME fits only clone3 and unshare).</summary>
    internal static readonly (ulong Flag, string Name)[] NamespaceFlags =
    [
        (0x00020000, "CLONE_NEWNS"),
        (0x02000000, "CLONE_NEWCGROUP"),
        (0x04000000, "CLONE_NEWUTS"),
        (0x08000000, "CLONE_NEWIPC"),
        (0x10000000, "CLONE_NEWUSER"),
        (0x20000000, "CLONE_NEWPID"),
        (0x40000000, "CLONE_NEWNET"),
    ];

    /// <summary>
    /// personality flags refused: they turn off address space randomisation or make data executable.
    /// libseccomp cannot compare one argument twice in a rule, so the query value 0xffffffff (all bits)
    /// is refused too; nothing in the templates asks it.
    /// </summary>
    internal static readonly (ulong Flag, string Name)[] PersonalityFlags =
    [
        (0x0040000, "ADDR_NO_RANDOMIZE"),
        (0x0100000, "MMAP_PAGE_ZERO"),
        (0x0200000, "ADDR_COMPAT_LAYOUT"),
        (0x0400000, "READ_IMPLIES_EXEC"),
        (0x0800000, "ADDR_LIMIT_32BIT"),
        (0x8000000, "ADDR_LIMIT_3GB"),
    ];

    internal static IEnumerable<SeccompRule> Rules()
    {
        foreach (var (syscall, _) in Denied)
        {
            yield return new SeccompRule(syscall, SeccompErrno(EPerm), []);
        }
        foreach (var (flag, _) in NamespaceFlags)
        {
            yield return new SeccompRule("clone", SeccompErrno(EPerm), [MaskHas(0, flag)]);
        }
        foreach (var (flag, _) in PersonalityFlags)
        {
            yield return new SeccompRule("personality", SeccompErrno(EPerm), [MaskHas(0, flag)]);
        }
        // clone3 takes its flags in memory, where seccomp cannot look. ENOSYS, not EPERM: glibc then
        // falls back to clone, whose flags the rules above do see.
        yield return new SeccompRule("clone3", SeccompErrno(ENoSys), []);
    }

    /// <summary>The compiled program in a sealed memfd; names libseccomp does not know are left out and returned.</summary>
    public static SafeFileHandle Compile(out List<string> unknown) => CompileSeccomp(Rules(), SeccompKillProcess, out unknown);

    private static SeccompArgCompare MaskHas(uint arg, ulong flag) => new() { Arg = arg, Op = SeccompMaskedEqual, DatumA = flag, DatumB = flag };
}
