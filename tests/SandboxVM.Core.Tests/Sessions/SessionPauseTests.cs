using Microsoft.Extensions.Logging.Abstractions;
using Microsoft.Extensions.Time.Testing;
using SandboxVM.Core.Catalog;
using SandboxVM.Core.Pools;
using SandboxVM.Core.Runs;
using SandboxVM.Core.Sessions;
using SandboxVM.Core.Templates;
using SandboxVM.Core.Tests.Pools;
using SandboxVM.Images;
using SandboxVM.Runtime;
using SandboxVM.Runtime.Agent;
using SandboxVM.Testing;

namespace SandboxVM.Core.Tests.Sessions;

/// <summary>
/// Pause, resume and fork state transitions on fake VMs whose runtime "saves" them into the state
/// directory, with injected time: auto_resume, on_idle, paused_ttl, the lifetime stopped while paused,
/// a restart reading the records back, limits and failures.
/// </summary>
[Trait("tier", "unit")]
public sealed partial class SessionPauseTests : IAsyncLifetime
{
    private readonly SavingRuntime _runtime = new();
    private readonly VmTracker _tracker = new(NullLogger<VmTracker>.Instance);
    private readonly FakeTimeProvider _time = new(new DateTimeOffset(2026, 12, 5, 12, 0, 0, TimeSpan.Zero));
    private readonly SandboxVmOptions _options;
    private readonly string _root = Path.Combine(Path.GetTempPath(), "sandboxvm-pause-tests-" + Guid.NewGuid().ToString("N"));
    private TemplateCatalog _catalog = null!;
    private PoolManager _pools = null!;
    private RunService _runs = null!;
    private SessionManager _sessions = null!;

    public SessionPauseTests() => _options = new()
    {
        MaxSandboxes = 3, SandboxTimeoutS = 600, SandboxIdleTimeoutS = 120, SandboxReapIntervalS = 3600, PausedTtlS = 86400,
        StateDir = Path.Combine(_root, "state"),
    };

    private static CancellationToken Ct => TestContext.Current.CancellationToken;

    /// <summary>The fake runtime with saving: an image is a file naming the VM it was saved from.</summary>
    private sealed class SavingRuntime : IVmRuntime, ISandboxSaver
    {
        public FakeRuntime Inner { get; } = new();
        public bool FailSave { get; set; }
        public int Saves { get; private set; }
        public int Restores { get; private set; }
        public string Name => Inner.Name;
        public RuntimeCapabilities Capabilities => Inner.Capabilities;
        public string? Accel => null;
        public Task<IVm> StartAsync(VmSpec spec, CancellationToken cancellationToken) => Inner.StartAsync(spec, cancellationToken);
        public Task<int> CleanupLeftoversAsync(CancellationToken cancellationToken) => Task.FromResult(0);

        public async Task<SavedSandbox> SaveAsync(IVm vm, VmSpec spec, string directory, bool keepRunning, CancellationToken cancellationToken)
        {
            Saves++;
            await File.WriteAllTextAsync(Path.Combine(directory, "partial"), "half", cancellationToken);
            if (FailSave)
            {
                throw new IOException("No space left on device");
            }
            await File.WriteAllTextAsync(Path.Combine(directory, "saved-from"), vm.Id, cancellationToken);
            if (!keepRunning)
            {
                ((FakeVm)vm).Die();
            }
            return new SavedSandbox(directory, 12345, TimeSpan.FromMilliseconds(7));
        }

        public async Task<IVm> RestoreSavedAsync(VmSpec spec, string directory, CancellationToken cancellationToken)
        {
            Assert.True(File.Exists(Path.Combine(directory, "saved-from")), "restored from a directory without an image");
            Restores++;
            return await Inner.StartAsync(spec, cancellationToken);
        }
    }

    private sealed class Specs : IVmSpecProvider
    {
        public Task<VmSpec> GetSpecAsync(TemplateDefinition template, CancellationToken cancellationToken) =>
            Task.FromResult(new VmSpec { TemplateName = template.Name, RootfsDir = "/nonexistent" });
    }

    public ValueTask InitializeAsync()
    {
        var template = new TemplateDefinition
        {
            Name = "py",
            Source = new TemplateSource(),
            Language = new LanguageRecipe { Name = "python", SourceFile = "main.py", Run = ["python3", "main.py"] },
            Warmup = new WarmupPolicy { Strategy = WarmupStrategy.Cold },
        };
        _catalog = new TemplateCatalog(new TemplateRegistry([template]),
            new ImageBuilder(new ImageBuilderOptions { CacheRoot = Path.Combine(_root, "cache") }, NullLogger<ImageBuilder>.Instance),
            _options, NullLogger<TemplateCatalog>.Instance);
        _pools = new PoolManager(_runtime, new Specs(), _tracker, NullLogger<PoolManager>.Instance);
        _runs = new RunService(_catalog, _pools, _tracker, _options, NullLogger<RunService>.Instance);
        _sessions = NewManager();
        return ValueTask.CompletedTask;
    }

