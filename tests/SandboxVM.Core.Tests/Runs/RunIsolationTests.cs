using Microsoft.Extensions.Logging.Abstractions;
using SandboxVM.Core.Catalog;
using SandboxVM.Core.Pools;
using SandboxVM.Core.Runs;
using SandboxVM.Core.Singletons;
using SandboxVM.Core.Templates;
using SandboxVM.Core.Tests.Pools;
using SandboxVM.Images;
using SandboxVM.Protocol;
using SandboxVM.Runtime;

namespace SandboxVM.Core.Tests.Runs;

/// <summary>
/// What the host asks of the agent so that nothing a run starts outlives it: one-shot runs end every
/// process of their user before the artifacts are listed; runs in the shared singleton VM also get a
/// uid and a fresh private directory of their own, removed afterwards; sessions keep their processes.
/// </summary>
[Trait("tier", "unit")]
public sealed class RunIsolationTests : IAsyncLifetime
{
    private readonly FakeRuntime _runtime = new();
    private readonly VmTracker _tracker = new(NullLogger<VmTracker>.Instance);
    private readonly SandboxVmOptions _options = new() { SingletonConcurrency = 2, SingletonQueue = 4 };
    private readonly string _cache = Path.Combine(Path.GetTempPath(), "sandboxvm-run-isolation-tests-" + Guid.NewGuid().ToString("N"));
    private PoolManager _pools = null!;
    private SingletonManager _singletons = null!;
    private RunService _runs = null!;

    private static CancellationToken Ct => TestContext.Current.CancellationToken;

    private static TemplateDefinition Template(string name, WarmupStrategy strategy) => new()
    {
        Name = name,
        Source = new TemplateSource(),
        Language = new LanguageRecipe { Name = "python", SourceFile = "main.py", Run = ["python3", "main.py"] },
        Warmup = new WarmupPolicy { Strategy = strategy },
    };

    private sealed class Specs : IVmSpecProvider
    {
        public Task<VmSpec> GetSpecAsync(TemplateDefinition template, CancellationToken cancellationToken) =>
            Task.FromResult(new VmSpec { TemplateName = template.Name, RootfsDir = "/nonexistent" });
    }

    public ValueTask InitializeAsync()
    {
        TemplateDefinition[] templates = [Template("py", WarmupStrategy.Cold), Template("web", WarmupStrategy.Singleton)];
        var catalog = new TemplateCatalog(new TemplateRegistry(templates),
            new ImageBuilder(new ImageBuilderOptions { CacheRoot = _cache }, NullLogger<ImageBuilder>.Instance),
            _options, NullLogger<TemplateCatalog>.Instance);
        _pools = new PoolManager(_runtime, new Specs(), _tracker, NullLogger<PoolManager>.Instance);
        _singletons = new SingletonManager(_pools, _tracker, _options, NullLogger<SingletonManager>.Instance);
        _singletons.Start(templates, startNow: false);
        _runs = new RunService(catalog, _pools, _tracker, _options, NullLogger<RunService>.Instance, _singletons);
        return ValueTask.CompletedTask;
    }

    public async ValueTask DisposeAsync()
    {
        await _singletons.DisposeAsync();
        await _pools.DisposeAsync();
        await _tracker.DisposeAsync();
        if (Directory.Exists(_cache))
        {
            Directory.Delete(_cache, recursive: true);
        }
    }

    private List<AgentRequest> Received() => [.. _runtime.Vms.SelectMany(vm => vm.Received)];

    [Fact]
    public async Task OneShotRun_EndsEveryProcessOfItsUser_AsTheSandboxUser()
    {
        await _runs.RunAsync(new RunRequest { Template = "py", Code = "print(1)" }, Ct);

        var exec = Assert.Single(Received(), r => r.Op == Ops.Exec).Exec!;
        Assert.True(exec.EndUserProcesses);
        Assert.Null(exec.User);
    }

    [Fact]
    public async Task SingletonRun_HasAUidAndAFreshPrivateDirectory_EndsItsProcesses_AndTheDirectoryIsRemoved()
    {
        await _runs.RunAsync(new RunRequest { Template = "web", Code = "print(1)", Env = new() { ["HOME"] = "/home/sandbox" } }, Ct);
        await _runs.RunAsync(new RunRequest { Template = "web", Code = "print(2)" }, Ct);

        var requests = Received();
        var execs = requests.Where(r => r.Op == Ops.Exec).Select(r => r.Exec!).ToList();
        Assert.Equal(2, execs.Count);
        Assert.All(execs, exec =>
        {
            // Slot 0 or 1 (concurrency 2): a uid of the run users' range, never the sandbox user's.
            Assert.InRange(exec.User!.Value, ProtocolInfo.RunUserFirst, ProtocolInfo.RunUserFirst + 1);
            Assert.True(exec.EndUserProcesses);
            Assert.StartsWith(RunService.SingletonRunsDir + "/", exec.Cwd);
            Assert.Equal(exec.Cwd + "/outputs", exec.OutputsDir);
            Assert.Equal(exec.Cwd, exec.Env["HOME"]);
            Assert.Equal(exec.Cwd, exec.Env["TMPDIR"]);
        });
        Assert.NotEqual(execs[0].Cwd, execs[1].Cwd);
        var removals = requests.Where(r => r.Op == Ops.FileRemove).Select(r => r.File!).ToList();
        Assert.Equal(execs.Select(e => e.Cwd), removals.Select(f => f.Path));
        Assert.All(removals, f => Assert.True(f.Recursive));
    }

    [Fact]
    public void SessionRun_KeepsItsProcesses()
    {
        var exec = _runs.ValidateFor(_runs.FindTemplate("py"), new RunRequest { Template = "py", Code = "x = 1" });

        Assert.False(exec.EndUserProcesses);
        Assert.Null(exec.User);
    }
}
