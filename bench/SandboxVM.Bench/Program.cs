// Sandbox start-up benchmark: cold start to agent-ready, snapshot (checkpoint) save, and restore to
// agent-ready, per template, on the qemu or gvisor runtime.
// Usage: dotnet run -c Release --project bench/SandboxVM.Bench -- [--runtime qemu|gvisor] [--accel tcg|kvm|auto]
//        [--qemu /path/to/qemu-system-x86_64] [--boots 5] [--restores 10] [--saves 3] [--templates a,b]
//        [--snapshot-dir DIR] [--attempt-timeout-s 120]
// Writes a Markdown report to bench/results/. A start that fails or hangs is counted, not fatal: the report
// says how many of each kind did not reach the agent.
using System.Diagnostics;
using Microsoft.Extensions.Configuration;
using Microsoft.Extensions.Logging;
using SandboxVM.Core.Catalog;
using SandboxVM.Core.Pools;
using SandboxVM.Core.Runs;
using SandboxVM.Core.Templates;
using SandboxVM.Images;
using SandboxVM.Images.Boot;
using SandboxVM.Runtime;
using SandboxVM.Runtime.Cgroups;
using SandboxVM.Runtime.Gvisor;
using SandboxVM.Runtime.Qemu;
using SandboxVM.Server;
using SandboxVM.Bench;

string accel = Arg("--accel", "tcg");
string mode = args.Length > 0 && !args[0].StartsWith("--", StringComparison.Ordinal) ? args[0] : "startup";
int boots = int.Parse(Arg("--boots", "5"));
int restores = int.Parse(Arg("--restores", "10"));
int saves = int.Parse(Arg("--saves", "3"));
string runtimeName = Arg("--runtime", "qemu");
string qemuPath = Arg("--qemu", new QemuRuntimeOptions().QemuPath);
var onlyTemplates = Arg("--templates", "").Split(',', StringSplitOptions.RemoveEmptyEntries).ToHashSet(StringComparer.Ordinal);
var attemptTimeout = TimeSpan.FromSeconds(int.Parse(Arg("--attempt-timeout-s", "120")));

using var loggers = LoggerFactory.Create(b => b.AddSimpleConsole(o => o.SingleLine = true).SetMinimumLevel(LogLevel.Warning));
var options = ServerApp.LoadOptions(new ConfigurationBuilder().AddEnvironmentVariables().Build());
// Its own directories: a server's leftover sweep must not meet the bench's VMs, nor the bench a server's.
string snapshotDir = Arg("--snapshot-dir", "/dev/shm/sandboxvm-bench");
string runDir = Arg("--run-dir", "/run/sandboxvm/bench-" + Environment.ProcessId);
var runtime = NewRuntime(_ => { });
var imageOptions = new ImageBuilderOptions { CacheRoot = options.CacheDir };
var catalog = new TemplateCatalog(TemplateRegistry.Load(options.TemplateDirectories),
    new ImageBuilder(imageOptions, loggers.CreateLogger<ImageBuilder>()), options, loggers.CreateLogger<TemplateCatalog>(),
    // gvisor runs the unpacked rootfs: no kernel, initramfs or ext4 disk to build.
    runtimeName == "gvisor" ? null : new BootArtifactsBuilder(imageOptions, loggers.CreateLogger<BootArtifactsBuilder>()));

if (mode == "probe")
{
    var t = catalog.Find(Arg("--template", "python-data-analysis"))!;
    var spec = await catalog.GetSpecAsync(t, CancellationToken.None);
    Console.WriteLine($"kernel {spec.KernelPath} initrd {spec.InitrdPath} rootfs {spec.RootfsImage} args {spec.KernelArgs} mem {spec.MemoryMib}");
    return 0;
}

