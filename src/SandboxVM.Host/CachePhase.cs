using System.Diagnostics;
using System.Security.Cryptography;
using Microsoft.Extensions.Logging;

namespace SandboxVM.Host;

/// <summary>One result a <see cref="CachePhase"/> makes: what it is, where it goes and how it is built.</summary>
/// <param name="Phase">The phase (<c>base</c>, <c>ext4</c>, <c>boot-kernel</c>, <c>qemu</c>, ...): its lock's prefix.</param>
/// <param name="Key">The content key.</param>
/// <param name="FinalPath">Where the complete result lives (a directory or a file).</param>
/// <param name="What">For logs and progress: the template or package it is for.</param>
/// <param name="Build">Builds into the temp path it is given (a sibling of <paramref name="FinalPath"/>).</param>
public sealed record CacheBuild(string Phase, string Key, string FinalPath, string What, Func<string, Task> Build)
{
    /// <summary>Whether a path holds a complete result; by default, that it exists.</summary>
    public Func<string, bool> IsComplete { get; init; } = Path.Exists;
}

/// <summary>
/// The one "lock, build into a temp path, rename, sweep stale" cache step of the image cache and the
/// snapshot stores: a result named by its bare key is always complete, a key is built once however many
/// callers (in this or other processes) want it, and what an interrupted build left is removed by the
/// next one. The lock is <see cref="CacheLock"/> (an flock the kernel releases when its holder dies), so a
/// temp path whose key's lock is free is a leftover whatever process made it.
/// </summary>
public sealed partial class CachePhase
{
    /// <summary>Temp paths are <c>FINAL.tmp-RANDOM</c>: never mistaken for a complete result.</summary>
    public const string TmpMarker = ".tmp-";

    private readonly string _lockDirectory;
    private readonly Func<string, Task> _delete;
    private readonly ILogger _logger;

    /// <param name="lockDirectory">Where the lock files are (created when needed; never deleted).</param>
    /// <param name="delete">Removes a temp path (a tree that may hold mounts needs more than Directory.Delete); by default a recursive delete.</param>
    /// <param name="logger">Receives cached, waiting, building, built, failed and leftover messages.</param>
    public CachePhase(string lockDirectory, Func<string, Task>? delete, ILogger logger)
    {
        _lockDirectory = lockDirectory;
        _delete = delete ?? DeletePathAsync;
        _logger = logger;
    }

    /// <summary>The lock file of one key.</summary>
    public string LockPath(string phase, string key) => Path.Combine(_lockDirectory, $"{phase}-{key}.lock");

    /// <summary>
    /// Makes <see cref="CacheBuild.FinalPath"/> unless it is complete already. Returns true when this
    /// call built it, false when it existed (or another process finished it while this one waited).
    /// </summary>
    /// <param name="build">What to make.</param>
    /// <param name="progress">Receives "[phase] what: cached/building/built" lines; may be null.</param>
    /// <param name="cancellationToken">Stops waiting for the lock; passed to nothing else (the build closes over its own).</param>
    public async Task<bool> EnsureAsync(CacheBuild build, IProgress<string>? progress, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(build);
        if (build.IsComplete(build.FinalPath))
        {
            Cached(build, progress);
            return false;
        }

        string dir = Path.GetDirectoryName(build.FinalPath)!;
        Directory.CreateDirectory(dir);
        Directory.CreateDirectory(_lockDirectory);
        await using var held = await CacheLock.AcquireAsync(LockPath(build.Phase, build.Key), () =>
        {
            LogWaiting(build.Phase, build.Key);
            progress?.Report($"[{build.Phase}] waiting for another build of {Short(build.Key)}");
        }, cancellationToken).ConfigureAwait(false);

        if (build.IsComplete(build.FinalPath))
        {
            // Someone else finished it while we waited.
            Cached(build, progress);
            return false;
        }

        await SweepAsync(build.Phase, dir, build.Key).ConfigureAwait(false);
        string tmp = build.FinalPath + TmpMarker + Convert.ToHexStringLower(RandomNumberGenerator.GetBytes(4));
        var stopwatch = Stopwatch.StartNew();
        LogBuilding(build.What, build.Phase, build.Key);
        progress?.Report($"[{build.Phase}] {build.What}: building {Short(build.Key)}");
        try
        {
            await build.Build(tmp).ConfigureAwait(false);
            cancellationToken.ThrowIfCancellationRequested();
            try
            {
                if (Directory.Exists(tmp))
                {
                    Directory.Move(tmp, build.FinalPath);
                }
                else
                {
                    File.Move(tmp, build.FinalPath);
                }
            }
            catch (IOException) when (build.IsComplete(build.FinalPath))
            {
                // A server that does not take the lock published the same inputs first: theirs is as good as ours.
                await DeleteQuietlyAsync(tmp).ConfigureAwait(false);
            }
        }
        catch (Exception e)
        {
            LogBuildFailed(e, build.What, build.Phase, build.Key);
            await DeleteQuietlyAsync(tmp).ConfigureAwait(false);
            throw;
        }

        LogBuilt(build.What, build.Phase, build.Key, stopwatch.Elapsed.TotalSeconds);
        progress?.Report($"[{build.Phase}] {build.What}: built {Short(build.Key)} in {stopwatch.Elapsed.TotalSeconds:F1} s");
        return true;
    }

