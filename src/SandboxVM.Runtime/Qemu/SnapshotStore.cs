using System.Collections.Concurrent;
using System.Globalization;
using System.Text.Json;
using System.Text.Json.Nodes;

namespace SandboxVM.Runtime.Qemu;

/// <summary>
/// Which snapshots in the store are in use, by this server or by any other sharing the host (another
/// build of the server has other snapshot keys for the same template). A snapshot is in use when it was
/// restored (or saved) within a grace period, recorded in its <c>last-used</c> file, or when a live VM
/// maps it: a run directory of a live server names it, or a running process's command line (QEMU's
/// <c>mem-path=</c>) contains its RAM file, whatever run directory its server uses.
/// </summary>
internal static class SnapshotStore
{
    /// <summary>Its mtime is the snapshot's last restore (written at most every <see cref="UsageStamp.MarkInterval"/> per process).</summary>
    internal const string LastUsedFileName = "last-used";

    /// <summary>In a VM's run directory: the RAM file it maps (absent for a VM with anonymous RAM).</summary>
    internal const string RunDirMemoryFileName = "memory-file";

    /// <summary>Records a use of <paramref name="snapshotDir"/>: sets the mtime of its last-used file, at most once a minute per process.</summary>
    internal static void MarkUsed(string snapshotDir, TimeProvider? time = null) => UsageStamp.Mark(Path.Combine(snapshotDir, LastUsedFileName), time);

    /// <summary>Last restore or save of a snapshot: the newest of its last-used file's, its meta.json's and its directory's mtime.</summary>
    internal static DateTime LastUsedUtc(string snapshotDir) =>
        UsageStamp.LastUsedUtc(Path.Combine(snapshotDir, LastUsedFileName), Path.Combine(snapshotDir, QemuRuntime.MetaFileName), snapshotDir);

    /// <summary>
    /// Snapshots of <paramref name="template"/> other than <paramref name="keep"/> that nobody uses: not
    /// restored within <paramref name="grace"/> and not in <paramref name="referenced"/>. Unfinished
    /// builds (temp names) and directories without a readable meta.json are never chosen.
    /// </summary>
    internal static List<string> SelectStale(string snapshotRoot, string template, string keep, DateTime nowUtc, TimeSpan grace,
        IReadOnlySet<string> referenced)
    {
        var stale = new List<string>();
        if (!Directory.Exists(snapshotRoot))
        {
            return stale;
        }
        foreach (string dir in Directory.GetDirectories(snapshotRoot))
        {
            string name = Path.GetFileName(dir);
            if (name == keep || name.StartsWith('.') || name.Contains(CachePhase.TmpMarker, StringComparison.Ordinal) || referenced.Contains(name))
            {
                continue;
            }
            if (TemplateOf(dir) != template)
            {
                continue;
            }
            if (nowUtc - LastUsedUtc(dir) < grace)
            {
                continue;
            }
            stale.Add(dir);
        }
        return stale;
    }

    /// <summary>
    /// Removes what <see cref="SelectStale"/> chooses, reporting each removal and each failure (half
    /// gone, or not ours to delete: left alone). <paramref name="referenced"/> is asked once, inside the
    /// same error handling as the listing.
    /// </summary>
    internal static void RemoveStale(string snapshotRoot, string template, string keep, DateTime nowUtc, TimeSpan grace,
        Func<IReadOnlySet<string>> referenced, Action<string> removed, Action<string, string> failed)
    {
        try
        {
            foreach (string dir in SelectStale(snapshotRoot, template, keep, nowUtc, grace, referenced()))
            {
                try
                {
                    Directory.Delete(dir, recursive: true);
                    removed(dir);
                }
                catch (Exception e) when (e is IOException or UnauthorizedAccessException)
                {
                    failed(dir, e.Message);
                }
            }
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            failed(snapshotRoot, e.Message);
        }
    }

    /// <summary>The template a snapshot was saved for (its meta.json), or null when unreadable.</summary>
    internal static string? TemplateOf(string snapshotDir)
    {
        try
        {
            return JsonNode.Parse(File.ReadAllText(Path.Combine(snapshotDir, QemuRuntime.MetaFileName)))?["template"]?.GetValue<string>();
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException or JsonException or InvalidOperationException)
        {
            return null;
        }
    }

    /// <summary>
    /// Names of the snapshots in <paramref name="snapshotRoot"/> that a live VM maps: run directories under
    /// <paramref name="runRoot"/> whose owning server is alive and whose memory-file names one, and any
    /// process whose command line contains a snapshot's RAM file (QEMUs of servers with other run roots).
    /// </summary>
    internal static HashSet<string> Referenced(string snapshotRoot, string? runRoot, Func<string, bool> runDirLive, string procRoot = "/proc")
    {
        var names = new HashSet<string>(StringComparer.Ordinal);
        string root = Path.GetFullPath(snapshotRoot).TrimEnd('/');
        void Add(string memoryFile)
        {
            // <root>/<name>/mem
            string? dir = Path.GetDirectoryName(memoryFile);
            if (dir is not null && Path.GetDirectoryName(dir) == root)
            {
                names.Add(Path.GetFileName(dir));
            }
        }

        if (runRoot is not null && Directory.Exists(runRoot))
        {
            foreach (string runDir in Directory.GetDirectories(runRoot, QemuRuntime.IdPrefix + "*"))
            {
                if (HostProcs.ReadOrNull(Path.Combine(runDir, RunDirMemoryFileName))?.Trim() is { Length: > 0 } mem && runDirLive(runDir))
                {
                    Add(mem);
                }
            }
        }

        string marker = root + "/";
        foreach (string cmdline in HostProcs.CommandLines(procRoot))
        {
            int at = 0;
            while ((at = cmdline.IndexOf(marker, at, StringComparison.Ordinal)) >= 0)
            {
                // mem-path=<root>/<name>/mem,share=off: the name runs to the next '/'.
                int start = at + marker.Length;
                int end = cmdline.IndexOf('/', start);
                if (end > start)
                {
                    names.Add(cmdline[start..end]);
                }
                at = start;
            }
        }
        return names;
    }
}