if (mode == "clock")
{
    // A/B: the runtime's kernel command line as is, and with --extra-args added (each its own snapshot).
    var t = catalog.Find(Arg("--template", "python-data-analysis"))!;
    var spec = await catalog.GetSpecAsync(t, CancellationToken.None);
    int clones = int.Parse(Arg("--clones", "5"));
    double sleep = double.Parse(Arg("--sleep", "2"), System.Globalization.CultureInfo.InvariantCulture);
    int load = int.Parse(Arg("--load", "0"));
    string baseArgs = Arg("--base-args", "");
    var variants = new List<(string Name, QemuRuntime Runtime)>
    {
        (baseArgs.Length == 0 ? "as is" : "+ " + baseArgs, baseArgs.Length == 0 ? runtime : NewRuntime(o => { o.KernelArgs += " " + baseArgs; o.SnapshotDirectory += "-a"; })),
    };
    if (Arg("--extra-args", "") is { Length: > 0 } extra)
    {
        variants.Add(("+ " + extra, NewRuntime(o => { o.KernelArgs += " " + extra; o.SnapshotDirectory += "-b"; })));
    }
    using var stopLoad = new CancellationTokenSource();
    var burners = Enumerable.Range(0, load).Select(_ => Task.Run(() => { while (!stopLoad.IsCancellationRequested) { } })).ToList();
    try
    {
        foreach (var (_, r) in variants)
        {
            await r.PrepareSnapshotAsync(spec, (agent, ct) => Warmup.RunAsync(t, agent, prime: false, ct), CancellationToken.None);
        }
        var samples = variants.ToDictionary(v => v.Name, _ => new List<ClockBench.Sample>());
        for (int i = 0; i < clones; i++)
        {
            foreach (var (name, r) in variants)
            {
                await using var vm = await r.StartAsync(spec, CancellationToken.None);
                var s = await ClockBench.MeasureAsync(vm.Agent, sleep, CancellationToken.None);
                samples[name].Add(s);
                Console.WriteLine($"{name}: {vm.Source} clocksource {s.Clocksource}: host {s.HostS:0.000} s, guest {s.GuestS:0.000} s, guest/host {s.Ratio:0.000}");
            }
        }
        foreach (var (name, list) in samples)
        {
            var ratios = list.Select(s => s.Ratio).ToList();
            Console.WriteLine($"| {name} | {string.Join(",", list.Select(s => s.Clocksource).Distinct())} | {Median(ratios):0.000} | {ratios.Min():0.000} | {ratios.Max():0.000} | {load} |");
        }
    }
    finally
    {
        await stopLoad.CancelAsync();
        await Task.WhenAll(burners);
        await CleanupAsync();
    }
    return 0;
}

