using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using SandboxVM.Core;
using SandboxVM.Core.Catalog;
using SandboxVM.Core.Pools;
using SandboxVM.Core.Runs;
using SandboxVM.Core.Sessions;
using SandboxVM.Core.Singletons;
using SandboxVM.Images;
using SandboxVM.Runtime;

namespace SandboxVM.Server;

/// <summary>
/// Start: pick the runtime (failing loudly if none works), end sandboxes a crashed server left behind,
/// and build missing template images in the background. Stop: end every sandbox this server owns.
/// </summary>
internal sealed partial class StartupService(
    RuntimeChoice choice,
    IVmRuntime runtime,
    TemplateCatalog catalog,
    PoolManager pools,
    SessionManager sessions,
    SingletonManager singletons,
    VmTracker tracker,
    ImageBuilder images,
    SandboxVmOptions options,
    ILogger<StartupService> logger) : IHostedService
{
    private readonly CancellationTokenSource _stopping = new();
    private Task _builds = Task.CompletedTask;

    public async Task StartAsync(CancellationToken cancellationToken)
    {
        LogRuntime(logger, choice.Runtime, choice.Accel ?? "-", choice.Reason);
        int swept = await runtime.CleanupLeftoversAsync(cancellationToken);
        if (swept > 0)
        {
            LogSwept(logger, swept);
        }
        if (options.BuildTemplatesOnStart || options.CacheGcOnStart)
        {
            _builds = Task.Run(async () =>
            {
                if (options.BuildTemplatesOnStart)
                {
                    await BuildAllAsync(_stopping.Token);
                }
                if (options.CacheGcOnStart)
                {
                    await CollectCacheAsync(_stopping.Token);
                }
            }, CancellationToken.None);
        }
        if (options.Pools)
        {
            // Pools wait for their template's image themselves, so this does not delay start-up.
            pools.Start(catalog.All.Where(t => TemplateCatalog.UnavailableReason(t) is null));
        }
        singletons.Start(catalog.All.Where(t => TemplateCatalog.UnavailableReason(t) is null), options.StartSingletonsWithServer);
    }

    private async Task BuildAllAsync(CancellationToken cancellationToken)
    {
        foreach (var t in catalog.All.Where(t => TemplateCatalog.UnavailableReason(t) is null))
        {
            try
            {
                await catalog.EnsureBuiltAsync(t, null, cancellationToken);
            }
            catch (OperationCanceledException)
            {
                return;
            }
            catch (Exception e)
            {
                LogBuildFailed(logger, t.Name, e);
            }
        }
    }

    /// <summary>The start-up image cache collection: what `sandboxvm cache gc --older-than Nd` does, logged.</summary>
    private async Task CollectCacheAsync(CancellationToken cancellationToken)
    {
        try
        {
            var (needed, keepPhases) = await catalog.CacheNeedsAsync(cancellationToken);
            var result = await images.Cache.CollectAsync(new CacheGcOptions
            {
                OlderThan = TimeSpan.FromDays(options.CacheGcOlderThanDays),
                Needed = needed,
                KeepPhases = keepPhases,
            }, cancellationToken);
            foreach (var e in result.Removed)
            {
                LogCacheEntryRemoved(logger, e.Phase, e.Key, e.LastUsedUtc);
            }
            foreach (var (e, error) in result.Failed)
            {
                LogCacheEntryFailed(logger, e.Path, error);
            }
            LogCacheCollected(logger, result.Removed.Count, result.BytesFreed, result.Kept.Count, options.CacheGcOlderThanDays);
        }
        catch (OperationCanceledException)
        {
        }
        catch (Exception e)
        {
            LogCacheGcFailed(logger, e);
        }
    }

    public async Task StopAsync(CancellationToken cancellationToken)
    {
        await _stopping.CancelAsync();
        await sessions.DisposeAsync();
        await singletons.DisposeAsync();
        await pools.DisposeAsync();
        await tracker.DisposeAsync();
        await _builds.WaitAsync(TimeSpan.FromSeconds(1), CancellationToken.None).ContinueWith(_ => { }, TaskScheduler.Default);
    }

    [LoggerMessage(Level = LogLevel.Information, Message = "runtime {Runtime} (accel {Accel}): {Reason}")]
    private static partial void LogRuntime(ILogger logger, string runtime, string accel, string reason);

    [LoggerMessage(Level = LogLevel.Warning, Message = "ended {Count} sandbox(es) left behind by an earlier server")]
    private static partial void LogSwept(ILogger logger, int count);

    [LoggerMessage(Level = LogLevel.Information, Message = "image cache: removed {Phase} {Key} (last used {LastUsed:u})")]
    private static partial void LogCacheEntryRemoved(ILogger logger, string phase, string key, DateTime lastUsed);

    [LoggerMessage(Level = LogLevel.Warning, Message = "image cache: could not remove {Path}: {Error}")]
    private static partial void LogCacheEntryFailed(ILogger logger, string path, string error);

    [LoggerMessage(Level = LogLevel.Information, Message = "image cache: removed {Count} entries unused for {Days} days, freed {Bytes} bytes; kept {Kept}")]
    private static partial void LogCacheCollected(ILogger logger, int count, long bytes, int kept, double days);

    [LoggerMessage(Level = LogLevel.Warning, Message = "image cache collection failed")]
    private static partial void LogCacheGcFailed(ILogger logger, Exception e);

    [LoggerMessage(Level = LogLevel.Error, Message = "building template {Name} failed")]
    private static partial void LogBuildFailed(ILogger logger, string name, Exception e);
}
