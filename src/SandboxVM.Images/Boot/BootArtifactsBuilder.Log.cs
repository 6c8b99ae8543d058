using Microsoft.Extensions.Logging;

namespace SandboxVM.Images.Boot;

public sealed partial class BootArtifactsBuilder
{
    [LoggerMessage(Level = LogLevel.Debug, Message = "{Phase} {What} {Key} is cached")]
    private partial void LogCached(string phase, string what, string key);

    [LoggerMessage(Level = LogLevel.Information, Message = "Building {Phase} {What} {Key}")]
    private partial void LogBuilding(string phase, string what, string key);

    [LoggerMessage(Level = LogLevel.Information, Message = "Built {Phase} {What} {Key} in {Seconds:F1} s")]
    private partial void LogBuilt(string phase, string what, string key, double seconds);

    [LoggerMessage(Level = LogLevel.Warning, Message = "Building {Phase} {What} {Key} failed")]
    private partial void LogBuildFailed(Exception exception, string phase, string what, string key);

    [LoggerMessage(Level = LogLevel.Information, Message = "Waiting for another build of {Phase} {Key}")]
    private partial void LogWaitingForLock(string phase, string key);

    [LoggerMessage(Level = LogLevel.Information, Message = "Removing leftover of an interrupted build: {Path}")]
    private partial void LogRemovingStale(string path);

    [LoggerMessage(Level = LogLevel.Warning, Message = "Could not remove {Path}; the next build will retry")]
    private partial void LogDeleteFailed(Exception exception, string path);

    [LoggerMessage(Level = LogLevel.Warning, Message = "Kernel {Package}: no ELF vmlinux (Firecracker and PVH boot need it; QEMU can boot the bzImage)")]
    private partial void LogNoVmlinux(Exception exception, string package);

    [LoggerMessage(Level = LogLevel.Debug, Message = "apt candidates: kernel {Kernel}, {Busybox}")]
    private partial void LogResolved(string kernel, string busybox);

    [LoggerMessage(Level = LogLevel.Debug, Message = "Boot artifacts for kernel {KernelVersion} ready ({Key}) in {Seconds:F2} s")]
    private partial void LogReady(string kernelVersion, string key, double seconds);
}
