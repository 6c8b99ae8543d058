using Microsoft.Extensions.Logging;

namespace SandboxVM.Runtime.Gvisor;

internal static partial class GvisorLog
{
    [LoggerMessage(Level = LogLevel.Information, Message = "gvisor runtime: platform {Platform}, run dir {RunDir}, snapshots {SnapshotDir}, cgroups {Cgroups}")]
    internal static partial void Configured(ILogger logger, string platform, string runDir, string snapshotDir, bool cgroups);

    [LoggerMessage(Level = LogLevel.Warning, Message = "cgroups are not usable: gvisor sandboxes run without a host memory cap")]
    internal static partial void NoCgroups(ILogger logger);

    [LoggerMessage(Level = LogLevel.Debug, Message = "sandbox {Id} ({Template}) {Source} ready in {Ms} ms")]
    internal static partial void Started(ILogger logger, string id, string template, VmSource source, long ms);

    [LoggerMessage(Level = LogLevel.Warning, Message = "restore of {Template} from checkpoint {Key} failed, starting cold instead: {Reason}")]
    internal static partial void RestoreFailed(ILogger logger, string template, string key, string reason);

    [LoggerMessage(Level = LogLevel.Information, Message = "checkpoint {Key} of {Template} saved in {Ms} ms (runsc checkpoint {CheckpointMs} ms, image {ImageBytes} bytes)")]
    internal static partial void SnapshotSaved(ILogger logger, string key, string template, long ms, long checkpointMs, long imageBytes);

    [LoggerMessage(Level = LogLevel.Information, Message = "removed stale checkpoint {Key} of {Template}")]
    internal static partial void SnapshotRemoved(ILogger logger, string key, string template);

    [LoggerMessage(Level = LogLevel.Warning, Message = "sandbox {Id}: {Reason}")]
    internal static partial void KillFailed(ILogger logger, string id, string reason);

    [LoggerMessage(Level = LogLevel.Warning, Message = "could not remove {Path}: {Reason}")]
    internal static partial void CleanupFailed(ILogger logger, string path, string reason);

    [LoggerMessage(Level = LogLevel.Information, Message = "ended leftover gvisor sandbox {Id}")]
    internal static partial void LeftoverEnded(ILogger logger, string id);

    [LoggerMessage(Level = LogLevel.Information, Message = "gvisor sandbox {Id} of {Template} saved in {Ms} ms ({Bytes} bytes, kept running: {KeptRunning})")]
    internal static partial void SandboxSaved(ILogger logger, string id, string template, long ms, long bytes, bool keptRunning);
}
