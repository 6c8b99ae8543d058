using Microsoft.Extensions.Logging.Abstractions;
using SandboxVM.Core.Catalog;
using SandboxVM.Core.Pools;
using SandboxVM.Core.Runs;
using SandboxVM.Core.Sessions;
using SandboxVM.Core.Templates;
using SandboxVM.Images;
using SandboxVM.Runtime;
using SandboxVM.Testing;

namespace SandboxVM.Core.Tests.Runs;

/// <summary>
/// RunService, SessionManager, PoolManager and VmTracker wired as the server wires them, over
/// <see cref="FakeAgentRuntime"/>: a test scripts each guest's agent and watches what the host does.
/// </summary>
internal sealed class HostileHost : IAsyncDisposable
{
    public const string Template = "py";
    public const long OutputLimit = 64 * 1024;

    private readonly string _cache = Path.Combine(Path.GetTempPath(), "sandboxvm-hostile-" + Guid.NewGuid().ToString("N"));

    /// <param name="configure">Changes to the options before anything is built.</param>
    /// <param name="time">The host's clock (run deadlines, sessions, pools); null: the system clock.</param>
    public HostileHost(Action<SandboxVmOptions>? configure = null, TimeProvider? time = null)
    {
        time ??= TimeProvider.System;
        Options = new SandboxVmOptions
        {
            MaxConcurrentRuns = 4,
            MaxSandboxes = 4,
            HostTimeoutMarginS = 1,
            ArtifactTimeoutS = 2,
            SandboxReapIntervalS = 3600,
        };
        configure?.Invoke(Options);
        var template = new TemplateDefinition
        {
            Name = Template,
            Source = new TemplateSource(),
            Language = new LanguageRecipe { Name = "python", SourceFile = "main.py", Run = ["python3", "main.py"] },
            Warmup = new WarmupPolicy { Strategy = WarmupStrategy.Cold },
            Limits = new TemplateLimits { RunTimeoutS = 5, MaxTimeoutS = 60, OutputBytes = OutputLimit },
        };
        var catalog = new TemplateCatalog(new TemplateRegistry([template]),
            new ImageBuilder(new ImageBuilderOptions { CacheRoot = _cache }, NullLogger<ImageBuilder>.Instance),
            Options, NullLogger<TemplateCatalog>.Instance);
        Tracker = new VmTracker(NullLogger<VmTracker>.Instance);
        Pools = new PoolManager(Runtime, new Specs(), Tracker, NullLogger<PoolManager>.Instance, time);
        Runs = new RunService(catalog, Pools, Tracker, Options, NullLogger<RunService>.Instance, time: time);
        Sessions = new SessionManager(catalog, Pools, Tracker, Runs, Options, time, NullLogger<SessionManager>.Instance);
    }

    public FakeAgentRuntime Runtime { get; } = new();
    public SandboxVmOptions Options { get; }
    public VmTracker Tracker { get; }
    public PoolManager Pools { get; }
    public RunService Runs { get; }
    public SessionManager Sessions { get; }

    /// <summary>The VM the <paramref name="n"/>-th start made (1-based).</summary>
    public FakeAgentVm Vm(int n) => Runtime.Vms[n - 1];

    public FakeAgentVm VmOf(SandboxSession s) => Runtime.Vms.Single(v => v.Id == s.Vm.Id);

    /// <summary>Plays the guest of the <paramref name="n"/>-th VM started with <paramref name="setup"/>; every other one is honest.</summary>
    public void Hostile(int n, Action<FakeAgent> setup) => Runtime.Configure = (i, agent) =>
    {
        if (i == n)
        {
            setup(agent);
        }
    };

    public Task<RunResult> RunAsync(string code = "print('hi')", double? timeoutS = null, CancellationToken cancellationToken = default) =>
        Runs.RunAsync(new RunRequest { Template = Template, Code = code, TimeoutS = timeoutS }, cancellationToken);

    public Task<SandboxSession> CreateSessionAsync(CancellationToken cancellationToken = default) =>
        Sessions.CreateAsync(new CreateSandboxRequest { Template = Template }, cancellationToken);

    /// <summary>A run in an honest sandbox answers: the host still serves others.</summary>
    public async Task AssertOtherSandboxAnswersAsync(SandboxSession other)
    {
        var result = await Sessions.RunAsync(other.Id, new RunRequest { Code = "print('still here')" }, null, CancellationToken.None)
            .WaitAsync(TimeSpan.FromSeconds(30));
        Assert.True(result.Status == RunStatus.Ok, $"the other sandbox answered {result.Status}: {result.Error}");
        Assert.Equal("hello\n", result.Stdout);
    }

    private sealed class Specs : IVmSpecProvider
    {
        public Task<VmSpec> GetSpecAsync(TemplateDefinition template, CancellationToken cancellationToken) =>
            Task.FromResult(new VmSpec { TemplateName = template.Name, RootfsDir = "/nonexistent" });
    }

    public async ValueTask DisposeAsync()
    {
        await Sessions.DisposeAsync();
        await Pools.DisposeAsync();
        await Tracker.DisposeAsync();
        await Runtime.DisposeAllAsync();
        if (Directory.Exists(_cache))
        {
            Directory.Delete(_cache, recursive: true);
        }
    }
}
