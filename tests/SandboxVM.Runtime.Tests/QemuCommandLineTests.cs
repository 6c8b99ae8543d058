using SandboxVM.Runtime.Qemu;

namespace SandboxVM.Runtime.Tests;

[Trait("tier", "unit")]
public sealed class QemuCommandLineTests
{
    private static QemuLaunchSpec Spec(GuestMemoryKind memory = GuestMemoryKind.SharedFile, string dir = "/run/vm1", bool incoming = false, QemuAccel accel = QemuAccel.Tcg) => new()
    {
        Name = "qemu-abc",
        Accel = accel,
        MemoryMib = 512,
        Vcpus = 2,
        KernelPath = "/img/vmlinuz",
        InitrdPath = "/img/initrd.gz",
        RootfsImage = "/img/rootfs.ext4",
        KernelCmdline = "console=ttyS0 quiet tsc_early_khz=2445404",
        Memory = memory,
        MemoryFile = memory == GuestMemoryKind.Anonymous ? null : "/dev/shm/snap/mem",
        AgentSocket = dir + "/agent.sock",
        QmpSocket = dir + "/qmp.sock",
        ConsoleSocket = dir + "/console.sock",
        Incoming = incoming,
    };

    private static string? After(IReadOnlyList<string> args, string flag) =>
        args.Select((a, i) => (a, i)).Where(x => x.a == flag).Select(x => args[x.i + 1]).FirstOrDefault();

    private static IEnumerable<string> AllAfter(IReadOnlyList<string> args, string flag) =>
        args.Select((a, i) => (a, i)).Where(x => x.a == flag).Select(x => args[x.i + 1]);

    [Fact]
    public void Tcg_uses_cpu_max_with_a_bounded_translation_buffer()
    {
        var args = QemuCommandLine.Build(Spec());

        Assert.Equal("tcg,tb-size=128", After(args, "-accel"));
        Assert.Equal("max", After(args, "-cpu"));
        Assert.Equal("microvm,x-option-roms=off,rtc=on,pit=on,memory-backend=mem", After(args, "-M"));
        Assert.Equal("512M", After(args, "-m"));
        Assert.Equal("2", After(args, "-smp"));
    }

    [Fact]
    public void Kvm_uses_the_host_cpu()
    {
        var args = QemuCommandLine.Build(Spec(accel: QemuAccel.Kvm));

        Assert.Equal("kvm", After(args, "-accel"));
        Assert.Equal("host", After(args, "-cpu"));
    }

    [Fact]
    public void A_firmware_is_passed_with_bios_and_none_leaves_qemus_default()
    {
        Assert.Equal("/usr/share/qemu/qboot.rom", After(QemuCommandLine.Build(Spec() with { Firmware = "/usr/share/qemu/qboot.rom" }), "-bios"));
        Assert.DoesNotContain("-bios", QemuCommandLine.Build(Spec()));
    }

    [Fact]
    public void Unknown_accel_is_refused_when_the_runtime_is_made() =>
        Assert.Throws<ArgumentException>(() => new QemuRuntime(
            new QemuRuntimeOptions { Accel = "hvf", QemuPath = "/nonexistent/qemu", RequireCgroups = false, RunDirectory = "/nonexistent" },
            new SandboxVM.Runtime.Cgroups.CgroupManager(), new TestLogger<QemuRuntime>()));

    [Fact]
    public void Memory_backends_follow_the_role()
    {
        Assert.Equal("memory-backend-ram,id=mem,size=512M", After(QemuCommandLine.Build(Spec(GuestMemoryKind.Anonymous)), "-object"));
        Assert.Equal("memory-backend-file,id=mem,size=512M,mem-path=/dev/shm/snap/mem,share=on", After(QemuCommandLine.Build(Spec(GuestMemoryKind.SharedFile)), "-object"));
        // A clone opens the snapshot read-only and still gets writable (copy-on-write) RAM.
        Assert.Equal("memory-backend-file,id=mem,size=512M,mem-path=/dev/shm/snap/mem,share=off,readonly=on,rom=off", After(QemuCommandLine.Build(Spec(GuestMemoryKind.PrivateFile)), "-object"));
    }

    [Fact]
    public void A_file_backend_without_a_file_is_refused() =>
        Assert.Throws<ArgumentException>(() => QemuCommandLine.Build(Spec() with { MemoryFile = null }));

    [Fact]
    public void Clone_differs_from_template_only_in_memory_flags_sockets_and_incoming()
    {
        var template = QemuCommandLine.Build(Spec(GuestMemoryKind.SharedFile, "/run/t"));
        var clone = QemuCommandLine.Build(Spec(GuestMemoryKind.PrivateFile, "/run/c", incoming: true));

        Assert.Equal(["-incoming", "defer"], clone.Skip(template.Count));
        var differing = template.Zip(clone).Where(p => p.First != p.Second).ToList();
        Assert.All(differing, p => Assert.True(
            p.First.Replace("/run/t/", "/run/c/", StringComparison.Ordinal).Replace("share=on", "share=off,readonly=on,rom=off", StringComparison.Ordinal) == p.Second,
            $"{p.First} vs {p.Second}"));
        Assert.Equal(4, differing.Count);
    }

    [Fact]
    public void Machine_has_no_network_no_defaults_and_a_read_only_root()
    {
        var args = QemuCommandLine.Build(Spec());

        Assert.DoesNotContain(args, a => a is "-netdev" or "-nic" or "-net" || a.Contains("virtio-net", StringComparison.Ordinal));
        Assert.Contains("-nodefaults", args);
        Assert.Contains("-no-user-config", args);
        Assert.Contains("-no-reboot", args);
        Assert.Equal("id=root,file=/img/rootfs.ext4,format=raw,if=none,readonly=on", After(args, "-drive"));
        Assert.Contains("virtio-blk-device,drive=root", AllAfter(args, "-device"));
        Assert.Contains("virtserialport,chardev=agent,name=agent", AllAfter(args, "-device"));
        Assert.Contains("socket,id=agent,path=/run/vm1/agent.sock,server=on,wait=off", AllAfter(args, "-chardev"));
        Assert.Contains("socket,id=qmp,path=/run/vm1/qmp.sock,server=on,wait=off", AllAfter(args, "-chardev"));
        Assert.Equal("chardev=qmp,mode=control", After(args, "-mon"));
        Assert.Equal("console=ttyS0 quiet tsc_early_khz=2445404", After(args, "-append"));
        Assert.Equal("/img/vmlinuz", After(args, "-kernel"));
        Assert.Equal("/img/initrd.gz", After(args, "-initrd"));
        Assert.DoesNotContain("-virtfs", args);
        Assert.DoesNotContain(args, a => a.Contains("9p", StringComparison.Ordinal) || a.Contains("vhost-user-fs", StringComparison.Ordinal));
    }

    [Fact]
    public void Seccomp_denies_spawning_so_migration_must_use_fds()
    {
        var args = QemuCommandLine.Build(Spec());
        Assert.Equal("on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny", After(args, "-sandbox"));

        Assert.DoesNotContain("-sandbox", QemuCommandLine.Build(Spec() with { Seccomp = false }));
    }

    [Fact]
    public void Commas_in_paths_are_doubled()
    {
        var args = QemuCommandLine.Build(Spec(dir: "/run/a,b") with { RootfsImage = "/img/x,y.ext4" });

        Assert.Contains("socket,id=agent,path=/run/a,,b/agent.sock,server=on,wait=off", AllAfter(args, "-chardev"));
        Assert.Equal("id=root,file=/img/x,,y.ext4,format=raw,if=none,readonly=on", After(args, "-drive"));
    }
}
