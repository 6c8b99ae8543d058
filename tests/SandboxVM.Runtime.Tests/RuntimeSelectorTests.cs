using SandboxVM.Runtime.Cgroups;
using SandboxVM.Runtime.Gvisor;

namespace SandboxVM.Runtime.Tests;

/// <summary>What `auto` picks on hosts with and without KVM, gVisor, QEMU; and what an explicit choice needs.</summary>
[Trait("tier", "unit")]
public sealed class RuntimeSelectorTests
{
    private static readonly RunscStatus Works = new(true, "runsc version 0.0~20240729.0", "a systrap sandbox ran /bin/true");
    private static readonly RunscStatus Broken = new(false, "runsc version 0.0~20240729.0", "a systrap sandbox did not run (exit 128): seccomp unavailable");

    private static HostFacts Host(bool kvm = false, bool qemu = true, bool bwrap = true, RunscStatus? runsc = null, bool runscInstalled = true) =>
        new(KvmPresent: kvm, KvmUsable: kvm, FirecrackerPath: null,
            QemuPath: qemu ? "/usr/bin/qemu-system-x86_64" : null, BwrapPath: bwrap ? "/usr/bin/bwrap" : null,
            MmdebstrapPath: "/usr/bin/mmdebstrap", Cgroups: CgroupVersion.V2, IsRoot: true)
        {
            RunscPath = runscInstalled ? "/usr/bin/runsc" : null,
            Runsc = runscInstalled ? runsc : null,
        };

    [Fact]
    public void Auto_with_kvm_picks_qemu_kvm_even_where_gvisor_works()
    {
        var choice = RuntimeSelector.Choose("auto", Host(kvm: true, runsc: Works), "auto");
        Assert.Equal(("qemu", "kvm"), (choice.Runtime, choice.Accel));
    }

    [Fact]
    public void Auto_without_kvm_picks_gvisor_where_a_sandbox_ran_and_says_why()
    {
        var choice = RuntimeSelector.Choose("auto", Host(runsc: Works), "auto");
        Assert.Equal(("gvisor", "systrap"), (choice.Runtime, choice.Accel));
        Assert.Contains("no /dev/kvm", choice.Reason);
        Assert.Contains("gVisor ran a systrap sandbox", choice.Reason);
    }

    [Fact]
    public void Auto_without_kvm_falls_back_to_qemu_tcg_when_gvisor_does_not_run_here_and_names_the_failure()
    {
        var choice = RuntimeSelector.Choose("auto", Host(runsc: Broken), "auto");
        Assert.Equal(("qemu", "tcg"), (choice.Runtime, choice.Accel));
        Assert.Contains("seccomp unavailable", choice.Reason);
    }

    [Fact]
    public void Auto_without_kvm_or_runsc_is_qemu_tcg_saying_runsc_is_missing()
    {
        var choice = RuntimeSelector.Choose("auto", Host(runscInstalled: false), "auto");
        Assert.Equal(("qemu", "tcg"), (choice.Runtime, choice.Accel));
        Assert.Contains("runsc (gVisor) is not installed", choice.Reason);
    }

    [Fact]
    public void Accel_tcg_keeps_auto_on_qemu_even_where_gvisor_works()
    {
        var choice = RuntimeSelector.Choose("auto", Host(runsc: Works), "tcg");
        Assert.Equal(("qemu", "tcg"), (choice.Runtime, choice.Accel));
    }

    [Fact]
    public void Auto_without_kvm_and_qemu_picks_gvisor_before_the_process_runtime()
    {
        Assert.Equal("gvisor", RuntimeSelector.Choose("auto", Host(qemu: false, runsc: Works), "auto").Runtime);
        Assert.Equal("process", RuntimeSelector.Choose("auto", Host(qemu: false, runsc: Broken), "auto").Runtime);
    }

    [Fact]
    public void Gvisor_requested_explicitly_needs_runsc_and_a_working_sandbox()
    {
        Assert.Equal("gvisor", RuntimeSelector.Choose("gvisor", Host(runsc: Works)).Runtime);
        // Not probed (the server probes only when gvisor may be chosen; this is that case's result).
        Assert.Equal("gvisor", RuntimeSelector.Choose("gvisor", Host(runsc: null)).Runtime);
        var missing = Assert.Throws<InvalidOperationException>(() => RuntimeSelector.Choose("gvisor", Host(runscInstalled: false)));
        Assert.Contains("needs runsc", missing.Message);
        var broken = Assert.Throws<InvalidOperationException>(() => RuntimeSelector.Choose("gvisor", Host(runsc: Broken)));
        Assert.Contains("seccomp unavailable", broken.Message);
    }

    [Fact]
    public void Qemu_tcg_stays_selectable_explicitly_where_gvisor_works() =>
        Assert.Equal(("qemu", "tcg"), (RuntimeSelector.Choose("qemu", Host(runsc: Works)).Runtime, RuntimeSelector.Choose("qemu", Host(runsc: Works)).Accel));

    [Fact]
    public void Unknown_runtime_names_gvisor_among_the_choices()
    {
        var e = Assert.Throws<ArgumentException>(() => RuntimeSelector.Choose("docker", Host()));
        Assert.Contains("gvisor", e.Message);
    }

    [Theory]
    [InlineData(IsolationLevel.Vm, "vm")]
    [InlineData(IsolationLevel.UserSpaceKernel, "user-space-kernel")]
    [InlineData(IsolationLevel.SharedKernel, "shared-kernel")]
    public void Isolation_levels_have_their_api_names(IsolationLevel level, string name) => Assert.Equal(name, level.Name());
}
