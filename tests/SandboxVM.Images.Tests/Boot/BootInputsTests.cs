using SandboxVM.Images.Boot;

namespace SandboxVM.Images.Tests.Boot;

/// <summary>Parsing and keys: apt output, the init script, the kernel command line.</summary>
[Trait("tier", "integration")]
public sealed class BootInputsTests
{
    private const string AptShowCloudMeta = """
        Package: linux-image-cloud-amd64
        Source: linux-signed-amd64 (6.1.192+2)
        Version: 6.1.192-2
        Installed-Size: 14
        Depends: linux-image-6.1.0-56-cloud-amd64 (= 6.1.192-2)
        Description-en: Linux for x86-64 cloud (meta-package)
         This package depends on the latest Linux kernel and modules for use on
         cloud platforms.

        Package: linux-image-cloud-amd64
        Version: 6.1.176-1

        """;

    [Fact]
    public void ParseStanzas_SplitsStanzasAndJoinsContinuationLines()
    {
        var stanzas = DebianPackages.ParseStanzas(AptShowCloudMeta);

        Assert.Equal(2, stanzas.Count);
        Assert.Equal("6.1.176-1", stanzas[1]["Version"]);
        var fields = stanzas[0];

        Assert.Equal("6.1.192-2", fields["Version"]);
        Assert.Equal("linux-image-6.1.0-56-cloud-amd64 (= 6.1.192-2)", fields["Depends"]);
        Assert.StartsWith("Linux for x86-64 cloud (meta-package)\nThis package", fields["Description-en"], StringComparison.Ordinal);
    }

    [Theory]
    [InlineData("linux-image-6.1.0-56-cloud-amd64 (= 6.1.192-2)", "linux-image-6.1.0-56-cloud-amd64", "6.1.192-2")]
    [InlineData("initramfs-tools | linux-initramfs-tool, linux-image-6.12.48+deb13-cloud-amd64 (= 6.12.48-1)", "linux-image-6.12.48+deb13-cloud-amd64", "6.12.48-1")]
    [InlineData("linux-image-6.1.0-56-cloud-amd64", "linux-image-6.1.0-56-cloud-amd64", null)]
    [InlineData("linux-image-6.1.0-56-cloud-amd64 (>= 6.1)", "linux-image-6.1.0-56-cloud-amd64", null)]
    public void FindDependency_TakesTheFirstMatchAndOnlyAnExactPin(string depends, string name, string? version)
    {
        var found = DebianPackages.FindDependency(depends, "linux-image-");

        Assert.Equal((name, version), found);
    }

    [Fact]
    public void FindDependency_WithoutMatch_IsNull()
    {
        Assert.Null(DebianPackages.FindDependency("libc6 (>= 2.36), busybox", "linux-image-"));
    }

    [Fact]
    public async Task InitScript_IsValidShell_LoadsModulesInOrder_AndStartsTheAgent()
    {
        var script = InitScript.Render(["virtio_ring", "virtio", "virtio_mmio"]);
        var path = Path.Combine(Path.GetTempPath(), $"sbvm-init-{Guid.NewGuid():N}");
        await File.WriteAllTextAsync(path, script, TestContext.Current.CancellationToken);
        try
        {
            // dash is what the host has; busybox ash is what runs it. Both parse it.
            await TestCache.RunAsync("/bin/sh", "-n", path);
            if (TestCache.HasTool("busybox"))
                await TestCache.RunAsync("busybox", "sh", "-n", path);
        }
        finally
        {
            File.Delete(path);
        }

        Assert.StartsWith("#!/bin/sh\n", script, StringComparison.Ordinal);
        Assert.Contains("for m in virtio_ring virtio virtio_mmio; do", script, StringComparison.Ordinal);
        Assert.Contains("exec switch_root /newroot /opt/sandboxvm/bin/sandboxvm-agent --channel /dev/virtio-ports/$port --vm --home /home/sandbox", script, StringComparison.Ordinal);
        Assert.Contains("chown 1000:1000 /newroot/tmp/outputs", script, StringComparison.Ordinal);
        Assert.Contains("mkdir -m 0711 /newroot/tmp/runs", script, StringComparison.Ordinal);
        Assert.Contains("-o nosuid,nodev,noexec,hidepid=invisible proc /proc", script, StringComparison.Ordinal);
        Assert.DoesNotContain("@", script.Replace("$@", "", StringComparison.Ordinal), StringComparison.Ordinal);
        Assert.DoesNotContain("\r", script, StringComparison.Ordinal);
    }

