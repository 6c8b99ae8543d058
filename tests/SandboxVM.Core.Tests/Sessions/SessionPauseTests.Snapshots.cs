using Microsoft.Extensions.Logging.Abstractions;
using SandboxVM.Core.Pools;
using SandboxVM.Core.Runs;
using SandboxVM.Core.Sessions;
using SandboxVM.Core.Tests.Pools;
using SandboxVM.Testing;

namespace SandboxVM.Core.Tests.Sessions;

/// <summary>Named snapshots (save, list, delete, create from), their owners and limits; PATCH of a sandbox's lifetime.</summary>
public sealed partial class SessionPauseTests
{
    private static readonly SandboxOwner Alice = new("alice", null);
    private static readonly SandboxOwner Bob = new("bob", null);

    private Task<SandboxSession> CreateForAsync(SandboxOwner owner, string? fromSnapshot = null, string? template = "py") =>
        _sessions.CreateAsync(new CreateSandboxRequest { Template = template, FromSnapshot = fromSnapshot }, owner, Ct);

    private string SnapshotsDir => Path.Combine(_options.StateDir, "snapshots");

    [Fact]
    public async Task Snapshot_IsSavedOnce_AndSandboxesStartFromIt_AsOftenAsWanted_WhileTheSourceRuns()
    {
        var source = await CreateForAsync(Alice);
        _time.Advance(TimeSpan.FromSeconds(5));

        var saved = await _sessions.SnapshotAsync(source.Id, "base", Ct);
        await _sessions.DeleteAsync(source.Id);
        var one = await CreateForAsync(Alice, fromSnapshot: "base", template: null);
        var two = await CreateForAsync(Alice, fromSnapshot: "base", template: null);

        Assert.Equal(("base", "py", 12345L, source.Id, _time.GetUtcNow()), (saved.Name, saved.Template, saved.SizeBytes, saved.SourceSandbox, saved.CreatedAt));
        Assert.Equal(1, _runtime.Saves);
        Assert.Equal(2, _runtime.Restores);
        Assert.NotEqual(one.Vm.Id, two.Vm.Id);
        Assert.All([one, two], s => Assert.Equal((SessionState.Running, "py", "alice"), (s.State, s.Template.Name, s.Owner)));
        Assert.Equal([saved], _sessions.ListSnapshots("alice"));
    }

    [Fact]
    public async Task AnotherKey_DoesNotSeeUseOrDeleteTheSnapshot_AndMayUseTheSameName()
    {
        var source = await CreateForAsync(Alice);
        await _sessions.SnapshotAsync(source.Id, "base", Ct);

        var create = await Assert.ThrowsAsync<RunRequestException>(() => CreateForAsync(Bob, fromSnapshot: "base"));
        var delete = Assert.Throws<RunRequestException>(() => _sessions.DeleteSnapshot("bob", "base"));
        var bobs = await CreateForAsync(Bob);
        await _sessions.SnapshotAsync(bobs.Id, "base", Ct);

        Assert.Equal((ProblemCodes.SnapshotNotFound, RefusalKind.NotFound), (create.Code, create.Kind));
        Assert.Equal((ProblemCodes.SnapshotNotFound, RefusalKind.NotFound), (delete.Code, delete.Kind));
        Assert.Equal(source.Id, Assert.Single(_sessions.ListSnapshots("alice")).SourceSandbox);
        Assert.Equal(bobs.Id, Assert.Single(_sessions.ListSnapshots("bob")).SourceSandbox);
    }

    [Fact]
    public async Task Snapshots_SurviveARestart_AndDeleteRemovesThemForGood()
    {
        var source = await CreateForAsync(Alice);
        await _sessions.SnapshotAsync(source.Id, "keep", Ct);
        await _sessions.SnapshotAsync(source.Id, "drop", Ct);
        await _sessions.DisposeAsync();

        _sessions = NewManager();
        var listed = _sessions.ListSnapshots("alice").Select(s => s.Name).ToList();
        var restored = await CreateForAsync(Alice, fromSnapshot: "keep");
        _sessions.DeleteSnapshot("alice", "drop");
        var gone = await Assert.ThrowsAsync<RunRequestException>(() => CreateForAsync(Alice, fromSnapshot: "drop"));

        Assert.Equal(["drop", "keep"], listed);
        Assert.Equal(SessionState.Running, restored.State);
        Assert.Equal(ProblemCodes.SnapshotNotFound, gone.Code);
        Assert.Equal(["keep"], _sessions.ListSnapshots("alice").Select(s => s.Name));
        Assert.Single(Directory.GetDirectories(Directory.GetDirectories(SnapshotsDir).Single()));
    }

    [Fact]
    public async Task ASnapshotOfAPausedSandbox_CopiesItsImage_AndTheSandboxStaysPaused()
    {
        var source = await CreateForAsync(Alice);
        await _sessions.PauseAsync(source.Id, Ct);

        await _sessions.SnapshotAsync(source.Id, "from-paused", Ct);
        var started = await CreateForAsync(Alice, fromSnapshot: "from-paused");
        await _sessions.ResumeAsync(source.Id, Ct);

        Assert.Equal(SessionState.Running, started.State);
        Assert.Equal(SessionState.Running, source.State);
        Assert.Equal(1, _runtime.Saves);
        Assert.Equal(2, _runtime.Restores);
        Assert.Single(_sessions.ListSnapshots("alice"));
    }

