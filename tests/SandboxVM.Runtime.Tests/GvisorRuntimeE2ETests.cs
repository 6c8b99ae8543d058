using System.Globalization;
using SandboxVM.Protocol;
using SandboxVM.Runtime.Gvisor;

namespace SandboxVM.Runtime.Tests;

/// <summary>
/// Real gVisor sandboxes (runsc, systrap). Each test disposes what it started in a finally; the
/// fixture's teardown ends anything a failed test left and removes the runsc state.
/// </summary>
[Trait("Category", "E2E")]
[Collection(GvisorCollection.Name)]
[Trait("tier", "vm")]
public sealed class GvisorRuntimeE2ETests(GvisorFixture fixture)
{
    private static CancellationToken Ct => TestContext.Current.CancellationToken;

    private static void Log(string line) => TestContext.Current.TestOutputHelper?.WriteLine(line);

    [Fact]
    public async Task Cold_start_runs_user_code_as_the_sandbox_user_in_a_read_only_root_with_capped_tmpfs_and_no_network()
    {
        fixture.SkipUnlessAvailable();
        // A warm-up key nobody prepared: no checkpoint, so a cold start.
        var spec = fixture.Spec with { WarmupKey = "cold-" + Guid.NewGuid() };
        IVm vm = await fixture.Runtime.StartAsync(spec, Ct);
        try
        {
            Log($"cold start to agent ready: {vm.StartupTime.TotalMilliseconds:0} ms");
            Assert.Equal(VmSource.Boot, vm.Source);
            Assert.StartsWith("gvisor-", vm.Id, StringComparison.Ordinal);
            Assert.Equal("1000 1000", await GvisorFixture.ShAsync(vm.Agent, "echo $(id -u) $(id -g)", Ct));
            // The sentry answers, not the host kernel: it reports a release of its own.
            string hostRelease = (await File.ReadAllTextAsync("/proc/sys/kernel/osrelease", Ct)).Trim();
            Assert.NotEqual(hostRelease, await GvisorFixture.ShAsync(vm.Agent, "uname -r", Ct));
            // The root mount itself is read-only (not just closed to uid 1000): the image cache is shared.
            string rootOptions = await GvisorFixture.ShAsync(vm.Agent, "awk '$2 == \"/\" { print $4 }' /proc/mounts", Ct);
            Assert.Contains("ro", rootOptions.Split(','));
            Assert.Equal("ok", await GvisorFixture.ShAsync(vm.Agent, "echo x > /tmp/f && echo x > $HOME/f && echo ok", Ct));
            // 64 MiB tmpfs: 80 MiB do not fit.
            Assert.Equal("full", await GvisorFixture.ShAsync(vm.Agent, "dd if=/dev/zero of=/tmp/big bs=1M count=80 2>/dev/null && echo fits || echo full", Ct));
            // Only a loopback device.
            string devices = await GvisorFixture.ShAsync(vm.Agent, "tail -n +3 /proc/net/dev | cut -d: -f1 | tr -d ' ' | sort | tr '\\n' ' '", Ct);
            Assert.Equal("lo", devices.Trim());
            AssertClockClose(await GvisorFixture.ShAsync(vm.Agent, "date +%s", Ct));
        }
        finally
        {
            await vm.DisposeAsync();
        }
    }

