namespace SandboxVM.Runtime.Cgroups;

/// <summary>Resource caps for one sandbox, enforced by the host kernel.</summary>
public sealed record CgroupLimits(long MemoryBytes, int Pids, double Cpus);

/// <summary>
/// One sandbox's cgroup. v1 hosts get one directory per controller (memory, pids, cpu); v2 hosts one
/// directory in the unified tree. Processes join it before they exec anything (see <see cref="ProcsFiles"/>),
/// so nothing a sandbox starts can escape its limits.
/// </summary>
public abstract class Cgroup
{
    /// <summary>Parent group of every sandbox; leftovers under it belong to a server that died.</summary>
    public const string ParentName = "sandboxvm";

    public string Name { get; }

    protected Cgroup(string name) => Name = name;

    /// <summary>The cgroup.procs files a new process must write its pid to (one per v1 controller).</summary>
    public abstract IReadOnlyList<string> ProcsFiles { get; }

    /// <summary>Times the kernel OOM-killed a process of this group.</summary>
    public abstract long OomKillCount();

    /// <summary>Peak memory use in bytes, when the kernel reports it.</summary>
    public abstract long? PeakMemoryBytes();

    /// <summary>Pids currently in the group.</summary>
    public abstract IReadOnlyList<int> Pids();

    /// <summary>Whether this group has a freezer (v1: the <c>freezer</c> hierarchy is mounted; v2: always).</summary>
    public abstract bool CanFreeze { get; }

    /// <summary>
    /// Freezes (true) or thaws every process of the group through the kernel's freezer, and waits until
    /// the kernel reports the group frozen (a freeze only completes once every task has stopped).
    /// </summary>
    public async Task SetFrozenAsync(bool frozen, CancellationToken cancellationToken)
    {
        WriteFreezer(frozen);
        // The kernel stops tasks one by one (FREEZING, then FROZEN); a thaw is immediate.
        while (frozen && !ReadFrozen())
        {
            await Task.Delay(2, cancellationToken);
        }
    }

    protected abstract void WriteFreezer(bool frozen);

    protected abstract bool ReadFrozen();

    /// <summary>SIGKILL every process of the group and remove it. Safe to call twice.</summary>
    public async Task DestroyAsync(CancellationToken cancellationToken = default)
    {
        // Processes may fork while we kill; repeat until the group is empty or a deadline passes.
        var deadline = DateTime.UtcNow + TimeSpan.FromSeconds(5);
        while (true)
        {
            var pids = Pids();
            if (pids.Count == 0)
            {
                break;
            }
            KillAll(pids);
            if (CanFreeze)
            {
                // A v1-frozen task only acts on SIGKILL once thawed; thawed after the kill, it runs no code of its own.
                WriteFreezer(false);
            }
            if (DateTime.UtcNow > deadline)
            {
                break;
            }
            await Task.Delay(10, cancellationToken);
        }
        RemoveDirectories();
    }

    protected virtual void KillAll(IReadOnlyList<int> pids)
    {
        foreach (int pid in pids)
        {
            HostNative.Kill(pid, HostNative.SIGKILL);
        }
    }

    protected abstract void RemoveDirectories();

    protected static void TryRemoveDir(string dir)
    {
        try
        {
            if (Directory.Exists(dir))
            {
                Directory.Delete(dir);
            }
        }
        catch (IOException)
        {
            // Still busy (a process is exiting); the next start's sweep removes it.
        }
    }

    protected static IReadOnlyList<int> ReadPids(string procsFile)
    {
        try
        {
            return File.ReadAllLines(procsFile).Where(l => l.Length > 0).Select(int.Parse).ToList();
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            return [];
        }
    }

    protected static long ReadKeyedValue(string file, string key)
    {
        try
        {
            foreach (string line in File.ReadLines(file))
            {
                var parts = line.Split(' ', 2);
                if (parts.Length == 2 && parts[0] == key && long.TryParse(parts[1], out long v))
                {
                    return v;
                }
            }
        }
        catch (IOException)
        {
        }
        return 0;
    }

    protected static string? ReadText(string file)
    {
        try
        {
            return File.ReadAllText(file).Trim();
        }
        catch (IOException)
        {
            return null;
        }
    }

    protected static long? ReadLong(string file)
    {
        try
        {
            return long.TryParse(File.ReadAllText(file).Trim(), out long v) ? v : null;
        }
        catch (IOException)
        {
            return null;
        }
    }
}