    private SessionManager NewManager() => new(_catalog, _pools, _tracker, _runs, _options, _time, NullLogger<SessionManager>.Instance);

    public async ValueTask DisposeAsync()
    {
        await _sessions.DisposeAsync();
        await _pools.DisposeAsync();
        await _tracker.DisposeAsync();
        if (Directory.Exists(_root))
        {
            Directory.Delete(_root, recursive: true);
        }
    }

    private Task<SandboxSession> CreateAsync(string? onIdle = null, bool? autoResume = null, double? timeout = null, double? idle = null, bool? keepRunning = null) =>
        _sessions.CreateAsync(new CreateSandboxRequest { Template = "py", OnIdle = onIdle, AutoResume = autoResume, TimeoutS = timeout, IdleTimeoutS = idle, KeepRunning = keepRunning }, Ct);

    private string PausedDir(string id) => Path.Combine(_options.StateDir, "paused", id);

    /// <summary>A file call through the manager (what the files API does): it needs a running VM.</summary>
    private Task<string> TouchAsync(string id) => _sessions.UseAsync(id, "/tmp/x", (agent, _) => Task.FromResult(agent.GetHashCode().ToString()));

    [Fact]
    public async Task Pause_SavesIntoTheStateDir_EndsTheVm_AndResumeStartsANewOne()
    {
        var s = await CreateAsync();
        var first = (FakeVm)s.Vm;

        await _sessions.PauseAsync(s.Id, Ct);

        Assert.Equal(SessionState.Paused, s.State);
        Assert.Null(s.CurrentVm);
        await Eventually.TrueAsync(() => first.Disposed, () => "the paused VM was not torn down");
        Assert.Equal(12345, s.PausedBytes);
        Assert.True(File.Exists(Path.Combine(PausedDir(s.Id), "sandbox.json")));
        // Other host users cannot reach a saved guest's memory.
        if (!OperatingSystem.IsWindows())
        {
            Assert.Equal(UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute,
                File.GetUnixFileMode(Path.Combine(_options.StateDir, "paused")));
        }
        Assert.Same(s, _sessions.Get(s.Id));
        Assert.Contains(s, _sessions.List());

        await _sessions.ResumeAsync(s.Id, Ct);

        Assert.Equal(SessionState.Running, s.State);
        Assert.NotSame(first, s.Vm);
        Assert.False(s.Vm.Exited.IsCompleted);
        Assert.False(Directory.Exists(PausedDir(s.Id)));
        Assert.NotNull(s.LastResumeMs);
    }

    [Fact]
    public async Task PauseOfAPausedOne_AndResumeOfARunningOne_Are409WithTheirCodes()
    {
        var s = await CreateAsync();

        var notPaused = await Assert.ThrowsAsync<RunRequestException>(() => _sessions.ResumeAsync(s.Id, Ct));
        await _sessions.PauseAsync(s.Id, Ct);
        var again = await Assert.ThrowsAsync<RunRequestException>(() => _sessions.PauseAsync(s.Id, Ct));

        Assert.Equal((ProblemCodes.SandboxNotPaused, RefusalKind.Conflict), (notPaused.Code, notPaused.Kind));
        Assert.Equal((ProblemCodes.SandboxPaused, RefusalKind.Conflict), (again.Code, again.Kind));
        Assert.Equal(1, _runtime.Saves);
    }

    [Fact]
    public async Task ACallOnAPausedSandbox_ResumesIt_UnlessAutoResumeIsOff()
    {
        var auto = await CreateAsync();
        var manual = await CreateAsync(autoResume: false);
        await _sessions.PauseAsync(auto.Id, Ct);
        await _sessions.PauseAsync(manual.Id, Ct);

        await TouchAsync(auto.Id);
        var refused = await Assert.ThrowsAsync<RunRequestException>(() => TouchAsync(manual.Id));

        Assert.Equal(SessionState.Running, auto.State);
        Assert.Equal(ProblemCodes.SandboxPaused, refused.Code);
        Assert.Equal(SessionState.Paused, manual.State);
    }

