using System.Globalization;
using System.Security.Cryptography;
using SandboxVM.Protocol;
using SandboxVM.Runtime.Agent;
using SandboxVM.Runtime.Cgroups;
using SandboxVM.Runtime.Qemu;

namespace SandboxVM.Runtime.Tests;

/// <summary>
/// Boots real VMs under TCG. Each test disposes what it started in a finally; the fixture's teardown
/// sweeps anything a crashed test left.
/// </summary>
[Trait("Category", "E2E")]
[Collection(QemuCollection.Name)]
[Trait("tier", "vm")]
public sealed class QemuRuntimeE2ETests(QemuFixture fixture)
{
    private static CancellationToken Ct => TestContext.Current.CancellationToken;

    private static void Log(string line) => TestContext.Current.TestOutputHelper?.WriteLine(line);

    [Fact]
    public async Task Cold_boot_reaches_the_agent_under_tcg()
    {
        fixture.SkipUnlessAvailable();
        Assert.Equal(QemuAccel.Tcg, fixture.Runtime.Accel);
        // A warm-up key nobody prepared: no snapshot, so a cold boot.
        var spec = fixture.Spec with { WarmupKey = "cold-" + Guid.NewGuid() };

        IVm vm = await fixture.Runtime.StartAsync(spec, Ct);
        try
        {
            Log($"cold boot to agent ready: {vm.StartupTime.TotalMilliseconds:0} ms");
            Assert.Equal(VmSource.Boot, vm.Source);
            Assert.StartsWith("qemu-", vm.Id, StringComparison.Ordinal);
            await vm.Agent.PingAsync(Ct);
            Assert.Equal("hello", await QemuFixture.ShAsync(vm.Agent, "echo hello", Ct));
            Assert.Contains("tsc_early_khz=", await QemuFixture.ShAsync(vm.Agent, "cat /proc/cmdline", Ct), StringComparison.Ordinal);
            AssertClockClose(await QemuFixture.ShAsync(vm.Agent, "date +%s", Ct));
            Assert.Equal(0, vm.ReadUsage().OomKills);
        }
        finally
        {
            await vm.DisposeAsync();
        }
    }

    [Fact]
    public async Task Snapshot_clones_answer_with_their_own_entropy_and_the_host_clock()
    {
        fixture.SkipUnlessAvailable();
        SnapshotInfo snapshot = await fixture.SnapshotAsync(Ct);
        Log($"snapshot {snapshot.Key} in {snapshot.Elapsed.TotalMilliseconds:0} ms (built: {snapshot.Built})");
        string mem = Path.Combine(snapshot.Directory, "mem");
        string before = HashFile(mem);

        IVm first = await fixture.Runtime.StartAsync(fixture.Spec, Ct);
        IVm? second = null;
        try
        {
            second = await fixture.Runtime.StartAsync(fixture.Spec, Ct);
            Log($"restores: {first.StartupTime.TotalMilliseconds:0} ms, {second.StartupTime.TotalMilliseconds:0} ms");
            Assert.Equal(VmSource.Restore, first.Source);
            Assert.Equal(VmSource.Restore, second.Source);
            Assert.NotEqual(first.Id, second.Id);

            // Both carry the warm-up's state.
            Assert.Equal("warmed", await QemuFixture.ShAsync(first.Agent, "cat /tmp/warm", Ct));
            Assert.Equal("warmed", await QemuFixture.ShAsync(second.Agent, "cat /tmp/warm", Ct));

            const string random = "head -c8 /dev/urandom | od -An -tx1 | tr -d ' \\n'";
            string r1 = await QemuFixture.ShAsync(first.Agent, random, Ct);
            string r2 = await QemuFixture.ShAsync(second.Agent, random, Ct);
            Log($"urandom: {r1} vs {r2}");
            Assert.Equal(16, r1.Length);
            Assert.NotEqual(r1, r2);

            AssertClockClose(await QemuFixture.ShAsync(first.Agent, "date +%s", Ct));
            AssertClockClose(await QemuFixture.ShAsync(second.Agent, "date +%s", Ct));

            // Each clone writes its own tmpfs; the other does not see it.
            await QemuFixture.ShAsync(first.Agent, "echo one > /tmp/mine && dd if=/dev/zero of=/tmp/fill bs=1M count=32 2>/dev/null", Ct);
            Assert.Equal("absent", await QemuFixture.ShAsync(second.Agent, "test -e /tmp/mine && echo present || echo absent", Ct));
        }
        finally
        {
            await first.DisposeAsync();
            if (second is not null)
            {
                await second.DisposeAsync();
            }
        }
        // share=off: nothing the clones did reached the template's RAM file.
        Assert.Equal(before, HashFile(mem));
    }

