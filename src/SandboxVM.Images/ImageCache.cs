using System.Collections.Concurrent;
using System.Globalization;
using System.Text.RegularExpressions;

namespace SandboxVM.Images;

/// <summary>One complete entry of the image cache: a phase result named by its content key.</summary>
/// <param name="Phase"><c>base</c>, <c>rootfs</c>, <c>ext4</c>, <c>boot-kernel</c> or <c>boot-initrd</c> (also its lock's prefix).</param>
/// <param name="Key">The content hash.</param>
/// <param name="Path">Its directory (or the <c>.img</c> file of ext4).</param>
/// <param name="LastUsedUtc">Its last recorded use (<c>used/PHASE-KEY</c>), else when it was built.</param>
public sealed record CacheEntry(string Phase, string Key, string Path, DateTime LastUsedUtc)
{
    /// <summary><c>PHASE/KEY</c>, as in <see cref="CacheGcOptions.Needed"/>.</summary>
    public string Id => Phase + "/" + Key;
}

/// <summary>Disk use of an entry.</summary>
/// <param name="Bytes">Allocated bytes, each hard-linked inode counted once.</param>
/// <param name="ExclusiveBytes">What removing only this entry frees: inodes with no link outside it (a rootfs shares most of its files with its base).</param>
public sealed record CacheUsage(long Bytes, long ExclusiveBytes);

public sealed record CacheGcOptions
{
    /// <summary>Entries used (hit or built) within this period stay.</summary>
    public TimeSpan OlderThan { get; init; } = TimeSpan.FromDays(7);

    /// <summary>Only report what would go.</summary>
    public bool DryRun { get; init; }

    /// <summary>Ids (<c>PHASE/KEY</c>) the current templates need: they stay whatever their age.</summary>
    public IReadOnlySet<string> Needed { get; init; } = new HashSet<string>();

    /// <summary>Phases kept whole, e.g. the boot phases when the current kernel could not be resolved.</summary>
    public IReadOnlySet<string> KeepPhases { get; init; } = new HashSet<string>();

    /// <summary>Where to look for processes using an entry (command lines naming its path); null: do not look.</summary>
    public string? ProcRoot { get; init; } = "/proc";

    /// <summary>"Now" (tests).</summary>
    public DateTime? NowUtc { get; init; }
}

/// <summary>What a collection removed (or, dry, would remove) and why the rest stayed.</summary>
/// <param name="Removed">Entries removed (dry run: that would be).</param>
/// <param name="Kept">Entries left, each with the reason.</param>
/// <param name="Failed">Entries that could not be removed, with the error.</param>
/// <param name="DryRun">Nothing was removed.</param>
/// <param name="BytesFreed">Allocated bytes of the inodes whose every link was in a removed entry.</param>
public sealed record CacheGcResult(
    IReadOnlyList<CacheEntry> Removed,
    IReadOnlyList<(CacheEntry Entry, string Reason)> Kept,
    IReadOnlyList<(CacheEntry Entry, string Error)> Failed,
    long BytesFreed,
    bool DryRun);

/// <summary>
/// The image cache as a whole: its entries, when each was last used, and garbage collection. A use (a
/// cache hit or a build) sets the mtime of <c>used/PHASE-KEY</c>, at most once a minute per entry and
/// process; an entry never marked counts as used when it was built. Collection removes entries not used
/// within a period, except those the current templates need, those a running process names on its
/// command line (QEMU's disk, kernel and initrd; bubblewrap's root), and those whose build lock is held
/// (taken without waiting and kept while the entry is removed, so a build of that key waits for it).
/// </summary>
public sealed partial class ImageCache
{
    /// <summary>Phase name, directory under the root, and whether its entries are <c>KEY.img</c> files.</summary>
    public static readonly IReadOnlyList<(string Phase, string Directory, bool IsFile)> Phases =
    [
        ("base", "base", false),
        ("rootfs", "rootfs", false),
        ("ext4", "ext4", true),
        ("boot-kernel", "boot/kernel", false),
        ("boot-initrd", "boot/initrd", false),
    ];

    internal const string UsedDir = "used";
    internal const string LocksDir = "locks";