    [Fact]
    public async Task Restores_from_one_checkpoint_carry_the_warm_up_and_answer_over_a_fresh_channel()
    {
        fixture.SkipUnlessAvailable();
        SnapshotInfo snapshot = await fixture.SnapshotAsync(Ct);
        Log($"checkpoint {snapshot.Key} in {snapshot.Elapsed.TotalMilliseconds:0} ms (built: {snapshot.Built})");
        Assert.True(File.Exists(Path.Combine(snapshot.Directory, "image", "checkpoint.img")));
        Assert.True(fixture.Runtime.SnapshotExists(snapshot));

        IVm first = await fixture.Runtime.StartAsync(fixture.Spec, Ct);
        IVm? second = null;
        try
        {
            second = await fixture.Runtime.StartAsync(fixture.Spec, Ct);
            Log($"restores to agent ready: {first.StartupTime.TotalMilliseconds:0} ms, {second.StartupTime.TotalMilliseconds:0} ms");
            Assert.Equal(VmSource.Restore, first.Source);
            Assert.Equal(VmSource.Restore, second.Source);
            Assert.NotEqual(first.Id, second.Id);

            Assert.Equal("warmed", await GvisorFixture.ShAsync(first.Agent, "cat /tmp/warm", Ct));
            Assert.Equal("warmed", await GvisorFixture.ShAsync(second.Agent, "cat /tmp/warm", Ct));
            // Each clone has its own writable state.
            await GvisorFixture.ShAsync(first.Agent, "echo first > /tmp/mine", Ct);
            Assert.Equal("absent", await GvisorFixture.ShAsync(second.Agent, "cat /tmp/mine 2>/dev/null || echo absent", Ct));

            const string random = "head -c8 /dev/urandom | od -An -tx1 | tr -d ' \\n'";
            string r1 = await GvisorFixture.ShAsync(first.Agent, random, Ct);
            string r2 = await GvisorFixture.ShAsync(second.Agent, random, Ct);
            Assert.Equal(16, r1.Length);
            Assert.NotEqual(r1, r2);
            AssertClockClose(await GvisorFixture.ShAsync(first.Agent, "date +%s", Ct));
            AssertClockClose(await GvisorFixture.ShAsync(second.Agent, "date +%s", Ct));

            // Ending one clone leaves the other working.
            await first.DisposeAsync();
            Assert.Equal("still here", await GvisorFixture.ShAsync(second.Agent, "echo still here", Ct));
        }
        finally
        {
            await first.DisposeAsync();
            if (second is not null)
            {
                await second.DisposeAsync();
            }
        }
    }

    [Fact]
    public async Task Python_runs_fork_from_the_warm_interpreter_and_the_session_kernel_keeps_its_state()
    {
        fixture.SkipUnlessAvailable();
        Assert.SkipUnless(File.Exists("/usr/bin/python3"), "needs the host's python3 (the sandbox's root is the host's /)");
        // The fork server and the kernel accept jobs only from the agent: under gVisor that check must
        // not depend on SO_PEERCRED, which gVisor answers with the caller's own pid.
        IVm vm = await fixture.Runtime.StartAsync(fixture.Spec with { WarmupKey = "fork-" + Guid.NewGuid() }, Ct);
        try
        {
            ExecRequest Python(string code, bool persistent) => new()
            {
                Files = new() { ["main.py"] = code },
                Run = ["/usr/bin/python3", "-u", "main.py"],
                RunTimeoutMs = 60_000,
                KeepOutputs = persistent,
                ForkServer = new ForkServerRequest { Preload = ["json"], Script = "main.py", Persistent = persistent },
            };
            var output = new CollectingObserver();
            var forked = await vm.Agent.ExecAsync(Python("import json\nprint(json.dumps([1]))\n", persistent: false), output, Ct);
            Assert.True(forked.Run is { Reason: TerminationReason.Exited, ExitCode: 0, Forked: true }, $"{forked.Run?.Reason} forked={forked.Run?.Forked}: {output.Stderr} {((GvisorVm)vm).Diagnostics}");
            Assert.Equal("[1]\n", output.Stdout);

            await vm.Agent.ExecAsync(Python("x = 41\n", persistent: true), new CollectingObserver(), Ct);
            var second = await vm.Agent.ExecAsync(Python("x + 1\n", persistent: true), new CollectingObserver(), Ct);
            Assert.True(second.Run is { Forked: true, StateReset: false }, $"forked={second.Run?.Forked} reset={second.Run?.StateReset} {((GvisorVm)vm).Diagnostics}");
            Assert.Equal("42", second.Run!.ResultRepr);
        }
        finally
        {
            await vm.DisposeAsync();
        }
    }