    [Fact]
    public async Task A_restored_clone_keeps_time_with_the_host()
    {
        fixture.SkipUnlessAvailable();
        await fixture.SnapshotAsync(Ct);
        IVm vm = await fixture.Runtime.StartAsync(fixture.Spec, Ct);
        try
        {
            Assert.Equal(VmSource.Restore, vm.Source);
            // The TSC, not jiffies: a jiffies clock follows the host's load under TCG.
            Assert.Equal("tsc", await QemuFixture.ShAsync(vm.Agent, "cat /sys/devices/system/clocksource/clocksource0/current_clocksource", Ct));

            // The guest stamps its clock, waits 2 s on a timed read, stamps again; the host stamps the
            // arrival of each line. Builtins only between the stamps: a process start under TCG can hold
            // the agent off the vCPU and delay the first line. A rate check, not a speed check: a slow
            // host makes both sides slower alike.
            var lines = new StampedLines();
            ExecResult result = await vm.Agent.ExecAsync(new ExecRequest
            {
                Run = ["bash", "-c", "rm -f /tmp/.clk; mkfifo /tmp/.clk; exec 3<>/tmp/.clk; echo T1 $EPOCHREALTIME; read -t 2 -u 3; echo T2 $EPOCHREALTIME"],
                RunTimeoutMs = 60_000,
            }, lines, Ct);
            Assert.Equal(TerminationReason.Exited, result.Run?.Reason);
            var (guest, host) = lines.Elapsed("T1", "T2");
            Log($"2 s wait: guest {guest:0.000} s, host {host:0.000} s, ratio {guest / host:0.000}");
            Assert.InRange(guest, 1.99, 2.5);
            Assert.InRange(guest / host, 0.95, 1.05);
        }
        finally
        {
            await vm.DisposeAsync();
        }
    }

    [Fact]
    public async Task Preparing_again_reuses_the_snapshot()
    {
        fixture.SkipUnlessAvailable();
        SnapshotInfo first = await fixture.SnapshotAsync(Ct);

        SnapshotInfo? again = await fixture.Runtime.PrepareSnapshotAsync(fixture.Spec, (_, _) => throw new InvalidOperationException("must not warm up again"), Ct);

        Assert.NotNull(again);
        Assert.False(again.Built);
        Assert.Equal(first.Key, again.Key);
        Assert.Equal(first.Directory, again.Directory);
    }

    [Fact]
    public async Task A_snapshot_deleted_underneath_is_rebuilt_and_another_builds_snapshot_in_use_survives()
    {
        fixture.SkipUnlessAvailable();
        // The fixture's snapshot plays another server's (same template, other key), saved moments ago.
        SnapshotInfo others = await fixture.SnapshotAsync(Ct);
        VmSpec spec = fixture.Spec with { WarmupKey = "deleted underneath" };
        Func<AgentClient, CancellationToken, Task> warmup = (agent, ct) => QemuFixture.ShAsync(agent, "echo rebuilt > /tmp/warm", ct);

        SnapshotInfo first = (await fixture.Runtime.PrepareSnapshotAsync(spec, warmup, Ct))!;
        Assert.NotEqual(others.Key, first.Key);
        Assert.True(fixture.Runtime.SnapshotExists(others), "saving a new snapshot removed another one still in use");

        Directory.Delete(first.Directory, recursive: true);
        Assert.False(fixture.Runtime.SnapshotExists(first));

        SnapshotInfo again = (await fixture.Runtime.PrepareSnapshotAsync(spec, warmup, Ct))!;
        Assert.True(again.Built);
        Assert.Equal(first.Key, again.Key);
        Assert.True(fixture.Runtime.SnapshotExists(again));
        await using IVm vm = await fixture.Runtime.StartAsync(spec, Ct);
        Assert.Equal(VmSource.Restore, vm.Source);
        Assert.Equal("rebuilt", await QemuFixture.ShAsync(vm.Agent, "cat /tmp/warm", Ct));
        Assert.True(File.Exists(Path.Combine(again.Directory, "last-used")));
    }

