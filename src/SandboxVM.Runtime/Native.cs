using System.Runtime.InteropServices;

namespace SandboxVM.Runtime;

/// <summary>The few libc calls the host side needs. Nothing else in the runtime touches native code.</summary>
internal static partial class Native
{
    internal const int SIGKILL = 9;

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