    [Fact]
    public async Task OnIdlePause_PausesInsteadOfEnding_AndKillStillEnds()
    {
        var pausing = await CreateAsync(onIdle: "pause", idle: 60);
        var killed = await CreateAsync(idle: 60);

        _time.Advance(TimeSpan.FromSeconds(61));
        await _sessions.ReapAsync();

        await Eventually.TrueAsync(() => pausing.State == SessionState.Paused, () => $"state {pausing.State}");
        Assert.Equal(SessionState.Ended, killed.State);
        Assert.Throws<RunRequestException>(() => _sessions.Get(killed.Id));
    }

    [Fact]
    public async Task APausedSandbox_IsRemovedAfterPausedTtl_WithItsImage()
    {
        var s = await CreateAsync();
        await _sessions.PauseAsync(s.Id, Ct);

        _time.Advance(TimeSpan.FromSeconds(_options.PausedTtlS - 1));
        await _sessions.ReapAsync();
        Assert.Equal(SessionState.Paused, s.State);
        _time.Advance(TimeSpan.FromSeconds(2));
        await _sessions.ReapAsync();

        Assert.Equal(SessionState.Ended, s.State);
        Assert.False(Directory.Exists(PausedDir(s.Id)));
        Assert.Throws<RunRequestException>(() => _sessions.Get(s.Id));
    }

    [Fact]
    public async Task TheLifetimeDoesNotRunWhilePaused()
    {
        var s = await CreateAsync(timeout: 600);
        _time.Advance(TimeSpan.FromSeconds(100));
        await _sessions.PauseAsync(s.Id, Ct);

        _time.Advance(TimeSpan.FromHours(5));
        await _sessions.ReapAsync();
        await _sessions.ResumeAsync(s.Id, Ct);

        Assert.Equal(_time.GetUtcNow().AddSeconds(500), s.ExpiresAt);
    }

    [Fact]
    public async Task ANewManagerOnTheSameStateDir_ListsThePausedSandbox_AndResumesIt()
    {
        var s = await CreateAsync(onIdle: "pause");
        await _sessions.PauseAsync(s.Id, Ct);
        await _sessions.DisposeAsync();
        Assert.True(Directory.Exists(PausedDir(s.Id)), "the server's stop removed the paused sandbox");

        _sessions = NewManager();
        var loaded = _sessions.Get(s.Id, s.Owner);

        Assert.Equal(SessionState.Paused, loaded.State);
        Assert.Equal(IdleAction.Pause, loaded.OnIdle);
        Assert.Equal(s.CreatedAt, loaded.CreatedAt);
        await _sessions.ResumeAsync(s.Id, Ct);
        Assert.Equal(SessionState.Running, loaded.State);
    }

    [Fact]
    public async Task ASandboxThatKeepsRunningWhenIdle_StillDoesOnceResumedByAnotherManager()
    {
        // keep_running (and every E2B sandbox) is not frozen between calls: a paused one resumed after a
        // restart, or on another node after a drain, must not start freezing its background work.
        var s = await CreateAsync(keepRunning: true);
        Assert.True(s.KeepRunning);
        await _sessions.PauseAsync(s.Id, Ct);
        await _sessions.DisposeAsync();

        _sessions = NewManager();
        var loaded = _sessions.Get(s.Id, s.Owner);
        Assert.True(loaded.KeepRunning, "the paused record lost keep_running");
        await _sessions.ResumeAsync(s.Id, Ct);
        Assert.True(loaded.KeepRunning);
    }

    [Fact]
    public async Task ASandboxsEnvironment_IsKeptThroughAPauseAndANewManager_AndGoesToItsForks()
    {
        // The E2B door's envVars: every command of the sandbox gets them, also after a restart or a drain.
        var s = await _sessions.CreateAsync(new CreateSandboxRequest { Template = "py", Env = new() { ["GREETING"] = "hi", ["EMPTY"] = "" } }, Ct);
        var forks = await _sessions.ForkAsync(s.Id, 1, SandboxOwner.Anonymous, Ct);
        Assert.Equal("hi", Assert.Single(forks).Env["GREETING"]);
        await _sessions.PauseAsync(s.Id, Ct);
        await _sessions.DisposeAsync();

        _sessions = NewManager();
        var loaded = _sessions.Get(s.Id, s.Owner);
        Assert.Equal(new Dictionary<string, string> { ["GREETING"] = "hi", ["EMPTY"] = "" }, loaded.Env);
        Assert.Empty((await CreateAsync()).Env);
    }