    [Fact]
    public async Task Killing_qemu_completes_Exited_and_the_next_start_works()
    {
        fixture.SkipUnlessAvailable();
        await fixture.PrepareIfSnapshotsAsync(Ct);
        var vm = (QemuVm)await fixture.Runtime.StartAsync(fixture.Spec, Ct);
        try
        {
            System.Diagnostics.Process.GetProcessById(vm.ProcessId).Kill();

            await vm.Exited.WaitAsync(TimeSpan.FromSeconds(10), Ct);
            await Assert.ThrowsAsync<AgentDisconnectedException>(() => vm.Agent.PingAsync(Ct).WaitAsync(TimeSpan.FromSeconds(10), Ct));
        }
        finally
        {
            await vm.DisposeAsync();
        }
        Assert.False(Directory.Exists(vm.RunDirectory));

        IVm next = await fixture.Runtime.StartAsync(fixture.Spec, Ct);
        try
        {
            Assert.Equal(fixture.StartSource, next.Source);
            Assert.Equal("ok", await QemuFixture.ShAsync(next.Agent, "echo ok", Ct));
        }
        finally
        {
            await next.DisposeAsync();
        }
    }

    [Fact]
    public async Task Dispose_leaves_no_process_cgroup_or_run_directory()
    {
        fixture.SkipUnlessAvailable();
        await fixture.PrepareIfSnapshotsAsync(Ct);
        var vm = (QemuVm)await fixture.Runtime.StartAsync(fixture.Spec, Ct);
        int pid = vm.ProcessId;
        bool cgroups = new CgroupManager().IsUsable;
        try
        {
            Assert.True(IsAlive(pid));
            if (cgroups)
            {
                Assert.True(CgroupExists(vm.Id), "QEMU runs in its own cgroup");
                Assert.Contains(pid, CgroupPids(vm.Id));
            }
        }
        finally
        {
            await vm.DisposeAsync();
        }
        await vm.DisposeAsync(); // twice is safe

        Assert.True(vm.Exited.IsCompleted);
        Assert.False(IsAlive(pid), $"qemu {pid} still runs");
        Assert.False(CgroupExists(vm.Id), "cgroup left behind");
        Assert.False(Directory.Exists(vm.RunDirectory), "run directory left behind");
    }

    [Fact]
    public async Task CleanupLeftovers_ends_a_qemu_whose_server_is_gone()
    {
        fixture.SkipUnlessAvailable();
        await fixture.PrepareIfSnapshotsAsync(Ct);
        var previous = fixture.NewRuntime();
        var vm = (QemuVm)await previous.StartAsync(fixture.Spec, Ct);
        try
        {
            // The VM now belongs to a server that has exited (a process that ran and was reaped).
            using (var gone = System.Diagnostics.Process.Start("/bin/true")!)
            {
                await gone.WaitForExitAsync(Ct);
                await File.WriteAllTextAsync(Path.Combine(vm.RunDirectory, "owner"), gone.Id.ToString(), Ct);
            }
            // The new instance (a restarted server) shares the run directory but not the VM.
            int ended = await fixture.NewRuntime().CleanupLeftoversAsync(Ct);

            Assert.True(ended >= 1, $"ended {ended}");
            await vm.Exited.WaitAsync(TimeSpan.FromSeconds(10), Ct);
            Assert.False(IsAlive(vm.ProcessId));
            Assert.False(Directory.Exists(vm.RunDirectory));
            Assert.False(CgroupExists(vm.Id));
        }
        finally
        {
            await vm.DisposeAsync();
        }
    }

