using Microsoft.Extensions.Logging;

namespace SandboxVM.Runtime.Qemu;

internal static partial class QemuLog
{
    [LoggerMessage(Level = LogLevel.Information, Message = "qemu runtime: {Qemu}, accel {Accel}, tsc {TscKhz} kHz, run dir {RunDir}, snapshots {SnapshotDir}, cgroups {Cgroups}, unprivileged {Unprivileged}")]
    internal static partial void Configured(ILogger logger, string qemu, string accel, int? tscKhz, string runDir, string snapshotDir, bool cgroups, bool unprivileged);

    [LoggerMessage(Level = LogLevel.Warning, Message = "snapshots are off, every VM boots cold: {Qemu} cannot map a snapshot's RAM file read-only (QEMU {Since} or later can; scripts/install-deps.sh installs it from bookworm-backports)")]
    internal static partial void SnapshotsOff(ILogger logger, string qemu, string since);

    [LoggerMessage(Level = LogLevel.Warning, Message = "not restoring from {Path} ({State}): a snapshot's RAM file must be the server's and read-only to everyone else; booting instead")]
    internal static partial void SnapshotNotSealed(ILogger logger, string path, string state);

    [LoggerMessage(Level = LogLevel.Warning, Message = "cgroups are not usable: qemu runs without a memory cap")]
    internal static partial void NoCgroups(ILogger logger);

    [LoggerMessage(Level = LogLevel.Warning, Message = "the host TSC frequency is unknown: TCG guests calibrate it themselves and may hang at boot; set TscKhz")]
    internal static partial void NoTsc(ILogger logger);

    [LoggerMessage(Level = LogLevel.Warning, Message = "/dev/kvm (mode {Mode}) only lets root in and QEMU never runs as root: using tcg (give /dev/kvm a group, e.g. chgrp kvm and chmod 0660, to use KVM)")]
    internal static partial void KvmRootOnly(ILogger logger, string mode);

    [LoggerMessage(Level = LogLevel.Debug, Message = "VM {Id} ({Template}) {Source} ready in {Ms} ms")]
    internal static partial void Started(ILogger logger, string id, string template, VmSource source, long ms);

    [LoggerMessage(Level = LogLevel.Debug, Message = "VM {Id} ({Template}) restored in {Ms} ms (qemu up and attached at {LaunchedMs}, state loaded at {LoadedMs})")]
    internal static partial void Restored(ILogger logger, string id, string template, long ms, long launchedMs, long loadedMs);

    [LoggerMessage(Level = LogLevel.Warning, Message = "restore of {Template} from snapshot {Key} failed, booting instead: {Reason}")]
    internal static partial void RestoreFailed(ILogger logger, string template, string key, string reason);

    [LoggerMessage(Level = LogLevel.Information, Message = "snapshot {Key} of {Template} saved in {Ms} ms (device state {StateBytes} bytes)")]
    internal static partial void SnapshotSaved(ILogger logger, string key, string template, long ms, long stateBytes);

    [LoggerMessage(Level = LogLevel.Information, Message = "removed stale snapshot {Key} of {Template}")]
    internal static partial void SnapshotRemoved(ILogger logger, string key, string template);

    [LoggerMessage(Level = LogLevel.Warning, Message = "VM {Id}: {Reason}")]
    internal static partial void KillFailed(ILogger logger, string id, string reason);

    [LoggerMessage(Level = LogLevel.Warning, Message = "could not remove {Path}: {Reason}")]
    internal static partial void CleanupFailed(ILogger logger, string path, string reason);

    [LoggerMessage(Level = LogLevel.Information, Message = "ended leftover VM {Id} (pid {Pid})")]
    internal static partial void LeftoverEnded(ILogger logger, string id, int pid);

    [LoggerMessage(Level = LogLevel.Information, Message = "VM {Id} of {Template} saved in {Ms} ms ({Bytes} bytes, kept running: {KeptRunning})")]
    internal static partial void SandboxSaved(ILogger logger, string id, string template, long ms, long bytes, bool keptRunning);

    [LoggerMessage(Level = LogLevel.Information, Message = "fork seed of {Template} ready in {Ms} ms (RAM file allocated at {AllocatedMs}, qemu up at {LaunchedMs}, image loaded at {LoadedMs})")]
    internal static partial void ForkSeedReady(ILogger logger, string template, long ms, long allocatedMs, long launchedMs, long loadedMs);
}
