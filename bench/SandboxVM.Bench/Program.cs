// VM start-up benchmark: cold boot to agent-ready vs snapshot restore to agent-ready, per template, on the
// qemu runtime. Usage: dotnet run -c Release --project bench/SandboxVM.Bench -- [--accel tcg|kvm|auto] [--boots 5] [--restores 10]
// Writes a Markdown report to bench/results/.
using System.Diagnostics;
using Microsoft.Extensions.Configuration;
using Microsoft.Extensions.Logging;
using SandboxVM.Core.Catalog;
using SandboxVM.Core.Runs;
using SandboxVM.Core.Templates;
using SandboxVM.Images;
using SandboxVM.Images.Boot;
using SandboxVM.Runtime;
using SandboxVM.Runtime.Cgroups;
using SandboxVM.Runtime.Qemu;
using SandboxVM.Server;

string accel = Arg("--accel", "tcg");
int boots = int.Parse(Arg("--boots", "5"));
int restores = int.Parse(Arg("--restores", "10"));

using var loggers = LoggerFactory.Create(b => b.AddSimpleConsole(o => o.SingleLine = true).SetMinimumLevel(LogLevel.Warning));
var options = ServerApp.LoadOptions(new ConfigurationBuilder().AddEnvironmentVariables().Build());
var runtime = new QemuRuntime(new QemuRuntimeOptions { Accel = accel, SnapshotDirectory = options.SnapshotDir },
    new CgroupManager(), loggers.CreateLogger<QemuRuntime>());
var imageOptions = new ImageBuilderOptions { CacheRoot = options.CacheDir };
var catalog = new TemplateCatalog(TemplateRegistry.Load(options.TemplateDirectories),
    new ImageBuilder(imageOptions, loggers.CreateLogger<ImageBuilder>()), options, loggers.CreateLogger<TemplateCatalog>(),
    new BootArtifactsBuilder(imageOptions, loggers.CreateLogger<BootArtifactsBuilder>()));

var rows = new List<string>();
foreach (var t in catalog.All.Where(t => TemplateCatalog.UnavailableReason(t) is null))
{
    var spec = await catalog.GetSpecAsync(t, CancellationToken.None);
    await runtime.PrepareSnapshotAsync(spec, (agent, ct) => Warmup.RunAsync(t, agent, ct), CancellationToken.None);

    // A warm-up key no snapshot has: the runtime boots cold.
    var coldSpec = spec with { WarmupKey = "bench-cold-" + Guid.NewGuid().ToString("N") };
    var cold = await MeasureAsync(coldSpec, boots, VmSource.Boot);
    var warm = await MeasureAsync(spec, restores, VmSource.Restore);
    double ratio = Median(cold) / Median(warm);
    string row = $"| {t.Name} | {runtime.Accel} | {Median(cold):0} | {P95(cold):0} | {Median(warm):0} | {P95(warm):0} | {ratio:0.0}x |";
    Console.WriteLine(row);
    rows.Add(row);
}

string stamp = DateTime.UtcNow.ToString("yyyy-MM-ddTHHmm") + "Z";
string cpu = File.ReadLines("/proc/cpuinfo").FirstOrDefault(l => l.StartsWith("model name", StringComparison.Ordinal))?.Split(':', 2)[1].Trim() ?? "?";
string report = string.Join('\n',
[
    $"# VM start-up: cold boot vs snapshot restore, {stamp}",
    "",
    $"Machine: {Environment.ProcessorCount} cores, {cpu}, kernel {Environment.OSVersion.Version}. Accel: {runtime.Accel}.",
    $"Command: `dotnet run -c Release --project bench/SandboxVM.Bench -- --accel {accel} --boots {boots} --restores {restores}`.",
    "Both are measured from the start request to the agent's hello (plus reinit for restores), in ms.",
    "",
    "| template | accel | cold boot median | cold p95 | restore median | restore p95 | boot/restore |",
    "|---|---|---|---|---|---|---|",
    .. rows,
    "",
]);
string dir = Path.Combine(FindRepo(), "bench", "results");
Directory.CreateDirectory(dir);
string file = Path.Combine(dir, $"vm-startup-{stamp}.md");
File.WriteAllText(file, report);
Console.WriteLine("wrote " + file);
return 0;

async Task<List<double>> MeasureAsync(VmSpec spec, int count, VmSource expected)
{
    var times = new List<double>();
    for (int i = 0; i < count; i++)
    {
        var vm = await runtime.StartAsync(spec, CancellationToken.None);
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
    return times;
}

static double Median(List<double> v) => Percentile(v, 50);
static double P95(List<double> v) => Percentile(v, 95);
static double Percentile(List<double> v, double p)
{
    var s = v.Order().ToList();
    return s[(int)Math.Clamp(Math.Round(p / 100 * (s.Count - 1)), 0, s.Count - 1)];
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