    [Fact]
    public async Task CleanupLeftovers_leaves_the_vms_of_a_running_server_alone()
    {
        fixture.SkipUnlessAvailable();
        await fixture.PrepareIfSnapshotsAsync(Ct);
        var other = fixture.NewRuntime();
        IVm vm = await other.StartAsync(fixture.Spec, Ct);
        try
        {
            // Another server (here another instance in this live process) shares the run directory.
            await fixture.NewRuntime().CleanupLeftoversAsync(Ct);

            await vm.Agent.PingAsync(Ct);
            Assert.False(vm.Exited.IsCompleted);
        }
        finally
        {
            await vm.DisposeAsync();
        }
    }

    [Fact]
    public async Task CleanupLeftovers_leaves_the_instances_own_vms_alone()
    {
        fixture.SkipUnlessAvailable();
        await fixture.PrepareIfSnapshotsAsync(Ct);
        var runtime = fixture.NewRuntime();
        IVm vm = await runtime.StartAsync(fixture.Spec, Ct);
        try
        {
            await runtime.CleanupLeftoversAsync(Ct);

            await vm.Agent.PingAsync(Ct);
            Assert.False(vm.Exited.IsCompleted);
        }
        finally
        {
            await vm.DisposeAsync();
        }
    }

    [Fact]
    public async Task Guest_oom_is_reported_by_the_agent_and_the_vm_survives()
    {
        fixture.SkipUnlessAvailable();
        await fixture.SnapshotAsync(Ct);
        IVm vm = await fixture.Runtime.StartAsync(fixture.Spec, Ct);
        try
        {
            var output = new CollectingObserver();
            // tail (the step's main process, via exec) keeps the last 900 MiB of a fifo in small buffers:
            // no single allocation the guest's overcommit check refuses, and memory grows until the
            // guest OOM killer takes it.
            ExecResult result = await vm.Agent.ExecAsync(new ExecRequest
            {
                Run = ["sh", "-c", "mkfifo /tmp/hog && (head -c 2000M /dev/zero > /tmp/hog &) && exec tail -c 900M /tmp/hog"],
                RunTimeoutMs = 120_000,
            }, output, Ct);

            Log($"oom step: {result.Run?.Reason} signal {result.Run?.Signal} in {result.Run?.DurationMs} ms");
            Assert.Equal(TerminationReason.Oom, result.Run?.Reason);
            await vm.Agent.PingAsync(Ct);
            Assert.Equal(0, vm.ReadUsage().OomKills);
        }
        catch (AgentDisconnectedException)
        {
            await vm.Exited.WaitAsync(TimeSpan.FromSeconds(5), Ct);
            var usage = vm.ReadUsage();
            await vm.DisposeAsync();
            Log($"VM died: host oom kills {usage.OomKills}, peak {usage.PeakMemoryBytes >> 20} MiB; {((QemuVm)vm).Diagnostics}");
            throw;
        }
        finally
        {
            await vm.DisposeAsync();
        }
    }

    [Fact]
    public async Task A_qemu_over_its_host_memory_cap_dies_and_reports_the_oom_kill()
    {
        fixture.SkipUnlessAvailable();
        Assert.SkipUnless(new CgroupManager().IsUsable, "needs writable cgroups (root)");
        await fixture.PrepareIfSnapshotsAsync(Ct);
        // A cap below the guest's own RAM: the host kernel, not the guest, must stop it.
        var options = fixture.Options();
        options.MemoryOverheadMib = -(options.TcgTranslationBufferMib + QemuFixture.MemoryMib / 2);
        var runtime = new QemuRuntime(options, new CgroupManager(), new TestLogger<QemuRuntime>());
        IVm vm = await runtime.StartAsync(fixture.Spec, Ct);
        try
        {
            await Assert.ThrowsAsync<AgentDisconnectedException>(() => vm.Agent.ExecAsync(new ExecRequest
            {
                Run = ["sh", "-c", "mkfifo /tmp/hog && (head -c 2000M /dev/zero > /tmp/hog &) && exec tail -c 900M /tmp/hog"],
                RunTimeoutMs = 120_000,
            }, new CollectingObserver(), Ct));

            await vm.Exited.WaitAsync(TimeSpan.FromSeconds(10), Ct);
            var usage = vm.ReadUsage();
            Log($"host oom kills {usage.OomKills}, peak {usage.PeakMemoryBytes >> 20} MiB; {((QemuVm)vm).Diagnostics}");
            Assert.True(usage.OomKills >= 1, "the cgroup counted the kill");
        }
        finally
        {
            await vm.DisposeAsync();
        }
    }

