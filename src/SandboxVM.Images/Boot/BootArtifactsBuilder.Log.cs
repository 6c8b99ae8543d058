using Microsoft.Extensions.Logging;

namespace SandboxVM.Images.Boot;

public sealed partial class BootArtifactsBuilder
{
    [LoggerMessage(Level = LogLevel.Warning, Message = "Kernel {Package}: no ELF vmlinux (Firecracker and PVH boot need it; QEMU can boot the bzImage)")]
    private partial void LogNoVmlinux(Exception exception, string package);

    [LoggerMessage(Level = LogLevel.Debug, Message = "apt candidates: kernel {Kernel}, {Busybox}")]
    private partial void LogResolved(string kernel, string busybox);

    [LoggerMessage(Level = LogLevel.Debug, Message = "Boot artifacts for kernel {KernelVersion} ready ({Key}) in {Seconds:F2} s")]
    private partial void LogReady(string kernelVersion, string key, double seconds);
}
