using System.Collections.Concurrent;

namespace SandboxVM.Host;

/// <summary>
/// Exclusive lock on one cache key: a SemaphoreSlim within this process, plus an flock on
/// <c>locks/PHASE-KEY.lock</c> against other processes (FileShare.None on Unix is a non-blocking
/// <c>flock(LOCK_EX)</c>, released by the kernel if the holder dies). Lock files are never deleted:
/// deleting one while another process waits on it would let two holders in.
/// </summary>
public sealed class CacheLock : IAsyncDisposable
{
    private static readonly ConcurrentDictionary<string, SemaphoreSlim> _inProcess = new(StringComparer.Ordinal);
    private static readonly TimeSpan _pollInterval = TimeSpan.FromMilliseconds(200);

    private readonly SemaphoreSlim _semaphore;
    private readonly FileStream _file;

    private CacheLock(SemaphoreSlim semaphore, FileStream file)
    {
        _semaphore = semaphore;
        _file = file;
    }

    /// <summary>Waits for the lock; <paramref name="onWait"/> is called once if it is held elsewhere.</summary>
    public static async Task<CacheLock> AcquireAsync(string path, Action? onWait, CancellationToken cancellationToken)
    {
        var semaphore = _inProcess.GetOrAdd(path, _ => new SemaphoreSlim(1, 1));
        if (!await semaphore.WaitAsync(0, cancellationToken).ConfigureAwait(false))
        {
            onWait?.Invoke();
            onWait = null;
            await semaphore.WaitAsync(cancellationToken).ConfigureAwait(false);
        }

        try
        {
            while (true)
            {
                if (TryOpen(path) is { } file)
                    return new CacheLock(semaphore, file);
                onWait?.Invoke();
                onWait = null;
                await Task.Delay(_pollInterval, cancellationToken).ConfigureAwait(false);
            }
        }
        catch
        {
            semaphore.Release();
            throw;
        }
    }

    /// <summary>Takes the lock only if it is free right now.</summary>
    public static CacheLock? TryAcquire(string path)
    {
        var semaphore = _inProcess.GetOrAdd(path, _ => new SemaphoreSlim(1, 1));
        if (!semaphore.Wait(0))
            return null;
        try
        {
            if (TryOpen(path) is { } file)
                return new CacheLock(semaphore, file);
        }
        catch
        {
            semaphore.Release();
            throw;
        }
        semaphore.Release();
        return null;
    }

    public async ValueTask DisposeAsync()
    {
        await _file.DisposeAsync().ConfigureAwait(false);
        _semaphore.Release();
    }

    private static FileStream? TryOpen(string path)
    {
        try
        {
            return new FileStream(path, FileMode.OpenOrCreate, FileAccess.ReadWrite, FileShare.None);
        }
        catch (IOException) when (File.Exists(path))
        {
            // Held by another process (EWOULDBLOCK surfaces as a sharing-violation IOException).
            return null;
        }
    }
}