if (mode is "run" or "phases")
{
    // Pooled runs through the PoolManager (and, for "run", the RunService) the server uses. A/B in one
    // process, interleaved run by run: "before" neither primes restored clones nor trusts a recent
    // check (every take does the reinit round trip), "check-on-take" primes but checks on every take,
    // "after" is the PoolManager's default (primes under TCG, re-checks waiting VMs in the background,
    // a take trusts a check younger than 10 s).
    var t = catalog.Find(Arg("--template", "python-data-analysis"))!;
    int runs = int.Parse(Arg("--runs", "10"));
    bool settle = Arg("--settle", "1") == "1";
    int idleMs = int.Parse(Arg("--idle-ms", "300"));
    string code = Arg("--code", "print(1)\n");
    var tracker = new VmTracker(loggers.CreateLogger<VmTracker>());
    var variants = new List<(string Name, PoolManager Pools, RunService Service)>();
    foreach (string v in Arg("--variants", "before,after").Split(','))
    {
        var pm = v switch
        {
            "before" => new PoolManager(runtime, catalog, tracker, loggers.CreateLogger<PoolManager>())
            {
                Warmup = Warmup.RunAsync,
                PrimeRestoredVms = false,
                HealthCheckFreshness = TimeSpan.Zero,
                IdleRecheckInterval = TimeSpan.Zero,
            },
            "check-on-take" => new PoolManager(runtime, catalog, tracker, loggers.CreateLogger<PoolManager>())
            {
                Warmup = Warmup.RunAsync,
                HealthCheckFreshness = TimeSpan.Zero,
                IdleRecheckInterval = TimeSpan.Zero,
            },
            "after" => new PoolManager(runtime, catalog, tracker, loggers.CreateLogger<PoolManager>()) { Warmup = Warmup.RunAsync },
            _ => throw new ArgumentException("variants: before, check-on-take, after"),
        };
        variants.Add((v, pm, new RunService(catalog, pm, tracker, options, loggers.CreateLogger<RunService>())));
    }
    var phases = variants.ToDictionary(v => v.Name, _ => new List<RunBench.Phases>());
    var results = variants.ToDictionary(v => v.Name, _ => new List<(double Wall, SandboxVM.Core.Runs.RunMetrics M)>());
    try
    {
        foreach (var v in variants)
        {
            v.Pools.Start([t]);
        }
        for (int i = -1; i < runs; i++)
        {
            foreach (var (name, pools, service) in variants)
            {
                if (settle || i < 0)
                {
                    // Requests that find full, idle pools (nothing restoring or priming in the background).
                    foreach (var other in variants)
                    {
                        while (other.Pools.Status(t.Name) is not { } st || st.Ready < st.Target || st.Starting > 0)
                        {
                            await Task.Delay(50);
                        }
                    }
                    await Task.Delay(idleMs);
                }
                if (mode == "phases")
                {
                    var p = await RunBench.MeasureAsync(pools, t, code, CancellationToken.None);
                    if (i >= 0)
                    {
                        phases[name].Add(p);
                    }
                    Console.WriteLine($"{name}: {p}");
                }
                else
                {
                    var sw = Stopwatch.StartNew();
                    var r = await service.RunAsync(new SandboxVM.Core.Runs.RunRequest { Template = t.Name, Code = code }, CancellationToken.None);
                    if (r.Status != SandboxVM.Core.Runs.RunStatus.Ok)
                    {
                        throw new InvalidOperationException($"run failed: {r.Status} {r.Error} {r.Stderr}");
                    }
                    if (i >= 0)
                    {
                        results[name].Add((sw.Elapsed.TotalMilliseconds, r.Metrics));
                    }
                    Console.WriteLine($"{name}: wall {sw.Elapsed.TotalMilliseconds:0.0} startup {r.Metrics.StartupMs:0.0} run {r.Metrics.RunMs:0.0} host {r.Metrics.HostMs:0.0} ({r.Metrics.VmSource})");
                }
            }
        }
        Console.WriteLine($"median / p95 ms over {runs} runs each, settle={settle}");
        if (mode == "phases")
        {
            Console.WriteLine("| variant | acquire | to run_started | to first output | exec total | guest run_ms | cgroup reads | 2nd exec total | 2nd guest run_ms |");
            Console.WriteLine("|---|---|---|---|---|---|---|---|---|");
            foreach (var (name, list) in phases)
            {
                string Col(Func<RunBench.Phases, double> f) => $"{Median(list.Select(f).ToList()):0.0} / {P95(list.Select(f).ToList()):0.0}";
                Console.WriteLine($"| {name} | {Col(p => p.Acquire)} | {Col(p => p.ToRunStarted)} | {Col(p => p.ToFirstOutput)} | {Col(p => p.ExecTotal)} | {Col(p => p.GuestRunMs)} | {Col(p => p.Usage)} | {Col(p => p.SecondExec)} | {Col(p => p.SecondGuestRunMs)} |");
            }
        }
        else
        {
            Console.WriteLine("| variant | wall | startup_ms | run_ms | host_ms |");
            Console.WriteLine("|---|---|---|---|---|");
            foreach (var (name, list) in results)
            {
                string Col(Func<(double Wall, SandboxVM.Core.Runs.RunMetrics M), double> f) => $"{Median(list.Select(f).ToList()):0.0} / {P95(list.Select(f).ToList()):0.0}";
                Console.WriteLine($"| {name} | {Col(r => r.Wall)} | {Col(r => r.M.StartupMs)} | {Col(r => r.M.RunMs)} | {Col(r => r.M.HostMs)} |");
            }
            if (results.Count == 2)
            {
                var (a, b) = (results.Values.First(), results.Values.Last());
                Console.WriteLine($"wall median ratio {variants[1].Name}/{variants[0].Name}: {Median(b.Select(r => r.Wall).ToList()) / Median(a.Select(r => r.Wall).ToList()):0.00}");
            }
        }
    }
    finally
    {
        foreach (var v in variants)
        {
            await v.Pools.DisposeAsync();
        }
        await tracker.DisposeAsync();
        await CleanupAsync();
    }
    return 0;
}