    public ImageCache(string root)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(root);
        Root = System.IO.Path.GetFullPath(root).TrimEnd('/');
    }

    public string Root { get; }

    [GeneratedRegex("^[0-9a-f]{64}$")]
    private static partial Regex KeyRegex();

    /// <summary>Records a use of an entry now (throttled: at most once a minute per entry in this process, <see cref="UsageStamp"/>).</summary>
    public void MarkUsed(string phase, string key)
    {
        try
        {
            Directory.CreateDirectory(System.IO.Path.Combine(Root, UsedDir));
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            // A read-only cache (another user's): uses go unrecorded, never a failure.
            return;
        }
        UsageStamp.Mark(StampPath(phase, key));
    }

    /// <summary>Records a use of the entries holding these paths (paths outside the cache are ignored).</summary>
    public void MarkUsed(params string?[] paths)
    {
        foreach (string? path in paths)
        {
            if (path is not null && EntryOf(path) is { } id)
            {
                MarkUsed(id.Phase, id.Key);
            }
        }
    }

    /// <summary>The entry (phase, key) a path belongs to, or null when it is not inside one.</summary>
    public (string Phase, string Key)? EntryOf(string path)
    {
        string full = System.IO.Path.GetFullPath(path);
        if (!full.StartsWith(Root + "/", StringComparison.Ordinal))
        {
            return null;
        }
        string[] parts = full[(Root.Length + 1)..].Split('/');
        (string Phase, string Key)? Check(string phase, string key) => KeyRegex().IsMatch(key) ? (phase, key) : null;
        return parts switch
        {
            ["base" or "rootfs", var key, ..] => Check(parts[0], key),
            ["ext4", var file] when file.EndsWith(".img", StringComparison.Ordinal) => Check("ext4", file[..^4]),
            ["boot", "kernel" or "initrd", var key, ..] => Check("boot-" + parts[1], key),
            _ => null,
        };
    }

    /// <summary>Every complete entry (half-built <c>.tmp-</c> ones and anything not named by a key are left out).</summary>
    public IReadOnlyList<CacheEntry> List()
    {
        var entries = new List<CacheEntry>();
        foreach (var (phase, dir, isFile) in Phases)
        {
            string phaseDir = System.IO.Path.Combine(Root, dir);
            if (!Directory.Exists(phaseDir))
            {
                continue;
            }
            IEnumerable<string> names = isFile ? Directory.EnumerateFiles(phaseDir) : Directory.EnumerateDirectories(phaseDir);
            foreach (string path in names.Order(StringComparer.Ordinal))
            {
                string name = System.IO.Path.GetFileName(path);
                string key = isFile && name.EndsWith(".img", StringComparison.Ordinal) ? name[..^4] : name;
                if ((isFile && !name.EndsWith(".img", StringComparison.Ordinal)) || !KeyRegex().IsMatch(key))
                {
                    continue;
                }
                entries.Add(new CacheEntry(phase, key, path, LastUsedUtc(phase, key, path)));
            }
        }
        return entries;
    }

    /// <summary>Disk use of one entry (walks it; never crosses into another file system).</summary>
    public static CacheUsage Usage(string path) => Usage([Walk(path)]);

    /// <summary>
    /// Removes the entries that nobody needs (see the class remarks). Entries are decided one by one; the
    /// lock of each entry to remove is held from the decision to the end of its removal.
    /// </summary>
    public async Task<CacheGcResult> CollectAsync(CacheGcOptions options, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(options);
        DateTime now = options.NowUtc ?? DateTime.UtcNow;
        var kept = new List<(CacheEntry, string)>();
        var failed = new List<(CacheEntry, string)>();
        var removed = new List<CacheEntry>();
        var removedWalks = new List<IReadOnlyList<HostNative.FileStat>>();
        if (!Directory.Exists(Root))
        {
            return new CacheGcResult(removed, kept, failed, 0, options.DryRun);
        }
        var entries = List();
        var inUse = options.ProcRoot is null ? new HashSet<string>() : InUse(options.ProcRoot);
        Directory.CreateDirectory(System.IO.Path.Combine(Root, LocksDir));
        foreach (var entry in entries)
        {
            cancellationToken.ThrowIfCancellationRequested();
            if (options.Needed.Contains(entry.Id))
            {
                kept.Add((entry, "needed by a current template"));
                continue;
            }
            if (options.KeepPhases.Contains(entry.Phase))
            {
                kept.Add((entry, "phase kept (current keys unknown)"));
                continue;
            }
            if (now - entry.LastUsedUtc < options.OlderThan)
            {
                kept.Add((entry, "used " + Age(now - entry.LastUsedUtc) + " ago"));
                continue;
            }
            if (inUse.Contains(entry.Id))
            {
                kept.Add((entry, "in use by a running process"));
                continue;
            }
            CacheLock? held;
            try
            {
                held = CacheLock.TryAcquire(System.IO.Path.Combine(Root, LocksDir, $"{entry.Phase}-{entry.Key}.lock"));
            }
            catch (UnauthorizedAccessException e)
            {
                // Another user's cache: its lock cannot even be opened, so it cannot be removed either.
                failed.Add((entry, e.Message));
                continue;
            }
            if (held is null)
            {
                kept.Add((entry, "locked (a build is in progress)"));
                continue;
            }
            await using (held.ConfigureAwait(false))
            {
                // A hit between the listing and the lock marks it used: look again under the lock.
                DateTime lastUsed = LastUsedUtc(entry.Phase, entry.Key, entry.Path);
                if (now - lastUsed < options.OlderThan)
                {
                    kept.Add((entry with { LastUsedUtc = lastUsed }, "used " + Age(now - lastUsed) + " ago"));
                    continue;
                }
                var walk = Walk(entry.Path);
                if (!options.DryRun)
                {
                    try
                    {
                        await TreeOps.DeleteAsync(entry.Path).ConfigureAwait(false);
                        string stamp = StampPath(entry.Phase, entry.Key);
                        if (File.Exists(stamp))
                        {
                            File.Delete(stamp);
                        }
                    }
                    catch (Exception e) when (e is InvalidOperationException or IOException or UnauthorizedAccessException or ExternalCommandException)
                    {
                        failed.Add((entry, e.Message));
                        continue;
                    }
                }
                removed.Add(entry);
                removedWalks.Add(walk);
            }
        }
        return new CacheGcResult(removed, kept, failed, Usage(removedWalks).ExclusiveBytes, options.DryRun);
    }

    /// <summary>Ids of the entries named on the command line of a running process.</summary>
    internal HashSet<string> InUse(string procRoot)
    {
        var ids = new HashSet<string>(StringComparer.Ordinal);
        string marker = Root + "/";
        foreach (string cmdline in HostProcs.CommandLines(procRoot))
        {
            int at = 0;
            while ((at = cmdline.IndexOf(marker, at, StringComparison.Ordinal)) >= 0)
            {
                // Up to the end of the argument, or of a QEMU option value (file=PATH,format=raw).
                int end = cmdline.IndexOfAny(['\0', ',', ' '], at);
                string path = end < 0 ? cmdline[at..] : cmdline[at..end];
                if (EntryOf(path) is { } id)
                {
                    ids.Add(id.Phase + "/" + id.Key);
                }
                at += marker.Length;
            }
        }
        return ids;
    }

    private string StampPath(string phase, string key) => System.IO.Path.Combine(Root, UsedDir, $"{phase}-{key}");

    private DateTime LastUsedUtc(string phase, string key, string path) => UsageStamp.LastUsedUtc(StampPath(phase, key), path);

    private static string Age(TimeSpan age) => age.TotalDays >= 1
        ? string.Create(CultureInfo.InvariantCulture, $"{age.TotalDays:0.#} d")
        : age.TotalHours >= 1 ? string.Create(CultureInfo.InvariantCulture, $"{age.TotalHours:0.#} h")
        : string.Create(CultureInfo.InvariantCulture, $"{Math.Max(0, age.TotalMinutes):0} min");

    /// <summary>Every inode under <paramref name="path"/> (itself included) on its file system, symlinks not followed.</summary>
    private static List<HostNative.FileStat> Walk(string path)
    {
        var result = new List<HostNative.FileStat>();
        if (HostNative.Stat(path, followLinks: false) is not { } top)
        {
            return result;
        }
        result.Add(top);
        if (!top.IsDirectory)
        {
            return result;
        }
        var pending = new Stack<string>();
        pending.Push(path);
        while (pending.TryPop(out string? dir))
        {
            IEnumerable<string> children;
            try
            {
                children = Directory.EnumerateFileSystemEntries(dir).ToList();
            }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException)
            {
                continue;
            }
            foreach (string child in children)
            {
                if (HostNative.Stat(child, followLinks: false) is not { } st || st.Device != top.Device)
                {
                    continue;
                }
                result.Add(st);
                if (st.IsDirectory)
                {
                    pending.Push(child);
                }
            }
        }
        return result;
    }

    /// <summary>Bytes of the walked trees (inodes once) and what removing all of them frees (inodes with no link outside).</summary>
    private static CacheUsage Usage(IEnumerable<IReadOnlyList<HostNative.FileStat>> walks)
    {
        long bytes = 0, exclusive = 0;
        var files = new Dictionary<(ulong, ulong), (uint Links, long Bytes, int Seen)>();
        foreach (var walk in walks)
        {
            foreach (var e in walk)
            {
                if (e.IsDirectory)
                {
                    // A directory's links are its subdirectories' "..": it lives in one tree only.
                    bytes += e.AllocatedBytes;
                    exclusive += e.AllocatedBytes;
                    continue;
                }
                var id = (e.Device, e.Inode);
                files[id] = files.TryGetValue(id, out var f) ? f with { Seen = f.Seen + 1 } : (e.Links, e.AllocatedBytes, 1);
            }
        }
        foreach (var f in files.Values)
        {
            bytes += f.Bytes;
            if (f.Seen >= f.Links)
            {
                exclusive += f.Bytes;
            }
        }
        return new CacheUsage(bytes, exclusive);
    }
}
