namespace SandboxVM.Core.Pools;

/// <summary>The memory the host can still give (the kernel's estimate, <c>MemAvailable</c> in /proc/meminfo).</summary>
public static class HostMemory
{
    /// <summary>Bytes available now, or null where the kernel does not say (not Linux, an old kernel).</summary>
    public static long? AvailableBytes()
    {
        try
        {
            foreach (string line in File.ReadLines("/proc/meminfo"))
            {
                // "MemAvailable:   18992312 kB"
                if (line.StartsWith("MemAvailable:", StringComparison.Ordinal)
                    && long.TryParse(line.AsSpan("MemAvailable:".Length).Trim().TrimEnd("kB").Trim(), out long kib))
                {
                    return kib * 1024;
                }
            }
        }
        catch (IOException)
        {
        }
        catch (UnauthorizedAccessException)
        {
        }
        return null;
    }
}
