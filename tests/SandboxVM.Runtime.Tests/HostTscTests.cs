using SandboxVM.Runtime.Qemu;

namespace SandboxVM.Runtime.Tests;

[Trait("tier", "unit")]
public sealed class HostTscTests
{
    [Fact]
    public void Refined_calibration_wins_over_the_early_one() =>
        Assert.Equal(2445404, HostTsc.ParseKernelLog(
        [
            "6,18,24,-;tsc: Detected 2400.000 MHz processor",
            "6,19,25,-;tsc: Detected 2445.000 MHz TSC",
            "6,400,900,-;tsc: Refined TSC clocksource calibration: 2445.404 MHz",
        ]));

    [Fact]
    public void Tsc_line_wins_over_the_processor_line() =>
        Assert.Equal(2445000, HostTsc.ParseKernelLog(["6,18,24,-;tsc: Detected 2400.000 MHz processor", "6,19,25,-;tsc: Detected 2445.000 MHz TSC"]));

    [Fact]
    public void No_tsc_lines_means_unknown() =>
        Assert.Null(HostTsc.ParseKernelLog(["6,1,1,-;Linux version 6.1.0"]));

    [Fact]
    public void Cpuinfo_counts_only_without_aperfmperf()
    {
        const string vm = "processor\t: 0\ncpu MHz\t\t: 2445.404\nflags\t\t: fpu tsc constant_tsc nonstop_tsc\n";
        const string metal = "processor\t: 0\ncpu MHz\t\t: 1200.000\nflags\t\t: fpu tsc constant_tsc aperfmperf\n";

        Assert.Equal(2445404, HostTsc.ParseCpuinfo(vm));
        Assert.Null(HostTsc.ParseCpuinfo(metal));
    }
}

[Trait("tier", "unit")]
public sealed class QemuKernelCmdlineTests
{
    private static QemuRuntime Tcg(int? tscKhz) => new(
        new QemuRuntimeOptions { Accel = "tcg", TscKhz = tscKhz, RequireCgroups = false, RunDirectory = "/nonexistent" },
        new Cgroups.CgroupManager(), new TestLogger<QemuRuntime>());

    private static readonly VmSpec _spec = new() { TemplateName = "t", RootfsDir = "/nonexistent", KernelArgs = "sandboxvm.tmp_size=64M" };

    [Fact]
    public void Under_tcg_the_guest_gets_the_tsc_rate_and_keeps_the_tsc_as_its_clocksource() =>
        Assert.Equal("console=ttyS0 quiet panic=-1 rdinit=/init tsc_early_khz=2445404 tsc=reliable sandboxvm.tmp_size=64M",
            Tcg(2445404).KernelCmdline(_spec));
}
