using System.Collections.Concurrent;
using System.Security.Cryptography;
using System.Text;
using Microsoft.Extensions.Logging;
using SandboxVM.Core.Catalog;
using SandboxVM.Core.Pools;
using SandboxVM.Core.Runs;
using SandboxVM.Core.Templates;
using SandboxVM.Protocol;
using SandboxVM.Runtime;
using SandboxVM.Runtime.Agent;

namespace SandboxVM.Core.Sessions;

/// <summary>What a caller asks for when it creates a sandbox (POST /v1/sandboxes).</summary>
public sealed class CreateSandboxRequest
{
    public string? Template { get; set; }
    /// <summary>Lifetime in seconds; the server's default when absent.</summary>
    public double? TimeoutS { get; set; }
    /// <summary>The sandbox ends after this many seconds without a call.</summary>
    public double? IdleTimeoutS { get; set; }
    public Dictionary<string, string>? Metadata { get; set; }
    /// <summary>Keep the sandbox running between calls (background work goes on); by default it is frozen while idle.</summary>
    public bool? KeepRunning { get; set; }
    /// <summary>What an idle sandbox does: <c>kill</c> (default) or <c>pause</c>.</summary>
    public string? OnIdle { get; set; }
    /// <summary>A call on a paused sandbox resumes it first (default true); false: 409 <c>sandbox_paused</c>.</summary>
    public bool? AutoResume { get; set; }
    /// <summary>Start from the caller's named snapshot (its template) instead of a fresh VM.</summary>
    public string? FromSnapshot { get; set; }
    /// <summary>
    /// Environment variables of the sandbox, kept with it through pauses, restarts and moves (the E2B door's
    /// envVars, which its commands get); not on the native wire.
    /// </summary>
    public Dictionary<string, string>? Env { get; set; }
}

/// <summary>Who creates a sandbox: its owner's name and how many live sandboxes the owner may have (null: no own limit).</summary>
public sealed record SandboxOwner(string Name, int? MaxSandboxes)
{
    /// <summary>The one caller of a server without API keys.</summary>
    public static SandboxOwner Anonymous { get; } = new("anonymous", null);
}

/// <summary>
/// Owns every live sandbox (session): creates them from the pools, runs code in them one run at a
/// time, proxies their file and artifact calls, and ends them when asked, when their lifetime or idle
/// time is over, or when their VM dies. Ended sandboxes are forgotten: their ids answer 404.
/// </summary>
public sealed partial class SessionManager : IAsyncDisposable
{
    private const string OutputsDir = RunService.OutputsDir;
    private const int MaxMetadataEntries = 32;
    private const int MaxMetadataChars = 1024;

    private readonly ConcurrentDictionary<string, SandboxSession> _sessions = new(StringComparer.Ordinal);
    private readonly TemplateCatalog _catalog;
    private readonly PoolManager _pools;
    private readonly VmTracker _tracker;
    private readonly RunService _runs;
    private readonly SandboxVmOptions _options;
    private readonly TimeProvider _time;
    private readonly ILogger<SessionManager> _logger;
    private readonly ITimer _reaper;
    private readonly Dictionary<string, int> _reservedByOwner = new(StringComparer.Ordinal);
    // Freezes run two at a time: on gvisor each is a runsc process, and a hundred at once would load the host.
    private readonly SemaphoreSlim _freezing = new(2, 2);
    private int _reserved;
    private int _disposed;

    public SessionManager(TemplateCatalog catalog, PoolManager pools, VmTracker tracker, RunService runs,
        SandboxVmOptions options, TimeProvider time, ILogger<SessionManager> logger)
    {
        _catalog = catalog;
        _pools = pools;
        _tracker = tracker;
        _runs = runs;
        _options = options;
        _time = time;
        _logger = logger;
        LoadPaused();
        var period = TimeSpan.FromSeconds(options.SandboxReapIntervalS);
        _reaper = time.CreateTimer(_ => _ = ReapAsync(), null, period, period);
    }

    public IReadOnlyList<SandboxSession> List() =>
        [.. _sessions.Values.Where(s => s.State != SessionState.Ended).OrderBy(s => s.CreatedAt)];