    [Fact]
    public async Task A_damaged_checkpoint_makes_a_start_fall_back_to_a_cold_start()
    {
        fixture.SkipUnlessAvailable();
        var spec = fixture.Spec with { WarmupKey = "damaged-" + Guid.NewGuid() };
        SnapshotInfo snapshot = (await fixture.Runtime.PrepareSnapshotAsync(spec, null, Ct))!;
        string image = Path.Combine(snapshot.Directory, "image", "checkpoint.img");
        await File.WriteAllBytesAsync(image, new byte[4096], Ct);

        IVm vm = await fixture.Runtime.StartAsync(spec, Ct);
        try
        {
            Assert.Equal(VmSource.Boot, vm.Source);
            Assert.Equal("ok", await GvisorFixture.ShAsync(vm.Agent, "echo ok", Ct));
        }
        finally
        {
            await vm.DisposeAsync();
            Directory.Delete(snapshot.Directory, recursive: true);
        }
    }

    [Fact]
    public async Task Disposing_a_sandbox_ends_its_processes_and_removes_its_runsc_state_and_bundle()
    {
        fixture.SkipUnlessAvailable();
        var vm = (GvisorVm)await fixture.Runtime.StartAsync(fixture.Spec with { WarmupKey = "dispose-" + Guid.NewGuid() }, Ct);
        string bundle = Path.Combine(fixture.Runtime.InstanceDirectory, vm.Id);
        try
        {
            Assert.True(Directory.Exists(bundle));
            Assert.NotEmpty(ProcessesNaming(vm.Id));
        }
        finally
        {
            await vm.DisposeAsync();
        }
        Assert.True(vm.Exited.IsCompleted);
        await vm.CleanedUp.WaitAsync(TimeSpan.FromSeconds(60), Ct);
        Assert.False(Directory.Exists(bundle));
        // This runtime is the class's: other tests' sandboxes may still be listed while their deletes run.
        Assert.DoesNotContain(vm.Id, await ContainersAsync(fixture.Runtime.InstanceDirectory));
        // runsc run, the sandbox and the gofer all name the container on their command lines.
        await WaitUntilAsync(() => ProcessesNaming(vm.Id).Count == 0, TimeSpan.FromSeconds(10), () => $"left: {string.Join(", ", ProcessesNaming(vm.Id))}");
    }

