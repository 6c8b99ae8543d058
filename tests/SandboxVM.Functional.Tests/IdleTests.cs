using System.Globalization;
using System.Net;
using System.Net.Http.Json;
using System.Text.Json;
using Microsoft.Extensions.DependencyInjection;
using SandboxVM.Core.Sessions;

namespace SandboxVM.Functional.Tests;

/// <summary>
/// Idle sandboxes cost nothing: between calls a sandbox's VM is frozen (and thawed by the next call) unless
/// it was created with <c>keep_running</c>. The same scenarios on every runtime: QMP stop on qemu, runsc
/// pause on gvisor, the cgroup freezer on process.
/// </summary>
public abstract class IdleScenarios(ServerFixture server)
{
    private static CancellationToken Ct => TestContext.Current.CancellationToken;

    // The server freezes a sandbox idle for SandboxFreezeAfterS (2 s) on its reaper's 1 s tick; a loaded
    // host (and a runsc pause) takes longer.
    private static readonly TimeSpan FreezeWithin = TimeSpan.FromSeconds(60);

    private sealed class Sandbox(ServerFixture server, string id) : IAsyncDisposable
    {
        public string Id { get; } = id;

        public async Task<RunResultDto> RunAsync(string code)
        {
            using var response = await server.Http.PostAsJsonAsync($"/v1/sandboxes/{Id}/run", new { code }, ServerFixture.Json, Ct);
            string text = await response.Content.ReadAsStringAsync(Ct);
            Assert.True(response.IsSuccessStatusCode, $"run answered {(int)response.StatusCode}: {text}");
            var result = JsonSerializer.Deserialize<RunResultDto>(text, ServerFixture.Json)!;
            Assert.True(result.Status == "ok", result.ToString());
            return result;
        }

        public async Task<JsonElement> InfoAsync()
        {
            string text = await server.Http.GetStringAsync($"/v1/sandboxes/{Id}", Ct);
            return JsonDocument.Parse(text).RootElement.Clone();
        }

        public async Task<bool> FrozenAsync() => (await InfoAsync()).GetProperty("frozen").GetBoolean();

        /// <summary>The host-side id of its VM (its cgroup is named after it).</summary>
        public string VmId => server.Services.GetRequiredService<SessionManager>().Get(Id).Vm.Id;

        public async ValueTask DisposeAsync()
        {
            using var _ = await server.Http.DeleteAsync($"/v1/sandboxes/{Id}", CancellationToken.None);
        }
    }

    private async Task<Sandbox> CreateAsync(bool keepRunning = false)
    {
        using var response = await server.Http.PostAsJsonAsync("/v1/sandboxes",
            new { template = "python-data-analysis", keep_running = keepRunning }, ServerFixture.Json, Ct);
        string text = await response.Content.ReadAsStringAsync(Ct);
        Assert.True(response.StatusCode == HttpStatusCode.Created, $"create answered {(int)response.StatusCode}: {text}");
        using var doc = JsonDocument.Parse(text);
        Assert.Equal(keepRunning, doc.RootElement.GetProperty("keep_running").GetBoolean());
        return new Sandbox(server, doc.RootElement.GetProperty("id").GetString()!);
    }

    private static async Task WaitFrozenAsync(Sandbox sb)
    {
        var deadline = DateTime.UtcNow + FreezeWithin;
        while (!await sb.FrozenAsync())
        {
            Assert.True(DateTime.UtcNow < deadline, $"sandbox {sb.Id} was not frozen within {FreezeWithin.TotalSeconds} s of idle");
            await Task.Delay(200, Ct); // polling the server's answer; the order comes from the deadline
        }
    }

    /// <summary>CPU seconds (user + system) used so far by every host process in the cgroup named after <paramref name="vmId"/>.</summary>
    private static double HostCpuSeconds(string vmId) => HostCpuByProcess(vmId).Values.Sum();

    /// <summary>
    /// CPU seconds (user + system) used so far by each host process (by PID) in the cgroup named after
    /// <paramref name="vmId"/>. A sum over a sandbox can go down between two readings when a process
    /// ended and its parent did not wait for it; compare the processes alive at both instead.
    /// </summary>
    private static Dictionary<int, double> HostCpuByProcess(string vmId)
    {
        var cpu = new Dictionary<int, double>();
        foreach (string dir in Directory.EnumerateDirectories("/proc"))
        {
            if (!int.TryParse(Path.GetFileName(dir), out int pid))
            {
                continue;
            }
            try
            {
                if (!File.ReadAllText(Path.Combine(dir, "cgroup")).Contains("/sandboxvm/" + vmId, StringComparison.Ordinal))
                {
                    continue;
                }
                // Fields after the command's closing parenthesis: state is field 3, utime 14, stime 15.
                string stat = File.ReadAllText(Path.Combine(dir, "stat"));
                var fields = stat[(stat.LastIndexOf(')') + 2)..].Split(' ');
                cpu[pid] = (long.Parse(fields[11], CultureInfo.InvariantCulture) + long.Parse(fields[12], CultureInfo.InvariantCulture)) / 100.0; // USER_HZ
            }
            catch (IOException)
            {
                // The process ended meanwhile.
            }
        }
        return cpu;
    }