    /// <summary>The live sandbox <paramref name="id"/>; a 404 problem when there is none.</summary>
    public SandboxSession Get(string id) =>
        _sessions.TryGetValue(id, out var s) && s.State != SessionState.Ended
            ? s
            : throw new RunRequestException(ProblemCodes.SandboxNotFound, null, $"no live sandbox '{id}'", RefusalKind.NotFound);

    /// <summary>
    /// The live sandbox <paramref name="id"/> if it belongs to <paramref name="owner"/>; for any other owner the
    /// same 404 problem as an unknown id, so a caller cannot tell another's sandbox from none.
    /// </summary>
    public SandboxSession Get(string id, string owner) =>
        _sessions.TryGetValue(id, out var s) && s.State != SessionState.Ended && s.Owner == owner
            ? s
            : throw new RunRequestException(ProblemCodes.SandboxNotFound, null, $"no live sandbox '{id}'", RefusalKind.NotFound);

    /// <summary>The live sandbox running on VM <paramref name="vmId"/>, if one does.</summary>
    public SandboxSession? FindByVm(string vmId) =>
        _sessions.Values.FirstOrDefault(s => s.CurrentVm?.Id == vmId && s.State == SessionState.Running);

    public Task<SandboxSession> CreateAsync(CreateSandboxRequest request, CancellationToken cancellationToken) =>
        CreateAsync(request, SandboxOwner.Anonymous, cancellationToken);

    /// <summary>Creates a sandbox for <paramref name="owner"/>; a 429 past the server's or the owner's live sandboxes.</summary>
    public async Task<SandboxSession> CreateAsync(CreateSandboxRequest request, SandboxOwner owner, CancellationToken cancellationToken)
    {
        SnapshotRecord? snapshot = request.FromSnapshot is null ? null : FindSnapshot(owner.Name, request.FromSnapshot);
        if (string.IsNullOrEmpty(request.Template) && snapshot is null)
        {
            throw new RunRequestException(ProblemCodes.MissingField, "template", "field 'template' is required");
        }
        if (snapshot is not null && !string.IsNullOrEmpty(request.Template) && request.Template != snapshot.Template)
        {
            throw new RunRequestException(ProblemCodes.TemplateMismatch, "template",
                $"snapshot '{snapshot.Name}' is of template '{snapshot.Template}', not '{request.Template}'");
        }
        TemplateDefinition template = _runs.FindTemplate(snapshot?.Template ?? request.Template!);
        double timeout = RunService.CheckTimeout(request.TimeoutS, "timeout_s", _options.SandboxTimeoutS, _options.MaxSandboxTimeoutS);
        double idle = RunService.CheckTimeout(request.IdleTimeoutS, "idle_timeout_s", Math.Min(_options.SandboxIdleTimeoutS, timeout), _options.MaxSandboxTimeoutS);
        var metadata = CheckMetadata(request.Metadata);
        IdleAction onIdle = request.OnIdle switch
        {
            null or "kill" => IdleAction.Kill,
            "pause" => IdleAction.Pause,
            _ => throw new RunRequestException(ProblemCodes.InvalidOnIdle, "on_idle", $"on_idle is 'kill' or 'pause', not '{request.OnIdle}'"),
        };
        if (onIdle == IdleAction.Pause && !CanPause)
        {
            throw PauseUnsupported();
        }

        Reserve(owner, 1);
        LeasedVm lease;
        try
        {
            lease = snapshot is null
                ? await _pools.AcquireAsync(template, cancellationToken)
                : await RestoreSnapshotAsync(snapshot, template);
        }
        catch (Exception e) when (e is not OperationCanceledException and not RunRequestException)
        {
            Interlocked.Decrement(ref _reserved);
            ReleaseFor(owner.Name);
            LogStartFailed(_logger, template.Name, e);
            throw new RunRequestException(ProblemCodes.SandboxStartFailed, null, "the sandbox could not be started: " + CallerErrors.Describe(e), RefusalKind.Unavailable);
        }
        catch
        {
            Interlocked.Decrement(ref _reserved);
            ReleaseFor(owner.Name);
            throw;
        }
        string id = "sbx_" + Convert.ToHexStringLower(RandomNumberGenerator.GetBytes(10));
        var session = new SandboxSession(id, owner.Name, template, lease, _time.GetUtcNow(), timeout, idle, metadata, request.KeepRunning ?? false)
        {
            OnIdle = onIdle,
            AutoResume = request.AutoResume ?? true,
            Env = request.Env is { } env ? new Dictionary<string, string>(env, StringComparer.Ordinal) : SandboxSession.NoEnv,
        };
        if (snapshot is not null)
        {
            // What the snapshot's interpreter and build cache hold comes with it.
            session.SavedSpec = snapshot.Spec;
            session.BuiltHash = snapshot.BuiltHash;
            session.Runs = snapshot.Runs;
        }
        else if (CanPause)
        {
            // The files this VM runs on: a pause restores it on exactly these, even if the template is rebuilt meanwhile.
            session.SavedSpec = await _pools.GetSpecAsync(template, CancellationToken.None);
        }
        _sessions[id] = session;
        Watch(session, lease.Vm);
        LogCreated(_logger, id, template.Name, lease.Vm.Id, owner.Name);
        return session;
    }

