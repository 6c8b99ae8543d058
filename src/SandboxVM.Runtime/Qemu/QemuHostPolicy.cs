using Microsoft.Extensions.Logging;

namespace SandboxVM.Runtime.Qemu;

/// <summary>How QEMU runs guest code. <c>auto</c> in the options is resolved to one of these once, when the runtime is made.</summary>
public enum QemuAccel
{
    /// <summary>Hardware virtualization through /dev/kvm.</summary>
    Kvm,

    /// <summary>QEMU's emulator (no KVM here, or it cannot be used unprivileged).</summary>
    Tcg,
}

/// <summary>
/// The accel and uid policy of one runtime, decided once from the options and the host: which
/// accelerator, whether each QEMU runs as its own unprivileged uid (a root server never runs QEMU as
/// root), the group that lets such a QEMU open /dev/kvm, and the TSC rate a TCG guest is told.
/// </summary>
internal sealed record QemuHostPolicy(QemuAccel Accel, bool DropPrivileges, int? KvmGroup, int? TscKhz)
{
    /// <summary>The name QEMU, logs, snapshot keys and the API use: "kvm" or "tcg".</summary>
    public string AccelName => Name(Accel);

    public static string Name(QemuAccel accel) => accel == QemuAccel.Kvm ? "kvm" : "tcg";

    /// <exception cref="ArgumentException">An accel that is not auto, kvm or tcg.</exception>
    /// <exception cref="InvalidOperationException">kvm was asked for and cannot be had; setpriv is missing where it is needed.</exception>
    public static QemuHostPolicy Resolve(QemuRuntimeOptions options, ILogger logger)
    {
        QemuAccel accel = options.Accel switch
        {
            "auto" => HostNative.KvmCanCreateVm() ? QemuAccel.Kvm : QemuAccel.Tcg,
            "kvm" => HostNative.KvmCanCreateVm() ? QemuAccel.Kvm : throw new InvalidOperationException("accel kvm was requested but KVM_CREATE_VM fails on this host"),
            "tcg" => QemuAccel.Tcg,
            _ => throw new ArgumentException($"unknown accel '{options.Accel}' (expected auto, kvm or tcg)", nameof(options)),
        };
        bool dropPrivileges = Environment.IsPrivilegedProcess;
        if (dropPrivileges && !File.Exists(options.SetprivPath))
        {
            throw new InvalidOperationException(
                $"the qemu runtime runs every QEMU as its own unprivileged uid with {options.SetprivPath}, which is missing (apt-get install util-linux)");
        }
        int? kvmGroup = null;
        if (dropPrivileges && accel == QemuAccel.Kvm)
        {
            // An unprivileged QEMU needs /dev/kvm through "other" or group bits (then it joins the group).
            var kvm = HostNative.Stat("/dev/kvm");
            if (kvm is { } k && (k.Mode & 0b110) != 0b110)
            {
                if ((k.Mode & 0b110_000) == 0b110_000)
                {
                    kvmGroup = k.Gid;
                }
                else if (options.Accel == "kvm")
                {
                    throw new InvalidOperationException(
                        $"accel kvm was requested but /dev/kvm (mode {Convert.ToString(k.Mode & 0xfff, 8)}) only lets root in, and QEMU never runs as root: give it a group (chgrp kvm /dev/kvm; chmod 0660 /dev/kvm) or use accel tcg");
                }
                else
                {
                    QemuLog.KvmRootOnly(logger, Convert.ToString(k.Mode & 0xfff, 8));
                    accel = QemuAccel.Tcg;
                }
            }
        }
        int? tscKhz = accel == QemuAccel.Tcg ? options.TscKhz ?? HostTsc.Khz : null;
        if (accel == QemuAccel.Tcg && tscKhz is null)
        {
            QemuLog.NoTsc(logger);
        }
        return new QemuHostPolicy(accel, dropPrivileges, kvmGroup, tscKhz);
    }
}