    [Fact]
    public async Task WithASharedStateDir_AHandedOffSandboxIsAdoptedByAnotherManagerOnlyWhenAsked_AndOnlyOnce()
    {
        _options.SharedStateDir = Path.Combine(_root, "shared");
        var s = await CreateAsync();
        await _sessions.HandOffAsync(s.Id, Ct);

        // Let go here, its image in the shared directory.
        Assert.Equal(ProblemCodes.SandboxNotFound, Assert.Throws<RunRequestException>(() => _sessions.Get(s.Id)).Code);
        Assert.True(File.Exists(Path.Combine(_options.SharedStateDir, "paused", s.Id, "sandbox.json")));
        Assert.True(_sessions.IsPausedInSharedState(s.Id));
        await using var other = NewManager();
        // A starting manager loads nothing from the shared directory: each sandbox is claimed when asked for.
        Assert.Empty(other.List());
        Assert.False(other.AdoptPaused("sbx_00000000000000000000"));
        Assert.False(other.AdoptPaused("../shared/paused/" + s.Id));
        Assert.True(other.AdoptPaused(s.Id));
        Assert.True(other.AdoptPaused(s.Id));
        var adopted = Assert.Single(other.List());
        Assert.Equal(SessionState.Paused, adopted.State);
        Assert.Equal(s.Owner, adopted.Owner);
        await other.ResumeAsync(s.Id, Ct);
        Assert.Equal(SessionState.Running, adopted.State);
        Assert.False(other.IsPausedInSharedState(s.Id), "a resumed sandbox's image stays in the shared directory");
    }

    [Fact]
    public async Task InTheSharedStateDir_ImagesNoNodeHolds_AreSweptOnceTheirPausedTtlIsOver_AndOnlyThose()
    {
        _options.SharedStateDir = Path.Combine(_root, "shared");
        var orphan = await CreateAsync();
        var adopted = await CreateAsync();
        await _sessions.HandOffAsync(orphan.Id, Ct);
        await _sessions.HandOffAsync(adopted.Id, Ct);
        string paused = Path.Combine(_options.SharedStateDir, "paused");
        // Another node's pause in progress, and one that never finished (its node died a day ago).
        string saving = Directory.CreateDirectory(Path.Combine(paused, "sbx_1111.tmp-aa")).FullName;
        string leftover = Directory.CreateDirectory(Path.Combine(paused, "sbx_2222.tmp-bb")).FullName;
        Directory.SetLastWriteTimeUtc(leftover, _time.GetUtcNow().UtcDateTime - TimeSpan.FromDays(2));
        await using var other = NewManager();
        Assert.True(other.AdoptPaused(adopted.Id));

        // Within paused_ttl nothing held elsewhere goes; only the dead pause does.
        _time.Advance(TimeSpan.FromSeconds(_options.PausedTtlS - 60));
        Directory.SetLastWriteTimeUtc(saving, _time.GetUtcNow().UtcDateTime);
        await other.ReapAsync();
        Assert.True(Directory.Exists(Path.Combine(paused, orphan.Id)));
        Assert.True(Directory.Exists(saving));
        Assert.False(Directory.Exists(leftover));

        // Past it (and a sweep period): the image no node holds is removed; the held one ended with its holder's TTL.
        _time.Advance(TimeSpan.FromSeconds(60) + SessionManager.SharedSweepInterval);
        Directory.SetLastWriteTimeUtc(saving, _time.GetUtcNow().UtcDateTime);  // still being written
        await other.ReapAsync();
        Assert.False(Directory.Exists(Path.Combine(paused, orphan.Id)), "an image no node holds outlived paused_ttl");
        Assert.False(Directory.Exists(Path.Combine(paused, adopted.Id)));
        Assert.Empty(other.List());
        Assert.True(Directory.Exists(saving), "a pause in progress was swept");
    }

    [Fact]
    public async Task AHandOffWithoutASharedStateDir_Is409AndTheSandboxKeepsRunning()
    {
        var s = await CreateAsync();
        var refused = await Assert.ThrowsAsync<RunRequestException>(() => _sessions.HandOffAsync(s.Id, Ct));
        Assert.Equal(ProblemCodes.SharedStateRequired, refused.Code);
        Assert.Equal(SessionState.Running, _sessions.Get(s.Id).State);
        Assert.False(_sessions.AdoptPaused("sbx_00000000000000000000"));
    }

    [Fact]
    public async Task AFailedPause_KeepsTheSandboxRunning_AndLeavesNothingHalfWritten()
    {
        var s = await CreateAsync();
        _runtime.FailSave = true;

        var e = await Assert.ThrowsAsync<RunRequestException>(() => _sessions.PauseAsync(s.Id, Ct));

        Assert.Equal((ProblemCodes.PauseFailed, RefusalKind.Unavailable), (e.Code, e.Kind));
        Assert.Contains("no space left in the server's state directory", e.Message);
        Assert.Equal(SessionState.Running, s.State);
        Assert.False(s.Vm.Exited.IsCompleted);
        var paused = Path.Combine(_options.StateDir, "paused");
        Assert.True(!Directory.Exists(paused) || Directory.GetFileSystemEntries(paused).Length == 0);
        await TouchAsync(s.Id);
    }