    /// <summary>
    /// Counts <paramref name="count"/> sandboxes against the server's and the owner's limits before any
    /// work; a 429 when either would be passed (nothing reserved then).
    /// </summary>
    private void Reserve(SandboxOwner owner, int count)
    {
        if (Interlocked.Add(ref _reserved, count) > _options.MaxSandboxes)
        {
            Interlocked.Add(ref _reserved, -count);
            throw new RunRequestException(ProblemCodes.TooManySandboxes, null,
                $"{_options.MaxSandboxes} sandboxes are live or paused, the most this server keeps; end one or try again later", RefusalKind.Busy,
                TimeSpan.FromSeconds(5));
        }
        if (!ReserveFor(owner, count))
        {
            Interlocked.Add(ref _reserved, -count);
            throw new RunRequestException(ProblemCodes.TooManySandboxes, null,
                $"this API key may have {owner.MaxSandboxes} live sandboxes and {count} more would pass it; end one or try again later",
                RefusalKind.Busy, TimeSpan.FromSeconds(5));
        }
    }

    /// <summary>Counts sandboxes against their owner's limit; false when the owner would pass it.</summary>
    private bool ReserveFor(SandboxOwner owner, int count)
    {
        lock (_reservedByOwner)
        {
            int live = _reservedByOwner.GetValueOrDefault(owner.Name);
            if (live + count > (owner.MaxSandboxes ?? int.MaxValue))
            {
                return false;
            }
            _reservedByOwner[owner.Name] = live + count;
            return true;
        }
    }

    /// <summary>A VM that dies on its own (crash, host kill) ends its sandbox, unless the sandbox has moved off it (pause).</summary>
    private void Watch(SandboxSession session, IVm vm) =>
        _ = vm.Exited.ContinueWith(_ => session.CurrentVm == vm && session.State == SessionState.Running
                ? EndAsync(session, "its VM stopped")
                : Task.FromResult(false), CancellationToken.None,
            TaskContinuationOptions.ExecuteSynchronously, TaskScheduler.Default).Unwrap();

    private void ReleaseFor(string owner)
    {
        lock (_reservedByOwner)
        {
            int live = _reservedByOwner.GetValueOrDefault(owner) - 1;
            if (live > 0)
            {
                _reservedByOwner[owner] = live;
            }
            else
            {
                _reservedByOwner.Remove(owner);
            }
        }
    }

    /// <summary>Moves the end of the sandbox's lifetime to now + <paramref name="timeoutS"/> (default: its lifetime).</summary>
    public SandboxSession KeepAlive(string id, double? timeoutS)
    {
        var session = Get(id);
        double seconds = RunService.CheckTimeout(timeoutS, "timeout_s", session.TimeoutS, _options.MaxSandboxTimeoutS);
        var now = _time.GetUtcNow();
        session.ExtendTo(now.AddSeconds(seconds), now);
        return session;
    }

    /// <summary>
    /// Gives a running sandbox a new lifetime: <paramref name="timeoutS"/> from now, and the default of later
    /// keepalives (PATCH). A paused one is refused: its lifetime is on disk with its image.
    /// </summary>
    public SandboxSession SetTimeout(string id, double? timeoutS)
    {
        var session = Get(id);
        if (timeoutS is null)
        {
            throw new RunRequestException(ProblemCodes.MissingField, "timeout_s", "field 'timeout_s' is required");
        }
        double seconds = RunService.CheckTimeout(timeoutS, "timeout_s", session.TimeoutS, _options.MaxSandboxTimeoutS);
        if (session.State != SessionState.Running)
        {
            throw new RunRequestException(ProblemCodes.SandboxPaused, null,
                $"sandbox '{id}' is {session.State.ToString().ToLowerInvariant()}: resume it before changing its timeout", RefusalKind.Conflict);
        }
        var now = _time.GetUtcNow();
        session.TimeoutS = seconds;
        session.ExtendTo(now.AddSeconds(seconds), now);
        return session;
    }

