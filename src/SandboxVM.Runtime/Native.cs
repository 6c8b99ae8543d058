using System.Runtime.InteropServices;

namespace SandboxVM.Runtime;

/// <summary>The few libc calls the host side needs. Nothing else in the runtime touches native code.</summary>
internal static partial class Native
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
}