    /// <summary>
    /// DELETE of an idle gVisor sandbox took 1.2-1.9 s: after the cgroup's SIGKILL, <c>runsc delete</c> polls
    /// until the killed sentry and gofer, orphans then, are reaped by the host's init, which on some hosts
    /// takes seconds. Ending a sandbox returns once its processes are dead; runsc's record of it goes after.
    /// A runsc whose delete takes 15 s stands in for the slow reaper.
    /// </summary>
    [Fact]
    public async Task Disposing_an_idle_sandbox_returns_once_it_is_dead_without_waiting_for_runsc_delete()
    {
        fixture.SkipUnlessAvailable();
        Assert.SkipUnless(OperatingSystem.IsLinux() && new Cgroups.CgroupManager().IsUsable, "needs writable cgroups (root): without them runsc delete is what kills the sandbox");
        const int deleteDelayS = 15;
        string runsc = Path.Combine(fixture.AgentDirectory, "runsc-slow-delete");
        await File.WriteAllTextAsync(runsc,
            $"#!/bin/sh\nfor a in \"$@\"; do [ \"$a\" = delete ] && sleep {deleteDelayS} && break; done\nexec /usr/bin/runsc \"$@\"\n", Ct);
        if (OperatingSystem.IsLinux())
        {
            File.SetUnixFileMode(runsc, UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute | UnixFileMode.GroupRead | UnixFileMode.GroupExecute | UnixFileMode.OtherRead | UnixFileMode.OtherExecute);
        }
        var runtime = fixture.NewRuntime(Path.Combine(fixture.RunDirectory, "slow-delete"), runsc);
        var vm = (GvisorVm)await runtime.StartAsync(fixture.Spec with { WarmupKey = "slow-delete-" + Guid.NewGuid() }, Ct);
        string bundle = Path.Combine(runtime.InstanceDirectory, vm.Id);
        var clock = System.Diagnostics.Stopwatch.StartNew();
        try
        {
            // Idle, as a sandbox between calls is.
            await vm.FreezeAsync(Ct);
            Assert.True(vm.IsFrozen);
            clock.Restart();
        }
        finally
        {
            await vm.DisposeAsync();
        }
        var disposed = clock.Elapsed;
        Log($"disposed in {disposed.TotalMilliseconds:0} ms");
        Assert.True(disposed < TimeSpan.FromSeconds(deleteDelayS / 2.0), $"disposing took {disposed.TotalSeconds:0.0} s: it waited for runsc delete");
        Assert.True(vm.Exited.IsCompleted);
        Assert.Empty(SandboxProcesses(vm.Id));
        Assert.False(vm.CleanedUp.IsCompleted, "runsc delete (delayed 15 s) cannot have finished yet");
        await vm.CleanedUp.WaitAsync(TimeSpan.FromSeconds(deleteDelayS + 60), Ct);
        Assert.False(Directory.Exists(bundle));
        Assert.Empty(await ContainersAsync(runtime.InstanceDirectory));
    }

    /// <summary>
    /// A one-shot exec (discard_after, end_user_processes) in a sandbox whose init is the agent: the agent
    /// answers once every other process is stopped; a process the run left behind runs no more code (its
    /// later write never happens) and is stopped, not gone, until the host ends the sandbox.
    /// </summary>
    [Fact]
    public async Task A_discarded_runs_leftover_processes_are_stopped_before_the_answer_and_run_no_more_code()
    {
        fixture.SkipUnlessAvailable();
        var vm = await fixture.Runtime.StartAsync(fixture.Spec with { WarmupKey = "stop-" + Guid.NewGuid() }, Ct);
        try
        {
            var output = new CollectingObserver();
            var result = await vm.Agent.ExecAsync(new ExecRequest
            {
                // setsid: out of the step's process group, which the step's own end kills; the step waits until
                // the leftover is in its own session (its first command runs there).
                Run = ["sh", "-c", "setsid sh -c 'touch /tmp/detached; sleep 1; echo late > /tmp/late' >/dev/null 2>&1 < /dev/null & "
                    + "while [ ! -e /tmp/detached ]; do sleep 0.05; done; echo started"],
                RunTimeoutMs = 60_000,
                EndUserProcesses = true,
                DiscardAfter = true,
            }, output, Ct);
            Assert.True(result.Run is { Reason: TerminationReason.Exited, ExitCode: 0 }, $"{result.Run?.Reason} {result.Run?.ExitCode}: {output.Stderr}");
            Assert.Equal("started", output.Stdout.Trim());
            Assert.Empty(result.Artifacts ?? []);

            // The sandbox is not discarded here, so it can be looked at: 3 s later the leftover shell has not
            // written its file, and it is still there, stopped (state T).
            string seen = await GvisorFixture.ShAsync(vm.Agent,
                "sleep 3; test -e /tmp/late && echo written || echo absent; ps -eo stat=,args= | awk '/echo late/ && !/awk/ { print substr($1, 1, 1) }'", Ct);
            Assert.Equal(["absent", "T"], seen.Split('\n', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries));
        }
        finally
        {
            await vm.DisposeAsync();
        }
    }