    [Theory]
    [InlineData("")]
    [InlineData("../x")]
    [InlineData(".hidden")]
    [InlineData("a/b")]
    [InlineData(null)]
    public async Task ABadName_Is400_BeforeAnySave(string? name)
    {
        var source = await CreateForAsync(Alice);

        var e = await Assert.ThrowsAsync<RunRequestException>(() => _sessions.SnapshotAsync(source.Id, name, Ct));

        Assert.Equal((ProblemCodes.InvalidSnapshotName, "name", RefusalKind.Invalid), (e.Code, e.Field, e.Kind));
        Assert.Equal(0, _runtime.Saves);
    }

    [Fact]
    public async Task ATakenName_AndOneSnapshotPastTheCap_Are409_AndAFailedSaveLeavesNothing()
    {
        _options.MaxSnapshotsPerOwner = 2;
        var source = await CreateForAsync(Alice);
        await _sessions.SnapshotAsync(source.Id, "one", Ct);

        var taken = await Assert.ThrowsAsync<RunRequestException>(() => _sessions.SnapshotAsync(source.Id, "one", Ct));
        _runtime.FailSave = true;
        var failed = await Assert.ThrowsAsync<RunRequestException>(() => _sessions.SnapshotAsync(source.Id, "two", Ct));
        _runtime.FailSave = false;
        await _sessions.SnapshotAsync(source.Id, "two", Ct);
        var capped = await Assert.ThrowsAsync<RunRequestException>(() => _sessions.SnapshotAsync(source.Id, "three", Ct));

        Assert.Equal((ProblemCodes.SnapshotExists, RefusalKind.Conflict), (taken.Code, taken.Kind));
        Assert.Equal((ProblemCodes.SnapshotFailed, RefusalKind.Unavailable), (failed.Code, failed.Kind));
        Assert.Contains("no space left", failed.Message);
        Assert.Equal((ProblemCodes.TooManySnapshots, RefusalKind.Conflict), (capped.Code, capped.Kind));
        Assert.Equal(SessionState.Running, source.State);
        // Nothing half-written: only the two snapshots' directories.
        Assert.Equal(["one", "two"], Directory.GetDirectories(Directory.GetDirectories(SnapshotsDir).Single()).Select(Path.GetFileName).Order());
    }

    [Fact]
    public async Task CreateFromASnapshot_WithAnotherTemplateNamed_Is400()
    {
        var source = await CreateForAsync(Alice);
        await _sessions.SnapshotAsync(source.Id, "base", Ct);

        var e = await Assert.ThrowsAsync<RunRequestException>(() => CreateForAsync(Alice, fromSnapshot: "base", template: "other"));

        Assert.Equal((ProblemCodes.TemplateMismatch, "template"), (e.Code, e.Field));
    }

    [Fact]
    public async Task ARuntimeThatCannotSave_RefusesSnapshotsAndCreatesFromThem_409()
    {
        var runtime = new FakeRuntime();
        await using var pools = new PoolManager(runtime, new Specs(), _tracker, NullLogger<PoolManager>.Instance);
        await using var sessions = new SessionManager(_catalog, pools, _tracker, new RunService(_catalog, pools, _tracker, _options, NullLogger<RunService>.Instance),
            _options, _time, NullLogger<SessionManager>.Instance);
        var s = await sessions.CreateAsync(new CreateSandboxRequest { Template = "py" }, Ct);

        var save = await Assert.ThrowsAsync<RunRequestException>(() => sessions.SnapshotAsync(s.Id, "x", Ct));
        var create = await Assert.ThrowsAsync<RunRequestException>(() => sessions.CreateAsync(new CreateSandboxRequest { FromSnapshot = "x" }, Ct));

        Assert.Equal((ProblemCodes.PauseUnsupported, RefusalKind.Conflict), (save.Code, save.Kind));
        Assert.Equal(ProblemCodes.PauseUnsupported, create.Code);
    }

    [Fact]
    public async Task SetTimeout_GivesANewLifetimeFromNow_AndTheDefaultOfLaterKeepalives()
    {
        var s = await CreateForAsync(Alice);
        _time.Advance(TimeSpan.FromSeconds(100));

        _sessions.SetTimeout(s.Id, 30);
        var afterPatch = s.ExpiresAt;
        _time.Advance(TimeSpan.FromSeconds(10));
        _sessions.KeepAlive(s.Id, null);

        Assert.Equal(_time.GetUtcNow().AddSeconds(20), afterPatch);
        Assert.Equal(_time.GetUtcNow().AddSeconds(30), s.ExpiresAt);
        Assert.Equal(30, s.TimeoutS);
    }

    [Fact]
    public async Task SetTimeout_WithoutAValue_OutOfRange_OrOnAPausedSandbox_IsRefused()
    {
        var s = await CreateForAsync(Alice);

        var missing = Assert.Throws<RunRequestException>(() => _sessions.SetTimeout(s.Id, null));
        var negative = Assert.Throws<RunRequestException>(() => _sessions.SetTimeout(s.Id, -1));
        var tooLong = Assert.Throws<RunRequestException>(() => _sessions.SetTimeout(s.Id, _options.MaxSandboxTimeoutS + 1));
        await _sessions.PauseAsync(s.Id, Ct);
        var paused = Assert.Throws<RunRequestException>(() => _sessions.SetTimeout(s.Id, 60));

        Assert.Equal((ProblemCodes.MissingField, "timeout_s"), (missing.Code, missing.Field));
        Assert.Equal((ProblemCodes.TimeoutOutOfRange, "timeout_s"), (negative.Code, negative.Field));
        Assert.Equal(ProblemCodes.TimeoutOutOfRange, tooLong.Code);
        Assert.Equal((ProblemCodes.SandboxPaused, RefusalKind.Conflict), (paused.Code, paused.Kind));
    }
}
