namespace SandboxVM.Agent;

/// <summary>Kernel settings the agent makes when it is the guest's init (nobody else would: there is no systemd).</summary>
internal static class GuestKernel
{
    /// <summary>
    /// The link protections systemd turns on everywhere else (the kernel's defaults are 0): no symlink in a
    /// sticky world-writable directory (/tmp) is followed unless its owner is the follower or the
    /// directory's; no hard link to a file one does not own; no O_CREAT open of someone else's FIFO or
    /// regular file in such a directory. The agent already acts on files as the user (see
    /// <see cref="Files.PathThreads"/>); these cover what user code itself, or any other root process,
    /// would be fooled into.
    /// </summary>
    public static void ProtectLinks()
    {
        (string Name, string Value)[] settings =
        [
            ("protected_hardlinks", "1"),
            ("protected_symlinks", "1"),
            ("protected_fifos", "2"),
            ("protected_regular", "2"),
        ];
        foreach (var (name, value) in settings)
        {
            try
            {
                File.WriteAllText($"/proc/sys/fs/{name}", value);
            }
            catch (Exception e) when (AgentException.IsIo(e))
            {
                AgentLog.Write($"cannot set fs.{name}={value}: {e.Message}");
            }
        }
    }
}