    [Fact]
    public async Task Restore_is_much_faster_than_a_cold_boot()
    {
        fixture.SkipUnlessAvailable();
        await fixture.SnapshotAsync(Ct);
        var boots = new List<double>();
        var restores = new List<double>();
        for (int i = 0; i < 3; i++)
        {
            await using IVm vm = await fixture.Runtime.StartAsync(fixture.Spec with { WarmupKey = "cold-" + Guid.NewGuid() }, Ct);
            Assert.Equal(VmSource.Boot, vm.Source);
            boots.Add(vm.StartupTime.TotalMilliseconds);
        }
        for (int i = 0; i < 6; i++)
        {
            await using IVm vm = await fixture.Runtime.StartAsync(fixture.Spec, Ct);
            Assert.Equal(VmSource.Restore, vm.Source);
            restores.Add(vm.StartupTime.TotalMilliseconds);
        }
        double boot = Median(boots), restore = Median(restores);
        Log($"TCG cold boot to agent ready: median {boot:0} ms ({string.Join(", ", boots.Select(b => b.ToString("0", CultureInfo.InvariantCulture)))})");
        Log($"TCG restore to agent ready: median {restore:0} ms ({string.Join(", ", restores.Select(r => r.ToString("0", CultureInfo.InvariantCulture)))})");
        Assert.True(restore * 5 < boot, $"restore {restore:0} ms vs boot {boot:0} ms");
    }

    private static double Median(List<double> values)
    {
        var sorted = values.Order().ToList();
        return sorted.Count % 2 == 1 ? sorted[sorted.Count / 2] : (sorted[sorted.Count / 2 - 1] + sorted[sorted.Count / 2]) / 2;
    }

    private static void AssertClockClose(string guestSeconds)
    {
        long guest = long.Parse(guestSeconds, CultureInfo.InvariantCulture);
        long host = DateTimeOffset.UtcNow.ToUnixTimeSeconds();
        Assert.True(Math.Abs(host - guest) <= 2, $"guest clock {guest}, host {host}");
    }

    internal static string HashFile(string path)
    {
        using var stream = File.OpenRead(path);
        return Convert.ToHexString(SHA256.HashData(stream));
    }

    private static bool IsAlive(int pid)
    {
        try
        {
            // A zombie has exited; only a process still running counts.
            return !File.ReadAllText($"/proc/{pid}/stat").Contains(") Z ", StringComparison.Ordinal);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            return false;
        }
    }

    private static IEnumerable<string> CgroupDirs(string id) =>
        [Path.Combine("/sys/fs/cgroup/memory", Cgroup.ParentName, id), Path.Combine("/sys/fs/cgroup/pids", Cgroup.ParentName, id), Path.Combine("/sys/fs/cgroup", Cgroup.ParentName, id)];

    private static bool CgroupExists(string id) => CgroupDirs(id).Any(Directory.Exists);

    private static IReadOnlyList<int> CgroupPids(string id) => CgroupDirs(id)
        .Select(d => Path.Combine(d, "cgroup.procs"))
        .Where(File.Exists)
        .SelectMany(File.ReadAllLines)
        .Where(l => l.Length > 0)
        .Select(l => int.Parse(l, CultureInfo.InvariantCulture))
        .ToList();
}