// The start-up report: qemu (the clock and run modes above are qemu only) or gvisor.
IVmRuntime startupRuntime = runtimeName switch
{
    "qemu" => runtime,
    "gvisor" => new GvisorRuntime(new GvisorRuntimeOptions { SnapshotDirectory = snapshotDir, RunDirectory = runDir }, new CgroupManager(),
        loggers.CreateLogger<GvisorRuntime>()),
    _ => throw new ArgumentException("--runtime: qemu or gvisor"),
};
string versionLine = runtimeName == "qemu" ? QemuVersion.Read(qemuPath).Text : "";
var rows = new List<string>();
try
{
    foreach (var t in catalog.All.Where(t => TemplateCatalog.UnavailableReason(t) is null && (onlyTemplates.Count == 0 || onlyTemplates.Contains(t.Name))))
    {
        var spec = await catalog.GetSpecAsync(t, CancellationToken.None);
        var build = Stopwatch.StartNew();
        var snapshot = await startupRuntime.PrepareSnapshotAsync(spec, (agent, ct) => Warmup.RunAsync(t, agent, prime: false, ct), CancellationToken.None);
        string built = snapshot is null ? "none" : snapshot.Built ? $"{build.Elapsed.TotalSeconds:0.0} s" : "reused";

        // A warm-up key no snapshot has: the runtime boots cold.
        var coldSpec = spec with { WarmupKey = "bench-cold-" + Guid.NewGuid().ToString("N") };
        var (cold, coldFailed) = await MeasureAsync(coldSpec, boots, VmSource.Boot);
        var (warm, warmFailed) = await MeasureAsync(spec, restores, snapshot is null ? VmSource.Boot : VmSource.Restore);
        // Saves: each a snapshot of its own (fresh warm-up key), removed after it is measured.
        var saveTotal = new List<double>();
        var saveOnly = new List<double>();
        long bytes = 0;
        for (int i = 0; i < (snapshot is null ? 0 : saves); i++)
        {
            var saveSpec = spec with { WarmupKey = spec.WarmupKey + "-bench-save-" + Guid.NewGuid().ToString("N") };
            var info = (await startupRuntime.PrepareSnapshotAsync(saveSpec, (agent, ct) => Warmup.RunAsync(t, agent, prime: false, ct), CancellationToken.None))!;
            saveTotal.Add(info.Elapsed.TotalMilliseconds);
            var meta = System.Text.Json.Nodes.JsonNode.Parse(File.ReadAllText(Path.Combine(info.Directory, "meta.json")))!;
            if (meta["checkpoint_ms"] is { } ms)
            {
                saveOnly.Add(ms.GetValue<long>());
            }
            bytes = meta["image_bytes"]?.GetValue<long>() ?? meta["state_bytes"]?.GetValue<long>() ?? 0;
            Directory.Delete(info.Directory, recursive: true);
        }
        double ratio = Median(cold) / Median(warm);
        string save = saveOnly.Count > 0 ? $"{Median(saveOnly):0} / {P95(saveOnly):0}" : "n/a";
        string row = $"| {t.Name} | {startupRuntime.Name} | {startupRuntime.Accel} | {built} | {Median(cold):0} | {P95(cold):0} | {coldFailed}/{boots} | {Median(warm):0} | {P95(warm):0} | {warmFailed}/{restores} | {ratio:0.0}x | "
            + $"{(saveTotal.Count > 0 ? $"{Median(saveTotal):0} / {P95(saveTotal):0}" : "n/a")} | {save} | {bytes / 1e6:0.0} |";
        Console.WriteLine(row);
        rows.Add(row);
    }
}
finally
{
    if (startupRuntime is GvisorRuntime gvisor)
    {
        await gvisor.DisposeAsync();
    }
    await CleanupAsync();
}