    [Fact]
    public async Task SandboxFrozenBetweenRuns_KeepsItsState_AndAnswers()
    {
        await using var sb = await CreateAsync();
        await sb.RunAsync("x = 41\nwith open('/tmp/kept.txt', 'w') as f: f.write('kept')\n");

        await WaitFrozenAsync(sb);
        var after = await sb.RunAsync("print(x + 1, open('/tmp/kept.txt').read())\n");

        Assert.Equal("42 kept\n", after.Stdout);
        Assert.False(after.StateReset);
        Assert.False(await sb.FrozenAsync(), "a sandbox that just ran should be running");
    }

    [Fact]
    public async Task FrozenSandbox_UsesNoCpu_ThoughItsCodeSpins()
    {
        await using var sb = await CreateAsync();
        // A process that would take a whole core forever, left running by the run.
        await sb.RunAsync("import subprocess\nspin = subprocess.Popen(['python3', '-c', 'while True: pass'])\n");
        await WaitFrozenAsync(sb);

        double before = HostCpuSeconds(sb.VmId);
        var window = TimeSpan.FromSeconds(3);
        await Task.Delay(window, Ct); // the measurement window itself: CPU used over 3 s of wall time
        double used = HostCpuSeconds(sb.VmId) - before;

        Assert.True(await sb.FrozenAsync());
        Assert.True(used < 0.05 * window.TotalSeconds, $"the frozen sandbox used {used:0.00} s of CPU in {window.TotalSeconds} s");
        // Thawed, the spinner is still there.
        var alive = await sb.RunAsync("print(spin.poll() is None)\nspin.kill()\n");
        Assert.Equal("True\n", alive.Stdout);
    }

    [Fact]
    public async Task KeepRunningSandbox_IsNotFrozen_AndItsBackgroundProcessKeepsWriting()
    {
        await using var sb = await CreateAsync(keepRunning: true);
        // Each tick also spins a few milliseconds in the shell itself: CPU that shows in its own utime
        // (a bare echo-and-sleep loop used under one 10 ms tick a second, too little to see under load).
        await sb.RunAsync("import subprocess\nticker = subprocess.Popen(['sh', '-c', " +
            "'while :; do echo x >> /tmp/ticks; i=0; while [ $i -lt 3000 ]; do i=$((i+1)); done; sleep 0.1; done'])\n");
        var before = HostCpuByProcess(sb.VmId);

        // Idle for longer than a sandbox needs to be frozen; no call touches it meanwhile (GET info does not).
        var idle = TimeSpan.FromSeconds(8);
        await Task.Delay(idle, Ct);
        Assert.False(await sb.FrozenAsync(), "a keep_running sandbox was frozen");
        var after = HostCpuByProcess(sb.VmId);
        double used = after.Where(p => before.ContainsKey(p.Key)).Sum(p => p.Value - before[p.Key]);
        var ticks = await sb.RunAsync("print(sum(1 for _ in open('/tmp/ticks')))\nticker.kill()\n");

        // Ten a second when running; even a loaded emulated guest writes far more than 10 in 8 s.
        Assert.True(int.Parse(ticks.Stdout.Trim(), CultureInfo.InvariantCulture) > 10, $"only {ticks.Stdout.Trim()} ticks in {idle.TotalSeconds} s");
        Assert.True(used > 0, $"the running sandbox's processes used no CPU in {idle.TotalSeconds} s (vm {sb.VmId}, {before.Count} processes)");
    }
}

[Collection(ProcessServer.Collection)]
[Trait("tier", "vm")]
public sealed class ProcessIdleTests(ProcessServer server) : IdleScenarios(server);

[Collection(QemuServer.Collection)]
[Trait("tier", "vm")]
public sealed class QemuIdleTests(QemuServer server) : IdleScenarios(server);

[Collection(GvisorServer.Collection)]
[Trait("tier", "vm")]
public sealed class GvisorIdleTests(GvisorServer server) : IdleScenarios(server.OrSkip());
