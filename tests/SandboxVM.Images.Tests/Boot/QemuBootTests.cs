using System.Diagnostics;
using Microsoft.Extensions.Logging.Abstractions;
using SandboxVM.Images.Boot;
using SandboxVM.Protocol;

namespace SandboxVM.Images.Tests.Boot;

/// <summary>Boots the built kernel and initramfs under qemu TCG and talks to the agent inside.</summary>
[Trait("Category", "Slow")]
[Trait("tier", "vm")]
public sealed class QemuBootTests(QemuBootFixture fixture) : IClassFixture<QemuBootFixture>
{
    private static readonly TimeSpan _bootTimeout = TimeSpan.FromSeconds(120);

    private static void Log(string line) => TestContext.Current.TestOutputHelper?.WriteLine(line);

    [Theory]
    [InlineData("bzImage")]
    [InlineData("vmlinux")]
    public async Task Boot_UnderTcg_TheAgentSaysHelloAndRunsAnExec(string kernelKind)
    {
        Assert.SkipWhen(fixture.SkipReason is not null, fixture.SkipReason ?? "");
        var artifacts = fixture.Artifacts;
        var kernel = kernelKind == "vmlinux" ? artifacts.VmlinuxPath : artifacts.KernelPath;
        Assert.NotNull(kernel);
        var ct = TestContext.Current.CancellationToken;
        using var timeout = CancellationTokenSource.CreateLinkedTokenSource(ct);
        timeout.CancelAfter(_bootTimeout);

        await using var vm = TestVm.Start(kernel, artifacts.InitrdPath, fixture.RootDisk, KernelCommandLine.For(tcg: true));
        HelloReply hello;
        try
        {
            await vm.ConnectAsync(timeout.Token);
            hello = await vm.HelloAsync(timeout.Token);
        }
        catch (OperationCanceledException) when (!ct.IsCancellationRequested)
        {
            Assert.Fail($"no HelloReply within {_bootTimeout.TotalSeconds} s.\n{vm.Diagnostics}");
            throw;
        }

        var helloAfter = vm.SinceStart.Elapsed;
        var execWatch = Stopwatch.StartNew();
        var (stdout, stderr, result) = await vm.ExecAsync(1, new ExecRequest
        {
            Run = ["/bin/sh", "-c", "echo hi; cat /proc/cmdline; uname -r; grep -E ' (/|/tmp|/home/sandbox) ' /proc/mounts; test -d /tmp/outputs && echo outputs; ls /dev/virtio-ports"],
        }, timeout.Token);
        var execTook = execWatch.Elapsed;

        Log($"kernel {artifacts.KernelVersion} ({kernelKind}), TCG: qemu start to HelloReply {helloAfter.TotalSeconds:F2} s; exec round trip {execTook.TotalMilliseconds:F0} ms");
        Log($"boot artifacts: {(artifacts.WasCached ? "cached" : "built")} in {fixture.BuildTime.TotalSeconds:F1} s; root disk from {fixture.RootfsSource}");
        Log("guest stdout:\n" + stdout);
        Log("serial console:\n" + vm.SerialLog);
        Assert.Equal(ProtocolInfo.Version, hello.ProtocolVersion);
        Assert.Equal(1, hello.Pid); // the agent is PID 1 after switch_root
        Assert.Contains(Ops.Exec, hello.Capabilities);
        Assert.True(result.Run is { Reason: TerminationReason.Exited, ExitCode: 0 }, $"exec: {result.Run?.Reason} {result.Run?.ExitCode}, stderr: {stderr}");
        var lines = stdout.Split('\n');
        Assert.Equal("hi", lines[0]);
        Assert.Contains("rdinit=/init", lines[1], StringComparison.Ordinal);
        Assert.Equal(artifacts.KernelVersion, lines[2]);
        Assert.Contains(lines, l => l.StartsWith("/dev/vda / ext4 ro", StringComparison.Ordinal));
        Assert.Contains(lines, l => l.StartsWith("tmpfs /tmp tmpfs rw", StringComparison.Ordinal) && l.Contains("size=262144k", StringComparison.Ordinal));
        Assert.Contains(lines, l => l.StartsWith("tmpfs /home/sandbox tmpfs rw", StringComparison.Ordinal) && l.Contains("uid=1000", StringComparison.Ordinal));
        Assert.Contains("outputs", lines);
        Assert.Contains("agent", lines);
        // Quiet console: nothing from the init when all goes well.
        Assert.DoesNotContain("sandboxvm-init", vm.SerialLog, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Boot_WhenTheInitFails_ItSaysWhyAndPowersOff()
    {
        Assert.SkipWhen(fixture.SkipReason is not null, fixture.SkipReason ?? "");
        var artifacts = fixture.Artifacts;
        var ct = TestContext.Current.CancellationToken;

        // A size with a comma would smuggle mount options in: the init refuses it.
        await using var vm = TestVm.Start(artifacts.VmlinuxPath ?? artifacts.KernelPath, artifacts.InitrdPath, fixture.RootDisk,
            KernelCommandLine.For(tcg: true, "sandboxvm.tmp_size=1M,uid=0"));
        var exited = await vm.WaitForExitAsync(_bootTimeout, ct);

        Log($"init failure: qemu exited {(exited ? "by itself" : "NOT")} after {vm.SinceStart.Elapsed.TotalSeconds:F2} s\n{vm.SerialLog}");
        Assert.True(exited, "qemu still runs: the failed init did not power the VM off.\n" + vm.Diagnostics);
        Assert.Contains("sandboxvm-init: bad tmpfs size '1M,uid=0'", vm.SerialLog, StringComparison.Ordinal);
        Assert.Contains("sandboxvm-init: powering off", vm.SerialLog, StringComparison.Ordinal);
    }

    [Fact]
    public async Task BuildAsync_Again_IsCachedAndReturnsTheSameArtifacts()
    {
        Assert.SkipWhen(fixture.SkipReason is not null, fixture.SkipReason ?? "");
        var first = fixture.Artifacts;
        var stopwatch = Stopwatch.StartNew();

        var builder = new BootArtifactsBuilder(new ImageBuilderOptions { CacheRoot = fixture.CacheRoot }, NullLogger<BootArtifactsBuilder>.Instance);
        var again = await builder.BuildAsync(null, TestContext.Current.CancellationToken);
        var firstCall = stopwatch.Elapsed;
        stopwatch.Restart();
        var third = await builder.BuildAsync(null, TestContext.Current.CancellationToken);
        var secondCall = stopwatch.Elapsed;

        Log($"cached BuildAsync: {firstCall.TotalMilliseconds:F0} ms on a new builder (apt-cache), then {secondCall.TotalMilliseconds:F1} ms");
        Assert.Equal(again.Key, third.Key);
        Assert.Equal(again.Modules, third.Modules);
        Assert.True(third.WasCached);
        // Timings are logged above, not asserted: this machine is shared (bench/ measures speed).
        Assert.True(again.WasCached);
        Assert.Equal(first.Key, again.Key);
        Assert.Equal(first.InitrdPath, again.InitrdPath);
        Assert.StartsWith("linux-image-", first.KernelPackage.Name, StringComparison.Ordinal);
        Assert.Equal(["virtio_ring", "virtio"], first.Modules.Take(2));
        Assert.Contains("virtio_mmio", first.Modules);
        Assert.Contains("virtio_blk", first.Modules);
        Assert.Contains("virtio_console", first.Modules);
        Assert.True(first.Modules.ToList().IndexOf("vsock") < first.Modules.ToList().IndexOf("vmw_vsock_virtio_transport"));
        Assert.Empty(Directory.GetFileSystemEntries(Path.Combine(fixture.CacheRoot, "boot", "kernel"), "*.tmp-*"));
        Assert.False(Directory.Exists(Path.Combine(Path.GetDirectoryName(first.KernelPath)!, ".work")));
    }
}