    /// <summary>
    /// Removes leftovers of interrupted builds in <paramref name="directory"/>: temp paths of
    /// <paramref name="heldKey"/> (whose lock the caller holds) and of other keys whose lock is free,
    /// i.e. that nobody is building. A lock another user's cache keeps from us leaves its temp path alone.
    /// </summary>
    public async Task SweepAsync(string phase, string directory, string? heldKey = null)
    {
        if (!Directory.Exists(directory))
        {
            return;
        }
        foreach (string entry in Directory.EnumerateFileSystemEntries(directory, "*" + TmpMarker + "*").ToList())
        {
            string name = Path.GetFileName(entry);
            string key = name[..name.IndexOf(TmpMarker, StringComparison.Ordinal)];
            // A file result (ext4's KEY.img) has a temp path KEY.img.tmp-RANDOM.
            if (key.EndsWith(".img", StringComparison.Ordinal))
            {
                key = key[..^4];
            }
            if (key == heldKey)
            {
                LogRemovingStale(entry);
                await DeleteQuietlyAsync(entry).ConfigureAwait(false);
                continue;
            }
            CacheLock? other;
            try
            {
                other = CacheLock.TryAcquire(LockPath(phase, key));
            }
            catch (Exception e) when (e is UnauthorizedAccessException or DirectoryNotFoundException)
            {
                continue;
            }
            if (other is null)
            {
                continue;
            }
            await using (other.ConfigureAwait(false))
            {
                LogRemovingStale(entry);
                await DeleteQuietlyAsync(entry).ConfigureAwait(false);
            }
        }
    }

    private void Cached(CacheBuild build, IProgress<string>? progress)
    {
        LogCached(build.What, build.Phase, build.Key);
        progress?.Report($"[{build.Phase}] {build.What}: cached ({Short(build.Key)})");
    }

    private async Task DeleteQuietlyAsync(string path)
    {
        try
        {
            await _delete(path).ConfigureAwait(false);
        }
        catch (Exception e) when (e is InvalidOperationException or IOException or UnauthorizedAccessException or ExternalCommandException)
        {
            // Left for the next build of this key to retry; it is never used because of its name.
            LogDeleteFailed(e, path);
        }
    }

    private static Task DeletePathAsync(string path)
    {
        if (Directory.Exists(path))
        {
            Directory.Delete(path, recursive: true);
        }
        else if (File.Exists(path))
        {
            File.Delete(path);
        }
        return Task.CompletedTask;
    }

    private static string Short(string key) => key.Length > 12 ? key[..12] : key;

    [LoggerMessage(Level = LogLevel.Debug, Message = "{What}: {Phase} {Key} is cached")]
    private partial void LogCached(string what, string phase, string key);

    [LoggerMessage(Level = LogLevel.Information, Message = "{What}: building {Phase} {Key}")]
    private partial void LogBuilding(string what, string phase, string key);

    [LoggerMessage(Level = LogLevel.Information, Message = "{What}: built {Phase} {Key} in {Seconds:F1} s")]
    private partial void LogBuilt(string what, string phase, string key, double seconds);

    [LoggerMessage(Level = LogLevel.Warning, Message = "{What}: building {Phase} {Key} failed")]
    private partial void LogBuildFailed(Exception exception, string what, string phase, string key);

    [LoggerMessage(Level = LogLevel.Information, Message = "Waiting for another build of {Phase} {Key}")]
    private partial void LogWaiting(string phase, string key);

    [LoggerMessage(Level = LogLevel.Information, Message = "Removing leftover of an interrupted build: {Path}")]
    private partial void LogRemovingStale(string path);

    [LoggerMessage(Level = LogLevel.Warning, Message = "Could not remove {Path}; the next build will retry")]
    private partial void LogDeleteFailed(Exception exception, string path);
}
