using System.Globalization;

namespace SandboxVM.Runtime.Qemu;

/// <summary>Where a VM's RAM lives.</summary>
public enum GuestMemoryKind
{
    /// <summary>Anonymous memory: a cold-booted VM that is never snapshotted.</summary>
    Anonymous,
    /// <summary>A file mapped shared: the template VM, whose RAM becomes the snapshot.</summary>
    SharedFile,
    /// <summary>
    /// The snapshot's file opened read-only and mapped private (copy-on-write): a clone. Needs QEMU 8.2
    /// or later (readonly=on,rom=off); older ones open the file read-write even for a private mapping.
    /// </summary>
    PrivateFile,
}

/// <summary>Everything that decides one QEMU command line.</summary>
public sealed record QemuLaunchSpec
{
    public required string Name { get; init; }
    public required QemuAccel Accel { get; init; }
    public required int MemoryMib { get; init; }
    public required int Vcpus { get; init; }
    public required string KernelPath { get; init; }
    public required string InitrdPath { get; init; }
    public required string RootfsImage { get; init; }
    public required string KernelCmdline { get; init; }
    public GuestMemoryKind Memory { get; init; } = GuestMemoryKind.Anonymous;
    /// <summary>RAM file for <see cref="GuestMemoryKind.SharedFile"/> and <see cref="GuestMemoryKind.PrivateFile"/>.</summary>
    public string? MemoryFile { get; init; }
    public required string AgentSocket { get; init; }
    public required string QmpSocket { get; init; }
    public required string ConsoleSocket { get; init; }
    /// <summary>Start paused, waiting for migrate-incoming (a restore).</summary>
    public bool Incoming { get; init; }
    public bool Seccomp { get; init; } = true;
    public int TcgTranslationBufferMib { get; init; } = 128;
    /// <summary>
    /// The firmware (<c>-bios</c>), or null for QEMU's default. qboot loads the kernel itself; with QEMU
    /// 10.0 from bookworm-backports the default microvm firmware is SeaBIOS 1.16.3's, which with
    /// <c>x-option-roms=off</c> prints its banner and never starts the kernel.
    /// </summary>
    public string? Firmware { get; init; }
}

/// <summary>
/// Builds the qemu-system-x86_64 arguments. Template and clones must describe the same machine
/// (same devices in the same order): only the RAM backend's share and read-only flags, socket paths
/// and -incoming differ, or the saved device state would not load.
/// </summary>
public static class QemuCommandLine
{
    /// <summary>
    /// The seccomp policy. spawn=deny forbids fork/exec, so migration cannot use "exec:" URIs: the
    /// device state goes through a file descriptor passed over QMP (getfd + "fd:") instead.
    /// </summary>
    public const string SandboxPolicy = "on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny";

    public static IReadOnlyList<string> Build(QemuLaunchSpec s)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(s.MemoryMib, 16);
        ArgumentOutOfRangeException.ThrowIfLessThan(s.Vcpus, 1);
        string mem = s.MemoryMib.ToString(CultureInfo.InvariantCulture) + "M";
        var a = new List<string>
        {
            "-name", Escape(s.Name),
            // pit=on and rtc=on: without them a TCG guest may hang calibrating its TSC.
            "-M", "microvm,x-option-roms=off,rtc=on,pit=on,memory-backend=mem",
        };
        a.AddRange(s.Accel == QemuAccel.Kvm
            ? ["-accel", "kvm", "-cpu", "host"]
            : ["-accel", $"tcg,tb-size={s.TcgTranslationBufferMib.ToString(CultureInfo.InvariantCulture)}", "-cpu", "max"]);
        a.AddRange(["-m", mem, "-smp", s.Vcpus.ToString(CultureInfo.InvariantCulture)]);
        a.Add("-object");
        a.Add(s.Memory switch
        {
            GuestMemoryKind.Anonymous => $"memory-backend-ram,id=mem,size={mem}",
            GuestMemoryKind.SharedFile => $"memory-backend-file,id=mem,size={mem},mem-path={Escape(RequireFile(s))},share=on",
            // readonly=on opens the file O_RDONLY; rom=off still maps it writable (MAP_PRIVATE, copy-on-write).
            GuestMemoryKind.PrivateFile => $"memory-backend-file,id=mem,size={mem},mem-path={Escape(RequireFile(s))},share=off,readonly=on,rom=off",
            _ => throw new ArgumentOutOfRangeException(nameof(s), s.Memory, "unknown memory kind"),
        });
        a.AddRange(["-nodefaults", "-no-user-config", "-display", "none", "-no-reboot"]);
        if (s.Firmware is { } firmware)
        {
            a.AddRange(["-bios", firmware]);
        }
        if (s.Seccomp)
        {
            a.AddRange(["-sandbox", SandboxPolicy]);
        }
        a.AddRange(["-kernel", s.KernelPath, "-initrd", s.InitrdPath, "-append", s.KernelCmdline]);
        a.AddRange(
        [
            "-drive", $"id=root,file={Escape(s.RootfsImage)},format=raw,if=none,readonly=on",
            "-device", "virtio-blk-device,drive=root",
            "-device", "virtio-serial-device",
            "-chardev", $"socket,id=agent,path={Escape(s.AgentSocket)},server=on,wait=off",
            "-device", "virtserialport,chardev=agent,name=agent",
            // The serial console goes to a socket the host drains into a bounded tail: a file could be
            // filled by the guest without limit.
            "-chardev", $"socket,id=console,path={Escape(s.ConsoleSocket)},server=on,wait=off",
            "-serial", "chardev:console",
            "-chardev", $"socket,id=qmp,path={Escape(s.QmpSocket)},server=on,wait=off",
            "-mon", "chardev=qmp,mode=control",
        ]);
        if (s.Incoming)
        {
            a.AddRange(["-incoming", "defer"]);
        }
        return a;
    }

    /// <summary>QEMU option values separate keys with commas; a literal comma is doubled.</summary>
    public static string Escape(string value) => value.Replace(",", ",,", StringComparison.Ordinal);

    private static string RequireFile(QemuLaunchSpec s) =>
        s.MemoryFile ?? throw new ArgumentException($"memory kind {s.Memory} needs a MemoryFile", nameof(s));
}
