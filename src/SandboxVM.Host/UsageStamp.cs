using System.Collections.Concurrent;

namespace SandboxVM.Host;

/// <summary>
/// Last-used stamps shared by every server on the host: a file whose mtime is the last use of a cache
/// entry or a snapshot. Written at most once per <see cref="MarkInterval"/> per file and process (a use
/// is a restore or a cache hit: many a second under load).
/// </summary>
public static class UsageStamp
{
    public static readonly TimeSpan MarkInterval = TimeSpan.FromMinutes(1);

    // Process-wide, per stamp file: when this process last wrote it.
    private static readonly ConcurrentDictionary<string, long> _marked = new(StringComparer.Ordinal);

    /// <summary>
    /// Records a use now: sets the mtime of <paramref name="stampPath"/> (created if needed) unless this
    /// process did within <see cref="MarkInterval"/>. A failure (entry gone, another user's read-only
    /// store) is ignored: uses go unrecorded, never a failure.
    /// </summary>
    public static void Mark(string stampPath, TimeProvider? time = null)
    {
        time ??= TimeProvider.System;
        long now = time.GetTimestamp();
        if (_marked.TryGetValue(stampPath, out long last) && time.GetElapsedTime(last, now) < MarkInterval)
        {
            return;
        }
        _marked[stampPath] = now;
        Touch(stampPath, time.GetUtcNow().UtcDateTime);
    }

    /// <summary>Creates <paramref name="path"/> if needed and sets its mtime; a failure is ignored.</summary>
    public static void Touch(string path, DateTime utc)
    {
        try
        {
            using (File.Open(path, FileMode.OpenOrCreate, FileAccess.Write, FileShare.ReadWrite))
            {
            }
            File.SetLastWriteTimeUtc(path, utc);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
        }
    }

    /// <summary>The newest mtime of the stamp and <paramref name="others"/> (files or directories that exist).</summary>
    public static DateTime LastUsedUtc(string stampPath, params string[] others)
    {
        DateTime latest = DateTime.MinValue;
        foreach (string path in others.Prepend(stampPath))
        {
            var info = new FileInfo(path);
            DateTime t = info.Exists ? info.LastWriteTimeUtc : Directory.Exists(path) ? Directory.GetLastWriteTimeUtc(path) : DateTime.MinValue;
            if (t > latest)
            {
                latest = t;
            }
        }
        return latest;
    }
}