    [Fact]
    public void InitScript_RejectsModuleNamesThatAreNotNames()
    {
        Assert.Throws<ArgumentException>(() => InitScript.Render(["virtio; reboot"]));
    }

    [Fact]
    public void Keys_ArePinnedAndChangeWithEachInput()
    {
        var kernel = new DebianPackage("linux-image-6.1.0-56-cloud-amd64", "6.1.192-2");
        var key = BootKeys.Kernel(kernel, ["virtio_mmio"]);

        Assert.Matches("^[0-9a-f]{64}$", key);
        Assert.Equal(key, BootKeys.Kernel(kernel, ["virtio_mmio"]));
        Assert.NotEqual(key, BootKeys.Kernel(kernel with { Version = "6.1.192-3" }, ["virtio_mmio"]));
        Assert.NotEqual(key, BootKeys.Kernel(kernel, ["virtio_mmio", "overlay"]));

        var busybox = new DebianPackage("busybox-static", "1:1.35.0-4+deb12u1+b1");
        (string, string)[] modules = [("virtio", "aa"), ("virtio_mmio", "bb")];
        var initrd = BootKeys.Initrd(modules, busybox, "#!/bin/sh\n");
        Assert.NotEqual(initrd, BootKeys.Initrd([("virtio", "aa"), ("virtio_mmio", "bc")], busybox, "#!/bin/sh\n"));
        Assert.NotEqual(initrd, BootKeys.Initrd(modules, busybox with { Version = "1:1.36" }, "#!/bin/sh\n"));
        Assert.NotEqual(initrd, BootKeys.Initrd(modules, busybox, "#!/bin/sh\n\n"));
        Assert.NotEqual(BootKeys.Combined(key, initrd), BootKeys.Combined(initrd, key));
    }

    [Theory]
    [InlineData("processor\t: 0\ncpu MHz\t\t: 2445.404\nflags\t\t: fpu tsc constant_tsc\n", 2445404)]
    [InlineData("processor\t: 0\ncpu MHz\t\t: 3000.000\n\nprocessor\t: 1\ncpu MHz\t\t: 1200.000\n", 3000000)]
    [InlineData("processor\t: 0\nBogoMIPS\t: 48.00\n", null)]
    [InlineData("cpu MHz\t\t: nonsense\n", null)]
    public void ParseTscKhz_ReadsTheFirstCpuMhz(string cpuinfo, int? expected)
    {
        Assert.Equal(expected, KernelCommandLine.ParseTscKhz(cpuinfo));
    }

    [Fact]
    public void HostTscKhz_WhenCpuidStatesIt_AgreesWithCpuinfo()
    {
        var fromCpuid = KernelCommandLine.CpuidTscKhz();
        var fromCpuinfo = File.Exists("/proc/cpuinfo") ? KernelCommandLine.ParseTscKhz(File.ReadAllText("/proc/cpuinfo")) : null;
        TestContext.Current.TestOutputHelper?.WriteLine($"TSC kHz: cpuid {fromCpuid}, /proc/cpuinfo {fromCpuinfo}");
        Assert.SkipWhen(fromCpuid is null, "this CPU/hypervisor does not state its TSC rate in CPUID");

        Assert.Equal(fromCpuid, KernelCommandLine.HostTscKhz());
        if (fromCpuinfo is not null && File.ReadAllText("/proc/cpuinfo").Contains("tsc_known_freq", StringComparison.Ordinal))
            Assert.InRange(fromCpuid!.Value, fromCpuinfo.Value * 0.99, fromCpuinfo.Value * 1.01);
    }

    [Fact]
    public void KernelCommandLine_AddsTheTscRateOnlyUnderTcg_AndAppendsExtras()
    {
        var kvm = KernelCommandLine.For(tcg: false, "sandboxvm.tmp_size=512M");
        var tcg = KernelCommandLine.For(tcg: true);

        Assert.Equal("console=ttyS0 quiet panic=-1 rdinit=/init sandboxvm.tmp_size=512M", kvm);
        Assert.Matches(@"^console=ttyS0 quiet panic=-1 rdinit=/init tsc_early_khz=\d+ tsc=reliable cryptomgr.notests$", tcg);
        Assert.DoesNotContain("nomodule", tcg, StringComparison.Ordinal);
        Assert.Throws<ArgumentException>(() => KernelCommandLine.For(false, "a\nb"));
    }
}
