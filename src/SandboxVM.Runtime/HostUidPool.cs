using System.Globalization;

namespace SandboxVM.Runtime;

/// <summary>
/// Unprivileged host uids, one per live sandbox (a QEMU process, a bubblewrap sandbox), so that no two
/// sandboxes share a uid: one cannot signal, trace or read another's processes, and per-uid kernel
/// limits (RLIMIT_NPROC, keyrings, inotify) are not shared. One set per server process, whatever
/// runtime instances it has. A uid is picked at random in the range, skipping any that a process on
/// the host runs as (a leftover of a dead server, or a server of another build sharing the range).
/// </summary>
internal static class HostUidPool
{
    private static readonly HashSet<int> _used = [];

    /// <summary>A uid in [<paramref name="first"/>, <paramref name="first"/> + <paramref name="count"/>) no live sandbox holds.</summary>
    public static int Allocate(int first, int count)
    {
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(first);
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(count);
        var taken = UidsOfRunningProcesses(first, count);
        lock (_used)
        {
            taken.UnionWith(_used.Where(u => u >= first && u - first < count));
            if (taken.Count >= count)
            {
                throw new InvalidOperationException($"all {count} sandbox uids are in use");
            }
            while (true)
            {
                int uid = first + Random.Shared.Next(count);
                if (!taken.Contains(uid) && _used.Add(uid))
                {
                    return uid;
                }
            }
        }
    }

    /// <summary>Gives a uid back once nothing runs as it any more.</summary>
    public static void Release(int uid)
    {
        lock (_used)
        {
            _used.Remove(uid);
        }
    }

    /// <summary>Effective uids in the range of the host's processes (the owner of /proc/PID).</summary>
    private static HashSet<int> UidsOfRunningProcesses(int first, int count)
    {
        var found = new HashSet<int>();
        foreach (int pid in HostProcs.Pids())
        {
            if (HostNative.Stat($"/proc/{pid.ToString(CultureInfo.InvariantCulture)}", followLinks: false)?.Uid is int uid && uid >= first && uid - first < count)
            {
                found.Add(uid);
            }
        }
        return found;
    }
}