    /// <summary>Ends the sandbox now; false when there was no live one.</summary>
    public async Task<bool> DeleteAsync(string id)
    {
        if (!_sessions.TryGetValue(id, out var session) || session.State == SessionState.Ended)
        {
            return false;
        }
        return await EndAsync(session, "it was deleted");
    }

    /// <summary>Runs code in the sandbox, keeping its state. Runs of one sandbox wait for each other, in order.</summary>
    public async Task<RunResult> RunAsync(string id, RunRequest request, IRunEvents? events, CancellationToken cancellationToken)
    {
        var session = Get(id);
        if (request.Template is { Length: > 0 } asked && asked != session.Template.Name)
        {
            throw new RunRequestException(ProblemCodes.TemplateMismatch, "template",
                $"sandbox '{id}' runs template '{session.Template.Name}', not '{asked}'");
        }
        ExecRequest exec = _runs.ValidateFor(session.Template, request);
        exec.KeepOutputs = true;
        if (exec.ForkServer is { } fork)
        {
            fork.Persistent = true;
            fork.Context = request.Context;
            fork.RichResults = request.RichResults;
        }
        else if (request.Context is not null)
        {
            throw new RunRequestException(ProblemCodes.TemplateMismatch, "context", $"template '{session.Template.Name}' has no persistent interpreter, so no code contexts");
        }
        string? buildHash = exec.Compile is null ? null : BuildHash(exec);

        using var turn = await session.RunLock.AcquireAsync(cancellationToken);
        session = Get(id); // it may have ended while this run waited
        await EnsureRunningLockedAsync(session, cancellationToken);
        await EnterAsync(session, cancellationToken);
        try
        {
            bool cached = buildHash is not null && session.BuiltHash == buildHash;
            if (cached)
            {
                exec.Compile = null;
            }
            var outcome = await _runs.RunOnVmAsync(session.Vm, session.Template, exec, events, cancellationToken);
            RunResult result = outcome.Result;
            result.BuildCached = cached;
            if (buildHash is not null && !cached)
            {
                session.BuiltHash = outcome.BuildSucceeded ? buildHash : null;
            }
            // The first run always starts an interpreter: only a later one means state was lost.
            result.StateReset = result.StateReset && session.Runs > 0;
            session.Runs++;
            result.Metrics.VmSource = "sandbox";
            if (session.Vm.Exited.IsCompleted)
            {
                await EndAsync(session, "its VM stopped");
            }
            return result;
        }
        finally
        {
            session.Leave(_time.GetUtcNow());
        }
    }

    /// <summary>
    /// Ends the sandbox's Python state <paramref name="context"/> (null: the default one), as a kernel restart
    /// does; the next run there starts a fresh interpreter. An agent without contexts answers unknown_op
    /// (<see cref="AgentException"/>).
    /// </summary>
    public Task StopKernelAsync(string id, string? context, CancellationToken cancellationToken) =>
        UseSessionAsync(id, async session =>
        {
            await session.Vm.Agent.StopKernelAsync(context, cancellationToken);
            return true;
        });

    /// <summary>
    /// Runs a file or artifact call against the sandbox's agent, counting as activity. An agent error
    /// becomes a problem naming the path.
    /// </summary>
    public Task<T> UseAsync<T>(string id, string path, Func<AgentClient, string, Task<T>> call, bool mutates = false)
    {
        Get(id);
        string checkedPath = CheckPath(path);
        return UseSessionAsync(id, async session =>
        {
            if (mutates)
            {
                // A file the build depends on may have changed: the next run compiles again.
                session.BuiltHash = null;
            }
            try
            {
                return await call(session.Vm.Agent, checkedPath);
            }
            catch (AgentException e)
            {
                throw FileProblem(e, checkedPath);
            }
        });
    }