string stamp = DateTime.UtcNow.ToString("yyyy-MM-ddTHHmm") + "Z";
string cpu = File.ReadLines("/proc/cpuinfo").FirstOrDefault(l => l.StartsWith("model name", StringComparison.Ordinal))?.Split(':', 2)[1].Trim() ?? "?";
long memKb = long.Parse(File.ReadLines("/proc/meminfo").First(l => l.StartsWith("MemTotal:", StringComparison.Ordinal)).Split(' ', StringSplitOptions.RemoveEmptyEntries)[1]);
string report = string.Join('\n',
[
    $"# Sandbox start-up: cold start vs snapshot restore, {startupRuntime.Name}, {stamp}",
    "",
    $"Machine: {Environment.ProcessorCount} cores, {cpu}, {memKb >> 20} GiB, kernel {Environment.OSVersion.Version}, load average {File.ReadAllText("/proc/loadavg").Split(' ')[0]} at the end. Runtime: {startupRuntime.Name} ({startupRuntime.Accel}). {versionLine}",
    $"Command: `dotnet run -c Release --project bench/SandboxVM.Bench -- {string.Join(' ', args)}`.",
    "Cold start and restore are measured from the start request to the agent's hello (plus reinit), in ms, median / p95; failed = did not",
    $"reach the agent (error or {attemptTimeout.TotalSeconds:0} s). Snapshot: time to build it (boot, warm-up, save), reused, or none (the runtime has no snapshots).",
    "Snapshot prepare = cold start + the template's warm-up + save; save = `runsc checkpoint` alone (gvisor); size = checkpoint image (gvisor) or device state (qemu; its RAM file is the guest's size).",
    "",
    "| template | runtime | accel | snapshot | cold median | cold p95 | cold failed | restore median | restore p95 | restore failed | cold/restore | snapshot prepare ms | save ms | size MB |",
    "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    .. rows,
    "",
]);
string dir = Path.Combine(FindRepo(), "bench", "results");
Directory.CreateDirectory(dir);
string file = Path.Combine(dir, $"startup-{startupRuntime.Name}-{stamp}.md");
File.WriteAllText(file, report);
Console.WriteLine("wrote " + file);
await CleanupAsync();
return 0;

async Task<(List<double> Times, int Failed)> MeasureAsync(VmSpec spec, int count, VmSource expected)
{
    var times = new List<double>();
    int failed = 0;
    for (int i = 0; i < count; i++)
    {
        IVm vm;
        using (var attempt = new CancellationTokenSource(attemptTimeout))
        {
            try
            {
                vm = await startupRuntime.StartAsync(spec, attempt.Token);
            }
            catch (Exception e) when (e is SandboxVM.Runtime.Process.SandboxStartException or OperationCanceledException)
            {
                // A hang or a failure is what a reliability check is for: count it, say it, go on.
                failed++;
                Console.WriteLine($"{spec.TemplateName} {expected} {i + 1}/{count} failed: {e.Message}");
                continue;
            }
        }
        try
        {
            if (vm.Source != expected)
            {
                throw new InvalidOperationException($"expected a {expected}, got {vm.Source}");
            }
            times.Add(vm.StartupTime.TotalMilliseconds);
        }
        finally
        {
            await vm.DisposeAsync();
        }
    }
    return (times, failed);
}

static double Median(List<double> v) => v.Count == 0 ? double.NaN : Percentile(v, 50);
static double P95(List<double> v) => v.Count == 0 ? double.NaN : Percentile(v, 95);
static double Percentile(List<double> v, double p)
{
    var s = v.Order().ToList();
    return s[(int)Math.Clamp(Math.Round(p / 100 * (s.Count - 1)), 0, s.Count - 1)];
}

QemuRuntime NewRuntime(Action<QemuRuntimeOptions> configure)
{
    var o = new QemuRuntimeOptions { Accel = accel, QemuPath = qemuPath, SnapshotDirectory = snapshotDir, RunDirectory = runDir };
    configure(o);
    return new QemuRuntime(o, new CgroupManager(), loggers.CreateLogger<QemuRuntime>());
}

// Every QEMU this bench started ends with it, also after a failure: a fresh instance sees them all as leftovers.
async Task CleanupAsync()
{
    await NewRuntime(_ => { }).CleanupLeftoversAsync(CancellationToken.None);
    if (Directory.Exists(runDir))
    {
        Directory.Delete(runDir, recursive: true);
    }
}

string Arg(string name, string fallback)
{
    int i = Array.IndexOf(args, name);
    return i >= 0 && i + 1 < args.Length ? args[i + 1] : fallback;
}

static string FindRepo()
{
    for (var d = new DirectoryInfo(AppContext.BaseDirectory); d is not null; d = d.Parent)
    {
        if (File.Exists(Path.Combine(d.FullName, "SandboxVM.slnx")))
        {
            return d.FullName;
        }
    }
    return Directory.GetCurrentDirectory();
}