    /// <summary>runsc run, the sentry and the gofer of sandbox <paramref name="id"/> (not a runsc delete naming it).</summary>
    private static List<int> SandboxProcesses(string id) =>
        [.. ProcessesNaming(id).Where(pid =>
        {
            try
            {
                return !File.ReadAllText($"/proc/{pid}/cmdline").Split('\0').Contains("delete");
            }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException)
            {
                return false;
            }
        })];

    [Fact]
    public async Task A_dead_servers_sandboxes_are_ended_by_the_next_servers_sweep()
    {
        fixture.SkipUnlessAvailable();
        string runRoot = fixture.RunDirectory + "-sweep";
        GvisorRuntime dead = fixture.NewRuntime(runRoot);
        var vm = (GvisorVm)await dead.StartAsync(fixture.Spec with { WarmupKey = "sweep-" + Guid.NewGuid() }, Ct);
        try
        {
            // The owner file now names a process that has exited: the server "died".
            using (var gone = System.Diagnostics.Process.Start("/bin/true")!)
            {
                await gone.WaitForExitAsync(Ct);
                await File.WriteAllTextAsync(Path.Combine(dead.InstanceDirectory, GvisorRuntime.OwnerFileName), gone.Id.ToString(CultureInfo.InvariantCulture), Ct);
            }
            GvisorRuntime next = fixture.NewRuntime(runRoot);
            Assert.Equal(1, await next.CleanupLeftoversAsync(Ct));
            await vm.Exited.WaitAsync(TimeSpan.FromSeconds(20), Ct);
            await WaitUntilAsync(() => ProcessesNaming(vm.Id).Count == 0, TimeSpan.FromSeconds(10), () => $"left: {string.Join(", ", ProcessesNaming(vm.Id))}");
            Assert.False(Directory.Exists(dead.InstanceDirectory));
            // A live server's sandboxes are not touched: a second sweep finds nothing.
            Assert.Equal(0, await next.CleanupLeftoversAsync(Ct));
        }
        finally
        {
            await vm.DisposeAsync();
            if (Directory.Exists(runRoot))
            {
                Directory.Delete(runRoot, recursive: true);
            }
        }
    }

    private static void AssertClockClose(string guestSeconds)
    {
        long guest = long.Parse(guestSeconds, CultureInfo.InvariantCulture);
        long host = DateTimeOffset.UtcNow.ToUnixTimeSeconds();
        Assert.InRange(host - guest, -2, 5);
    }

    private static async Task<List<string>> ContainersAsync(string instanceDir)
    {
        var runsc = new Runsc("/usr/bin/runsc", Path.Combine(instanceDir, GvisorRuntime.StateDirName), HostFacts.GvisorPlatform, rootless: !Environment.IsPrivilegedProcess);
        var (code, output) = await runsc.RunAsync(runsc.ListArguments(), TimeSpan.FromSeconds(30), CancellationToken.None);
        Assert.True(code == 0, $"runsc list exited {code}: {output}");
        return [.. output.Split('\n', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries)];
    }

    private static List<int> ProcessesNaming(string id)
    {
        var pids = new List<int>();
        foreach (string dir in Directory.GetDirectories("/proc"))
        {
            if (!int.TryParse(Path.GetFileName(dir), out int pid))
            {
                continue;
            }
            try
            {
                string cmdline = File.ReadAllText(Path.Combine(dir, "cmdline"));
                string stat = File.ReadAllText(Path.Combine(dir, "stat"));
                if (cmdline.Contains(id, StringComparison.Ordinal) && !stat.Contains(") Z ", StringComparison.Ordinal))
                {
                    pids.Add(pid);
                }
            }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException)
            {
            }
        }
        return pids;
    }

    private static async Task WaitUntilAsync(Func<bool> condition, TimeSpan timeout, Func<string> describe)
    {
        var deadline = DateTime.UtcNow + timeout;
        while (!condition())
        {
            Assert.True(DateTime.UtcNow < deadline, describe());
            await Task.Delay(50, Ct);
        }
    }
}