    /// <summary>
    /// Runs a call against the sandbox's running VM (resumed when paused, thawed when frozen), counting as
    /// activity while it lasts. An agent channel that closes ends the sandbox (404).
    /// </summary>
    private async Task<T> UseSessionAsync<T>(string id, Func<SandboxSession, Task<T>> call)
    {
        var session = Get(id);
        while (!session.TryEnter(_time.GetUtcNow()))
        {
            // Paused (resumed here when auto_resume is on), or being paused or resumed: its run lock says when that is over.
            using (var turn = await session.RunLock.AcquireAsync(CancellationToken.None))
            {
                session = Get(id);
                await EnsureRunningLockedAsync(session, CancellationToken.None);
            }
        }
        await ThawEnteredAsync(session, CancellationToken.None);
        try
        {
            return await call(session);
        }
        catch (AgentDisconnectedException e)
        {
            await EndAsync(session, "its agent channel closed: " + e.Message);
            throw new RunRequestException(ProblemCodes.SandboxNotFound, null, $"sandbox '{id}' ended: {e.Message}", RefusalKind.NotFound);
        }
        finally
        {
            session.Leave(_time.GetUtcNow());
        }
    }

    /// <summary>
    /// Streams file <paramref name="path"/> of sandbox <paramref name="id"/> into the stream that
    /// <paramref name="open"/> returns for it (the caller sets its headers there). Stat first, so a missing
    /// file or a directory is a problem before any byte; a file over <see cref="SandboxVmOptions.MaxDownloadBytes"/>
    /// is refused (409 <c>file_too_large</c>). Then at most the size stat reported is read, frame by frame
    /// straight into the stream (never gathered in memory): a file that grew since is cut at that size, the
    /// length the caller declared.
    /// </summary>
    public async Task<FileInfoBody> DownloadAsync(string id, string path, Func<FileInfoBody, Stream> open, CancellationToken cancellationToken)
    {
        var info = await UseAsync(id, path, (agent, p) => agent.StatAsync(p, cancellationToken));
        if (info.Kind != FileKind.File)
        {
            throw new RunRequestException(ProblemCodes.InvalidPath, "path", $"'{path}' is a {info.Kind.ToString().ToLowerInvariant()}, not a file");
        }
        if (info.Size < 0 || info.Size > _options.MaxDownloadBytes)
        {
            throw new RunRequestException(ProblemCodes.FileTooLarge, "path",
                $"'{path}' is {info.Size} bytes; downloads are limited to {_options.MaxDownloadBytes} bytes", RefusalKind.Conflict);
        }
        var destination = open(info);
        return await UseAsync(id, info.Path, async (agent, p) =>
        {
            try
            {
                return await agent.ReadFileAsync(p, destination, info.Size, cancellationToken);
            }
            catch (AgentReadLimitException) when (info.Size == 0)
            {
                // A pseudo-file (/proc, /sys): stat says 0 bytes, reading it gives more.
                throw new RunRequestException(ProblemCodes.NotRegularFile, "path",
                    $"'{path}' has content but a size of 0: a pseudo-file (/proc, /sys) cannot be downloaded; print it from a run", RefusalKind.Invalid);
            }
            catch (AgentReadLimitException)
            {
                // It grew after the stat: the caller has the length it declared.
                return info;
            }
        });
    }

    /// <summary>Absolute path in the guest of artifact <paramref name="relative"/> (a path under /tmp/outputs).</summary>
    public static string ArtifactPath(string relative)
    {
        // The route leaves %2F encoded; decode it so "a%2F..%2F.." is judged as the path it names.
        string p = Uri.UnescapeDataString(relative).Replace('\\', '/');
        if (p.Length == 0 || p.StartsWith('/') || p.Split('/').Any(part => part is ".." or "." or ""))
        {
            throw new RunRequestException(ProblemCodes.InvalidPath, "path", $"'{relative}' is not a path under {OutputsDir}");
        }
        return OutputsDir + "/" + p;
    }

    public static string RelativeToOutputs(string guestPath) =>
        guestPath.StartsWith(OutputsDir + "/", StringComparison.Ordinal) ? guestPath[(OutputsDir.Length + 1)..] : guestPath;

    internal static string CheckPath(string path)
    {
        if (string.IsNullOrEmpty(path))
        {
            throw new RunRequestException(ProblemCodes.InvalidPath, "path", "query parameter 'path' is required");
        }
        if (path.Contains('\0') || path.Length > 4096)
        {
            throw new RunRequestException(ProblemCodes.InvalidPath, "path", "the path contains a NUL byte or is longer than 4096 characters");
        }
        return path;
    }