    [Fact]
    public async Task Fork_MakesIndependentSandboxesFromOneSave_AndTheSourceKeepsRunning()
    {
        var source = await CreateAsync();

        var forks = await _sessions.ForkAsync(source.Id, 2, SandboxOwner.Anonymous, Ct);

        Assert.Equal(2, forks.Count);
        Assert.Equal(1, _runtime.Saves);
        Assert.Equal(2, _runtime.Restores);
        Assert.Equal(SessionState.Running, source.State);
        Assert.False(source.Vm.Exited.IsCompleted);
        Assert.Equal(3, forks.Select(f => f.Vm.Id).Append(source.Vm.Id).Distinct().Count());
        Assert.All(forks, f => Assert.Same(f, _sessions.Get(f.Id)));
        Assert.False(Directory.Exists(Path.Combine(_options.StateDir, "forks")) && Directory.GetFileSystemEntries(Path.Combine(_options.StateDir, "forks")).Length > 0);
    }

    [Fact]
    public async Task AForkPastTheLimit_Is429BeforeAnySave_AndABadCountIs400()
    {
        var source = await CreateAsync();

        var tooMany = await Assert.ThrowsAsync<RunRequestException>(() => _sessions.ForkAsync(source.Id, 3, SandboxOwner.Anonymous, Ct));
        var ownerCap = await Assert.ThrowsAsync<RunRequestException>(() => _sessions.ForkAsync(source.Id, 1, new SandboxOwner("k", 0), Ct));
        var zero = await Assert.ThrowsAsync<RunRequestException>(() => _sessions.ForkAsync(source.Id, 0, SandboxOwner.Anonymous, Ct));
        var nine = await Assert.ThrowsAsync<RunRequestException>(() => _sessions.ForkAsync(source.Id, 9, SandboxOwner.Anonymous, Ct));

        Assert.Equal((ProblemCodes.TooManySandboxes, RefusalKind.Busy), (tooMany.Code, tooMany.Kind));
        Assert.Equal(ProblemCodes.TooManySandboxes, ownerCap.Code);
        Assert.Equal((ProblemCodes.InvalidCount, "count"), (zero.Code, zero.Field));
        Assert.Equal(ProblemCodes.InvalidCount, nine.Code);
        Assert.Equal(0, _runtime.Saves);
        // The refusals gave every place back: two more fit.
        Assert.Equal(2, (await _sessions.ForkAsync(source.Id, 2, SandboxOwner.Anonymous, Ct)).Count);
    }

    [Fact]
    public async Task ARuntimeThatCannotSave_RefusesPauseResumeForkAndOnIdlePause_409()
    {
        var runtime = new FakeRuntime();
        await using var pools = new PoolManager(runtime, new Specs(), _tracker, NullLogger<PoolManager>.Instance);
        await using var sessions = new SessionManager(_catalog, pools, _tracker, new RunService(_catalog, pools, _tracker, _options, NullLogger<RunService>.Instance),
            _options, _time, NullLogger<SessionManager>.Instance);
        var s = await sessions.CreateAsync(new CreateSandboxRequest { Template = "py" }, Ct);

        var codes = new List<string>
        {
            (await Assert.ThrowsAsync<RunRequestException>(() => sessions.PauseAsync(s.Id, Ct))).Code,
            (await Assert.ThrowsAsync<RunRequestException>(() => sessions.ResumeAsync(s.Id, Ct))).Code,
            (await Assert.ThrowsAsync<RunRequestException>(() => sessions.ForkAsync(s.Id, 1, SandboxOwner.Anonymous, Ct))).Code,
            (await Assert.ThrowsAsync<RunRequestException>(() => sessions.CreateAsync(new CreateSandboxRequest { Template = "py", OnIdle = "pause" }, Ct))).Code,
        };

        Assert.All(codes, c => Assert.Equal(ProblemCodes.PauseUnsupported, c));
        Assert.False(sessions.CanPause);
    }

    [Fact]
    public async Task OnIdle_OtherThanKillOrPause_Is400()
    {
        var e = await Assert.ThrowsAsync<RunRequestException>(() => CreateAsync(onIdle: "sleep"));
        Assert.Equal((ProblemCodes.InvalidOnIdle, "on_idle"), (e.Code, e.Field));
    }
}