    /// <summary>
    /// The refusal for an agent's error on a file operation, by its code: what the caller asked for is
    /// missing, not theirs, the wrong kind of file or path, too large or in a state that refuses it. A code
    /// this server does not know is the sandbox's failure (<see cref="RefusalKind.SandboxFailed"/>), never the host's.
    /// </summary>
    internal static RunRequestException FileProblem(AgentException e, string path)
    {
        string detail = $"'{path}': {e.Message}";
        return e.Code switch
        {
            ErrorCodes.NotFound => new RunRequestException(ProblemCodes.FileNotFound, "path", detail, RefusalKind.NotFound),
            ErrorCodes.PermissionDenied or "access_denied" => new RunRequestException(ProblemCodes.PermissionDenied, "path", detail, RefusalKind.Forbidden),
            "not_regular_file" or "is_a_directory" or "not_a_directory" => new RunRequestException(ProblemCodes.NotRegularFile, "path", detail, RefusalKind.Invalid),
            ErrorCodes.BadRequest or "invalid_path" => new RunRequestException(ProblemCodes.InvalidPath, "path", detail, RefusalKind.Invalid),
            "file_too_large" or "too_large" or "no_space" => new RunRequestException(ProblemCodes.FileTooLarge, "path", detail, RefusalKind.TooLarge),
            ErrorCodes.IoError or "exists" or "not_empty" or ErrorCodes.Cancelled => new RunRequestException(ProblemCodes.FileError, "path", detail, RefusalKind.Conflict),
            _ => new RunRequestException(ProblemCodes.AgentError, "path", $"'{path}': the sandbox's agent failed ({e.Code}): {e.Message}", RefusalKind.SandboxFailed),
        };
    }

    private static string BuildHash(ExecRequest exec)
    {
        var text = new StringBuilder();
        foreach (var (path, content) in exec.Files.OrderBy(f => f.Key, StringComparer.Ordinal))
        {
            text.Append(path).Append('\0').Append(content).Append('\0');
        }
        text.AppendJoin('\0', exec.Compile!).Append('\0');
        foreach (var (k, v) in exec.Env.OrderBy(e => e.Key, StringComparer.Ordinal))
        {
            text.Append(k).Append('=').Append(v).Append('\0');
        }
        return Convert.ToHexStringLower(SHA256.HashData(Encoding.UTF8.GetBytes(text.ToString())));
    }

    private static Dictionary<string, string> CheckMetadata(Dictionary<string, string>? metadata)
    {
        var result = new Dictionary<string, string>(StringComparer.Ordinal);
        if (metadata is null)
        {
            return result;
        }
        if (metadata.Count > MaxMetadataEntries)
        {
            throw new RunRequestException(ProblemCodes.InvalidMetadata, "metadata", $"at most {MaxMetadataEntries} metadata entries are kept");
        }
        foreach (var (k, v) in metadata)
        {
            if (k.Length == 0 || k.Length > MaxMetadataChars || v is null || v.Length > MaxMetadataChars)
            {
                throw new RunRequestException(ProblemCodes.InvalidMetadata, $"metadata.{k}",
                    $"metadata keys must be 1 to {MaxMetadataChars} characters and values at most {MaxMetadataChars}");
            }
            result[k] = v;
        }
        return result;
    }

    /// <summary>
    /// Starts a call on the sandbox: counted as activity (so it is not frozen or reaped meanwhile) and, when
    /// the VM is frozen, thawed first, its clock set again where it has its own kernel. The one place a
    /// session's VM is thawed. A thaw that fails ends the sandbox (its VM is lost): 404 as for any ended one.
    /// </summary>
    private async Task EnterAsync(SandboxSession session, CancellationToken cancellationToken)
    {
        session.Enter(_time.GetUtcNow());
        await ThawEnteredAsync(session, cancellationToken);
    }

    /// <summary>A call has entered the (running) sandbox: its VM is thawed if it was frozen, else the sandbox ends.</summary>
    private async Task ThawEnteredAsync(SandboxSession session, CancellationToken cancellationToken)
    {
        bool alive;
        try
        {
            alive = await ThawUnderGateAsync(session, session.Vm, cancellationToken);
        }
        catch
        {
            session.Leave(_time.GetUtcNow());
            throw;
        }
        if (!alive)
        {
            session.Leave(_time.GetUtcNow());
            await EndAsync(session, "its VM could not be resumed");
            throw new RunRequestException(ProblemCodes.SandboxNotFound, null, $"sandbox '{session.Id}' ended: its VM could not be resumed", RefusalKind.NotFound);
        }
    }

    /// <summary>Thaws <paramref name="vm"/> if it is frozen, under the sandbox's freeze gate; false when it could not be thawed.</summary>
    private async Task<bool> ThawUnderGateAsync(SandboxSession session, IVm vm, CancellationToken cancellationToken)
    {
        await session.FreezeGate.WaitAsync(cancellationToken);
        try
        {
            return !vm.IsFrozen || await _pools.ThawAsync(vm, cancellationToken);
        }
        finally
        {
            session.FreezeGate.Release();
        }
    }

    /// <summary>Freezes the sandbox if it is still idle once the gate is free (a call may have started meanwhile).</summary>
    private async Task FreezeIfIdleAsync(SandboxSession session)
    {
        await _freezing.WaitAsync();
        try
        {
            await session.FreezeGate.WaitAsync();
            try
            {
                if (session.ActiveCalls == 0 && session.State == SessionState.Running && !session.Vm.IsFrozen)
                {
                    await _pools.FreezeAsync(session.Vm, CancellationToken.None);
                }
            }
            finally
            {
                session.FreezeGate.Release();
            }
        }
        finally
        {
            _freezing.Release();
        }
    }

    /// <summary>
    /// Ends every sandbox whose lifetime or idle time is over, and freezes those idle for
    /// <see cref="SandboxVmOptions.SandboxFreezeAfterS"/>. Runs on the reaper timer.
    /// </summary>
    internal async Task ReapAsync()
    {
        var now = _time.GetUtcNow();
        SweepSharedPaused(now);
        var freezeAfter = TimeSpan.FromSeconds(Math.Max(0, _options.SandboxFreezeAfterS));
        foreach (var session in _sessions.Values)
        {
            if (session.State == SessionState.Paused && now >= session.PausedUntil)
            {
                await EndAsync(session, "it was paused longer than paused_ttl");
            }
            else if (session.OnIdle == IdleAction.Pause && session.IdleDue(now))
            {
                // In the background: a pause under TCG takes seconds, and other sandboxes are due too.
                _ = PauseIdleAsync(session);
            }
            else if (session.DueToEnd(now) is { } why)
            {
                await EndAsync(session, why);
            }
            else if (_options.FreezeIdle && session.DueToFreeze(now, freezeAfter) && session.CurrentVm is { IsFrozen: false })
            {
                // Not awaited: a slow freeze (a runsc call) must not hold up the reaping of others.
                _ = FreezeIfIdleAsync(session);
            }
        }
    }

    private async Task<bool> EndAsync(SandboxSession session, string reason)
    {
        if (!session.MarkEnded(reason))
        {
            return false;
        }
        _sessions.TryRemove(session.Id, out _);
        Interlocked.Decrement(ref _reserved);
        ReleaseFor(session.Owner);
        LogEnded(_logger, session.Id, reason);
        if (session.CurrentVm is { } vm)
        {
            await _tracker.KillAsync(vm);
        }
        RemovePausedImage(session);
        return true;
    }

    public async ValueTask DisposeAsync()
    {
        if (Interlocked.Exchange(ref _disposed, 1) != 0)
        {
            return;
        }
        await _reaper.DisposeAsync();
        // Paused sandboxes stay in the state directory: the next server lists and resumes them.
        foreach (var session in _sessions.Values.Where(s => s.State != SessionState.Paused))
        {
            await EndAsync(session, "the server stopped");
        }
    }

    [LoggerMessage(Level = LogLevel.Information, Message = "sandbox {Id} created from template {Template} (vm {Vm}) for {Owner}")]
    private static partial void LogCreated(ILogger logger, string id, string template, string vm, string owner);

    [LoggerMessage(Level = LogLevel.Information, Message = "sandbox {Id} ended: {Reason}")]
    private static partial void LogEnded(ILogger logger, string id, string reason);

    [LoggerMessage(Level = LogLevel.Warning, Message = "a sandbox of template {Template} could not be started")]
    private static partial void LogStartFailed(ILogger logger, string template, Exception e);
}
