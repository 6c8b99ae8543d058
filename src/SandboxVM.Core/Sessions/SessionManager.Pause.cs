using System.Diagnostics;
using System.Security.Cryptography;
using System.Text.Json;
using Microsoft.Extensions.Logging;
using SandboxVM.Core.Pools;
using SandboxVM.Core.Runs;
using SandboxVM.Runtime;

namespace SandboxVM.Core.Sessions;

// Pause, resume and fork: the runtime saves a sandbox's whole state (ISandboxSaver) into the state
// directory and starts it again from there. Each of them holds the sandbox's run lock, so they never
// overlap a run, each other, or a file call (a pause refuses while one is in progress).
public sealed partial class SessionManager
{
    internal const string PausedDirName = "paused";
    internal const string ForksDirName = "forks";
    internal const string ImageDirName = "image";
    internal const string RecordFileName = "sandbox.json";

    /// <summary>Whether the runtime can save sandboxes (pause, resume, fork); the process runtime cannot.</summary>
    public bool CanPause => _pools.Runtime is ISandboxSaver;

    private string PausedRoot => Path.Combine(_options.SharedStateDir ?? _options.StateDir, PausedDirName);

    private RunRequestException PauseUnsupported() => new(ProblemCodes.PauseUnsupported, null,
        $"the {_pools.Runtime.Name} runtime cannot save a running sandbox: no pause, resume, fork or snapshot (qemu and gvisor can)", RefusalKind.Conflict);

    private ISandboxSaver Saver => _pools.Runtime as ISandboxSaver ?? throw PauseUnsupported();

    /// <summary>
    /// Saves the sandbox (memory, processes, its /tmp and home) into the state directory and ends its VM.
    /// A run in progress is waited for (the run lock); a file call in progress refuses it (409 <c>sandbox_busy</c>).
    /// </summary>
    public async Task<SandboxSession> PauseAsync(string id, CancellationToken cancellationToken)
    {
        var session = Get(id);
        var saver = Saver;
        using var turn = await session.RunLock.AcquireAsync(cancellationToken);
        session = Get(id);
        if (session.State == SessionState.Paused)
        {
            throw new RunRequestException(ProblemCodes.SandboxPaused, null, $"sandbox '{id}' is already paused", RefusalKind.Conflict);
        }
        await PauseLockedAsync(session, saver);
        return session;
    }

    /// <summary>Starts a paused sandbox again from its image, as it was; 409 <c>sandbox_not_paused</c> when it runs.</summary>
    public async Task<SandboxSession> ResumeAsync(string id, CancellationToken cancellationToken)
    {
        var session = Get(id);
        var saver = Saver;
        using var turn = await session.RunLock.AcquireAsync(cancellationToken);
        session = Get(id);
        if (session.State != SessionState.Paused)
        {
            throw new RunRequestException(ProblemCodes.SandboxNotPaused, null, $"sandbox '{id}' is not paused", RefusalKind.Conflict);
        }
        await ResumeLockedAsync(session, saver);
        return session;
    }

    /// <summary>Under the run lock: a paused sandbox is resumed when it allows that, else refused.</summary>
    private async Task EnsureRunningLockedAsync(SandboxSession session, CancellationToken cancellationToken)
    {
        cancellationToken.ThrowIfCancellationRequested();
        if (session.State != SessionState.Paused)
        {
            return;
        }
        if (!session.AutoResume)
        {
            throw new RunRequestException(ProblemCodes.SandboxPaused, null,
                $"sandbox '{session.Id}' is paused and auto_resume is off: POST /v1/sandboxes/{session.Id}/resume first", RefusalKind.Conflict);
        }
        await ResumeLockedAsync(session, Saver);
    }

    private async Task PauseLockedAsync(SandboxSession session, ISandboxSaver saver)
    {
        if (!session.TryBeginPause())
        {
            throw new RunRequestException(ProblemCodes.SandboxBusy, null,
                $"sandbox '{session.Id}' has a file call in progress; pause it when that has ended", RefusalKind.Conflict);
        }
        IVm vm = session.Vm;
        string dir = Path.Combine(PausedRoot, session.Id);
        string build = dir + ".tmp-" + Convert.ToHexStringLower(RandomNumberGenerator.GetBytes(4));
        SavedSandbox saved;
        try
        {
            VmSpec spec = session.SavedSpec ??= await _pools.GetSpecAsync(session.Template, CancellationToken.None);
            CreatePrivateDirectory(PausedRoot);
            Directory.CreateDirectory(Path.Combine(build, ImageDirName));
            EnsureRoomToSave(spec, build);
            await ThawForSaveAsync(session, vm);
            // Not the caller's token: a client that goes away must not leave a half-saved sandbox.
            saved = await saver.SaveAsync(vm, spec, Path.Combine(build, ImageDirName), keepRunning: false, CancellationToken.None);
            var now = _time.GetUtcNow();
            await WriteRecordAsync(build, session, spec, saved, now);
            Directory.Move(build, dir);
            session.Paused(dir, saved.Bytes, saved.Elapsed, now, TimeSpan.FromSeconds(_options.PausedTtlS));
        }
        catch (Exception e)
        {
            string why = DescribeSaveError(e, build);
            TryDeleteDirectory(build);
            session.PauseFailed();
            LogPauseFailed(_logger, session.Id, e);
            if (vm.Exited.IsCompleted)
            {
                await EndAsync(session, "its VM stopped while it was being paused");
            }
            throw new RunRequestException(ProblemCodes.PauseFailed, null,
                $"sandbox '{session.Id}' could not be paused and {(vm.Exited.IsCompleted ? "has ended" : "keeps running")}: {why}",
                RefusalKind.Unavailable);
        }
        // Its teardown (the process's exit, cgroup, run directory) goes on off the request path; shutdown waits for it.
        _tracker.Release(vm);
        LogPaused(_logger, session.Id, saved.Elapsed.TotalMilliseconds, saved.Bytes);
        if (session.State == SessionState.Ended)
        {
            // Deleted while it was being saved.
            TryDeleteDirectory(dir);
        }
    }

    /// <summary>
    /// A frozen VM cannot be saved (a cgroup-frozen gVisor sandbox cannot be checkpointed; a stopped QEMU
    /// should not migrate a stopped guest's clock): thawed first. The sandbox is already pausing, so idle
    /// does not freeze it again.
    /// </summary>
    private async Task ThawForSaveAsync(SandboxSession session, IVm vm)
    {
        if (!await ThawUnderGateAsync(session, vm, CancellationToken.None))
        {
            throw new InvalidOperationException("its VM could not be thawed to be saved");
        }
    }

    private async Task ResumeLockedAsync(SandboxSession session, ISandboxSaver saver)
    {
        _pools.EnsureHostMemory();
        if (!session.TryBeginResume())
        {
            throw new RunRequestException(ProblemCodes.SandboxNotPaused, null, $"sandbox '{session.Id}' is not paused", RefusalKind.Conflict);
        }
        var clock = Stopwatch.StartNew();
        string dir = session.PausedDirectory!;
        IVm? vm = null;
        try
        {
            if (session.SavedSpec is not { } spec)
            {
                throw new InvalidOperationException("the paused sandbox's record names no VM spec");
            }
            vm = await saver.RestoreSavedAsync(spec, Path.Combine(dir, ImageDirName), CancellationToken.None);
            _tracker.Add(vm);
            if (_pools.OnAcquired is { } onAcquired)
            {
                await onAcquired(session.Template, vm, CancellationToken.None);
            }
        }
        catch (Exception e)
        {
            if (vm is not null)
            {
                await _tracker.KillAsync(vm);
            }
            session.ResumeFailed();
            LogResumeFailed(_logger, session.Id, e);
            throw new RunRequestException(ProblemCodes.ResumeFailed, null,
                $"sandbox '{session.Id}' could not be resumed (it stays paused): {CallerErrors.Describe(e)}", RefusalKind.Unavailable);
        }
        session.Resumed(new LeasedVm(vm, VmSource.Restore, clock.Elapsed), clock.Elapsed, _time.GetUtcNow());
        Watch(session, vm);
        TryDeleteDirectory(dir);
        LogResumed(_logger, session.Id, clock.Elapsed.TotalMilliseconds);
        if (session.State == SessionState.Ended)
        {
            await _tracker.KillAsync(vm);
        }
    }

    /// <summary>Pauses a sandbox whose idle time is over (on_idle: pause); one that cannot be paused ends as if on_idle were kill.</summary>
    private async Task PauseIdleAsync(SandboxSession session)
    {
        try
        {
            using var turn = await session.RunLock.AcquireAsync(CancellationToken.None);
            if (!session.IdleDue(_time.GetUtcNow()))
            {
                return;
            }
            await PauseLockedAsync(session, Saver);
        }
        catch (RunRequestException e) when (e.Code != ProblemCodes.SandboxBusy)
        {
            await EndAsync(session, "it was idle too long and could not be paused: " + e.Message);
        }
        catch (RunRequestException)
        {
            // A file call started meanwhile: it is not idle any more.
        }
    }

    /// <summary>
    /// <paramref name="count"/> new sandboxes, each started from the state the source has now (saved once,
    /// restored <paramref name="count"/> times; a paused source's own image is used as it is). The source
    /// keeps running. They count against the limits before any work (429).
    /// </summary>
    public async Task<IReadOnlyList<SandboxSession>> ForkAsync(string id, int? count, SandboxOwner owner, CancellationToken cancellationToken)
    {
        var source = Get(id);
        var saver = Saver;
        int n = count ?? 1;
        if (n < 1 || n > _options.MaxForkCount)
        {
            throw new RunRequestException(ProblemCodes.InvalidCount, "count", $"count is 1 to {_options.MaxForkCount}, not {n}");
        }
        Reserve(owner, n);
        int created = 0;
        var forks = new List<SandboxSession>();
        string? build = null;
        try
        {
            using var turn = await source.RunLock.AcquireAsync(cancellationToken);
            source = Get(id);
            VmSpec spec = source.SavedSpec ??= await _pools.GetSpecAsync(source.Template, cancellationToken);
            string image;
            if (source.State == SessionState.Paused)
            {
                image = Path.Combine(source.PausedDirectory!, ImageDirName);
            }
            else
            {
                CreatePrivateDirectory(Path.Combine(_options.StateDir, ForksDirName));
                build = Path.Combine(_options.StateDir, ForksDirName, Convert.ToHexStringLower(RandomNumberGenerator.GetBytes(8)));
                image = Path.Combine(build, ImageDirName);
                Directory.CreateDirectory(image);
                await SaveRunningAsync(source, saver, spec, image);
            }
            var now = _time.GetUtcNow();
            await using var prepared = n > 1 ? await saver.PrepareRestoresAsync(spec, image, CancellationToken.None) : NoPreparation.Instance;
            var restores = Enumerable.Range(0, n).Select(_ => RestoreLeaseAsync(saver, source.Template, spec, image)).ToList();
            try
            {
                await Task.WhenAll(restores);
            }
            catch (Exception e)
            {
                foreach (var t in restores.Where(t => t.IsCompletedSuccessfully))
                {
                    await _tracker.KillAsync(t.Result.Vm);
                }
                LogForkFailed(_logger, id, e);
                throw new RunRequestException(ProblemCodes.ForkFailed, null, $"sandbox '{id}' could not be forked: {DescribeSaveError(e, null)}", RefusalKind.Unavailable);
            }
            foreach (var lease in restores.Select(t => t.Result))
            {
                string forkId = "sbx_" + Convert.ToHexStringLower(RandomNumberGenerator.GetBytes(10));
                var fork = new SandboxSession(forkId, owner.Name, source.Template, lease, now, source.TimeoutS, source.IdleTimeoutS,
                    new Dictionary<string, string>(source.Metadata, StringComparer.Ordinal), source.KeepRunning)
                {
                    OnIdle = source.OnIdle,
                    AutoResume = source.AutoResume,
                    Env = source.Env,
                };
                fork.SavedSpec = spec;
                fork.BuiltHash = source.BuiltHash;
                fork.Runs = source.Runs;
                _sessions[forkId] = fork;
                created++;
                Watch(fork, lease.Vm);
                forks.Add(fork);
                LogCreated(_logger, forkId, source.Template.Name, lease.Vm.Id, owner.Name);
            }
            return forks;
        }
        catch (Exception e) when (e is not RunRequestException and not OperationCanceledException)
        {
            LogForkFailed(_logger, id, e);
            throw new RunRequestException(ProblemCodes.ForkFailed, null, $"sandbox '{id}' could not be forked: {DescribeSaveError(e, build)}", RefusalKind.Unavailable);
        }
        finally
        {
            // Sandboxes not made give their places back; the made ones hold theirs until they end.
            if (n - created > 0)
            {
                Interlocked.Add(ref _reserved, created - n);
                for (int i = created; i < n; i++)
                {
                    ReleaseFor(owner.Name);
                }
            }
            if (build is not null)
            {
                TryDeleteDirectory(build);
            }
        }
    }

    /// <summary>
    /// Saves a running sandbox's state into <paramref name="image"/> (created empty) and lets it go on; the
    /// caller holds its run lock. A call in flight for the save: the source is thawed if idle froze it, and
    /// not frozen meanwhile.
    /// </summary>
    private async Task<SavedSandbox> SaveRunningAsync(SandboxSession source, ISandboxSaver saver, VmSpec spec, string image)
    {
        EnsureRoomToSave(spec, image);
        await EnterAsync(source, CancellationToken.None);
        try
        {
            return await saver.SaveAsync(source.Vm, spec, image, keepRunning: true, CancellationToken.None);
        }
        finally
        {
            source.Leave(_time.GetUtcNow());
        }
    }

    /// <summary>A new VM from a saved image (fork, snapshot), tracked and handed to the template's acquire hook; killed if that fails.</summary>
    private async Task<LeasedVm> RestoreLeaseAsync(ISandboxSaver saver, Templates.TemplateDefinition template, VmSpec spec, string image)
    {
        var clock = Stopwatch.StartNew();
        _pools.EnsureHostMemory();
        IVm vm = await saver.RestoreSavedAsync(spec, image, CancellationToken.None);
        _tracker.Add(vm);
        try
        {
            if (_pools.OnAcquired is { } onAcquired)
            {
                await onAcquired(template, vm, CancellationToken.None);
            }
        }
        catch
        {
            await _tracker.KillAsync(vm);
            throw;
        }
        return new LeasedVm(vm, VmSource.Restore, clock.Elapsed);
    }

    /// <summary>
    /// Refuses a save before it starts when the state directory has less room than the sandbox's memory (an
    /// image is at most that: QEMU's RAM file, gVisor's memory file, each plus a little device state). Not
    /// only a clearer answer: runsc 20240729 panics when a checkpoint's write fails, and the sandbox dies.
    /// </summary>
    private static void EnsureRoomToSave(VmSpec spec, string directory)
    {
        long free = AvailableBytes(directory);
        if (free < (long)spec.MemoryMib << 20)
        {
            throw new NoRoomToSaveException($"{NoSpace}: {free >> 20} MiB free, up to {spec.MemoryMib} MiB needed (the sandbox's memory)");
        }
    }

    /// <summary>A save refused before it started, for want of room (the message is the caller's to read).</summary>
    private sealed class NoRoomToSaveException(string message) : IOException(message);

    private const string NoSpace = "no space left in the server's state directory";

    /// <summary>
    /// Why a save failed, as the caller may read it: a full disk is the one failure a caller can act on
    /// (and is told); other host detail stays in the log. A full file system under <paramref name="written"/>
    /// (the image's directory, before the partial image is removed) is named whatever the saver said:
    /// runsc 20240729's checkpoint ends in a nil-pointer panic when its write fails, not in the kernel's error.
    /// </summary>
    private static string DescribeSaveError(Exception e, string? written)
    {
        if (e is NoRoomToSaveException refused)
        {
            return refused.Message;
        }
        for (Exception? x = e; x is not null; x = x.InnerException)
        {
            // The kernel's words (QEMU; Go errors are in lower case) and .NET's for a failed preallocation.
            if (x.Message.Contains("no space left on device", StringComparison.OrdinalIgnoreCase)
                || x.Message.Contains("because the disk was full", StringComparison.Ordinal))
            {
                return NoSpace;
            }
        }
        return written is not null && AvailableBytes(written) < FullBelowBytes ? NoSpace : CallerErrors.Describe(e);
    }

    /// <summary>Free space under which a failed save is put down to a full file system.</summary>
    private const long FullBelowBytes = 16L << 20;

    /// <summary>Bytes free to this process on the file system holding <paramref name="path"/> (or its nearest existing parent); max when unknown.</summary>
    private static long AvailableBytes(string path)
    {
        for (string? dir = path; dir is not null; dir = Path.GetDirectoryName(dir))
        {
            if (Directory.Exists(dir))
            {
                try
                {
                    return new DriveInfo(dir).AvailableFreeSpace;
                }
                catch (Exception x) when (x is IOException or UnauthorizedAccessException or ArgumentException)
                {
                    return long.MaxValue;
                }
            }
        }
        return long.MaxValue;
    }

    /// <summary>The record next to a paused sandbox's image: enough for a later server to list and resume it.</summary>
    private async Task WriteRecordAsync(string dir, SandboxSession session, VmSpec spec, SavedSandbox saved, DateTimeOffset now)
    {
        var record = new PausedRecord
        {
            Id = session.Id,
            Owner = session.Owner,
            Template = session.Template.Name,
            Runtime = _pools.Runtime.Name,
            CreatedAt = session.CreatedAt,
            PausedAt = now,
            RemainingLifetimeS = Math.Max(0, (session.ExpiresAt - now).TotalSeconds),
            TimeoutS = session.TimeoutS,
            IdleTimeoutS = session.IdleTimeoutS,
            OnIdle = session.OnIdle == IdleAction.Pause ? "pause" : "kill",
            AutoResume = session.AutoResume,
            KeepRunning = session.KeepRunning,
            Env = new Dictionary<string, string>(session.Env, StringComparer.Ordinal),
            Metadata = new Dictionary<string, string>(session.Metadata, StringComparer.Ordinal),
            BuiltHash = session.BuiltHash,
            Runs = session.Runs,
            PausedBytes = saved.Bytes,
            LastPauseMs = saved.Elapsed.TotalMilliseconds,
            LastResumeMs = session.LastResumeMs,
            Spec = spec,
        };
        string path = Path.Combine(dir, RecordFileName);
        await File.WriteAllTextAsync(path, JsonSerializer.Serialize(record, PausedRecordJson.Default.PausedRecord), CancellationToken.None);
    }

    /// <summary>
    /// Reads the paused sandboxes a previous server left in the state directory: each is listed as paused and
    /// counts against the limits. Records of another runtime or an unknown template are left alone (logged);
    /// half-written pauses and fork images are removed.
    /// </summary>
    private void LoadPaused()
    {
        var forks = Path.Combine(_options.StateDir, ForksDirName);
        TryDeleteDirectory(forks);
        SweepSnapshotLeftovers();
        // Shared: the sandboxes there are other nodes' too (and their .tmp-* pauses in progress); each is
        // claimed on its next call (AdoptPaused), never all at once.
        if (_options.SharedStateDir is not null || !Directory.Exists(PausedRoot))
        {
            return;
        }
        foreach (string dir in Directory.GetDirectories(PausedRoot))
        {
            if (Path.GetFileName(dir).Contains(".tmp-", StringComparison.Ordinal))
            {
                TryDeleteDirectory(dir);
                continue;
            }
            TryLoadPaused(dir);
        }
    }

    /// <summary>
    /// Takes over the paused sandbox <paramref name="id"/> from the shared state directory: listed here as
    /// paused, resumed here on its next call. True when it is held here (also when it already was); false
    /// without a shared directory or an image of it there. The caller makes sure no other node does the
    /// same at once (the cluster calls this from the sandbox's single grain activation).
    /// </summary>
    public bool AdoptPaused(string id)
    {
        if (_sessions.TryGetValue(id, out var held) && held.State != SessionState.Ended)
        {
            return true;
        }
        if (_options.SharedStateDir is null || !IsSafeId(id))
        {
            return false;
        }
        string dir = Path.Combine(PausedRoot, id);
        return File.Exists(Path.Combine(dir, RecordFileName)) && TryLoadPaused(dir);
    }

    /// <summary>Whether the shared state directory holds a paused image of <paramref name="id"/> (a node that died or left paused it).</summary>
    public bool IsPausedInSharedState(string id) =>
        _options.SharedStateDir is not null && IsSafeId(id) && File.Exists(Path.Combine(PausedRoot, id, RecordFileName));

    /// <summary>How often a node looks for paused images in the shared state directory that no node holds.</summary>
    internal static readonly TimeSpan SharedSweepInterval = TimeSpan.FromMinutes(10);

    /// <summary>How long a half-written pause (<c>.tmp-*</c>) in the shared directory may be another node's save in progress.</summary>
    internal static readonly TimeSpan SharedLeftoverAge = TimeSpan.FromDays(1);

    private DateTimeOffset _nextSharedSweep;

    /// <summary>
    /// With a shared state directory, each node's reaper removes (every <see cref="SharedSweepInterval"/>)
    /// the paused images there that no node holds and whose paused_ttl is over (their node died or left and
    /// no call came; a node that holds one ends it at that time itself, and nobody may resume it after), and
    /// half-written pauses older than <see cref="SharedLeftoverAge"/>. Whichever node sweeps first removes them.
    /// </summary>
    internal void SweepSharedPaused(DateTimeOffset now)
    {
        if (_options.SharedStateDir is null || now < _nextSharedSweep)
        {
            return;
        }
        _nextSharedSweep = now + SharedSweepInterval;
        string[] dirs;
        try
        {
            dirs = Directory.Exists(PausedRoot) ? Directory.GetDirectories(PausedRoot) : [];
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            LogSweepFailed(_logger, PausedRoot, e.Message);
            return;
        }
        var ttl = TimeSpan.FromSeconds(_options.PausedTtlS);
        foreach (string dir in dirs)
        {
            string name = Path.GetFileName(dir);
            if (name.Contains(".tmp-", StringComparison.Ordinal))
            {
                if (Directory.GetLastWriteTimeUtc(dir) < now.UtcDateTime - SharedLeftoverAge)
                {
                    LogSharedSwept(_logger, dir, "a pause that never finished");
                    TryDeleteDirectory(dir);
                }
                continue;
            }
            if (_sessions.ContainsKey(name))
            {
                continue;
            }
            DateTimeOffset pausedAt;
            try
            {
                pausedAt = ReadRecord(dir).PausedAt;
            }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException or JsonException or InvalidDataException)
            {
                // Unreadable: as old as the directory.
                pausedAt = Directory.GetLastWriteTimeUtc(dir);
            }
            if (now >= pausedAt + ttl + SharedSweepInterval)
            {
                LogSharedSwept(_logger, dir, $"paused at {pausedAt:u}, longer than paused_ttl, held by no node");
                TryDeleteDirectory(dir);
            }
        }
    }

    /// <summary>
    /// For a node that leaves (drain): pauses the sandbox into the shared state directory if it runs, then
    /// lets go of it here without deleting its image, all under its run lock (a run in progress ends
    /// first), so another node can adopt it. Refused (409 <c>shared_state_required</c>) without a shared directory.
    /// </summary>
    public async Task HandOffAsync(string id, CancellationToken cancellationToken)
    {
        if (_options.SharedStateDir is null)
        {
            throw new RunRequestException(ProblemCodes.SharedStateRequired, null,
                "this server has no shared state directory (SandboxVM:SharedStateDir): its paused sandboxes cannot move", RefusalKind.Conflict);
        }
        var session = Get(id);
        var saver = Saver;
        using var turn = await session.RunLock.AcquireAsync(cancellationToken);
        session = Get(id);
        if (session.State != SessionState.Paused)
        {
            await PauseLockedAsync(session, saver);
        }
        if (session.MarkEnded("handed to another node"))
        {
            _sessions.TryRemove(session.Id, out _);
            Interlocked.Decrement(ref _reserved);
            ReleaseFor(session.Owner);
            LogHandedOff(_logger, session.Id);
        }
    }

    /// <summary>Ids name directories: only the characters ids are made of (sbx_ and hex), nothing that walks a path.</summary>
    private static bool IsSafeId(string id) =>
        id.Length is > 0 and <= 64 && id.All(c => char.IsAsciiLetterOrDigit(c) || c is '_' or '-');

    /// <summary>The record next to a paused sandbox's image (IOException, JsonException or InvalidDataException when it does not read).</summary>
    private static PausedRecord ReadRecord(string dir) =>
        JsonSerializer.Deserialize(File.ReadAllText(Path.Combine(dir, RecordFileName)), PausedRecordJson.Default.PausedRecord)
            ?? throw new InvalidDataException("empty record");

    /// <summary>Lists a paused sandbox's directory as a paused sandbox of this server; false (logged) when it cannot be.</summary>
    private bool TryLoadPaused(string dir)
    {
        try
        {
            var record = ReadRecord(dir);
            if (record.Runtime != _pools.Runtime.Name || record.Id != Path.GetFileName(dir) || record.Spec is null)
            {
                LogPausedSkipped(_logger, dir, $"saved by runtime {record.Runtime}, this server runs {_pools.Runtime.Name}");
                return false;
            }
            var template = _runs.FindTemplate(record.Template);
            var session = new SandboxSession(record.Id, record.Owner, template, null, record.CreatedAt, record.TimeoutS, record.IdleTimeoutS, record.Metadata, record.KeepRunning)
            {
                OnIdle = record.OnIdle == "pause" ? IdleAction.Pause : IdleAction.Kill,
                AutoResume = record.AutoResume,
                Env = record.Env,
            };
            session.SavedSpec = record.Spec;
            session.BuiltHash = record.BuiltHash;
            session.Runs = record.Runs;
            session.LoadedPaused(dir, record.PausedBytes, record.PausedAt, TimeSpan.FromSeconds(record.RemainingLifetimeS), record.LastPauseMs, record.LastResumeMs, TimeSpan.FromSeconds(_options.PausedTtlS));
            if (!_sessions.TryAdd(record.Id, session))
            {
                return true;
            }
            Interlocked.Increment(ref _reserved);
            ReserveFor(new SandboxOwner(record.Owner, null), 1);
            LogPausedLoaded(_logger, record.Id, record.Template, record.Owner);
            return true;
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException or JsonException or InvalidDataException or RunRequestException)
        {
            LogPausedSkipped(_logger, dir, e.Message);
            return false;
        }
    }

    /// <summary>
    /// Saved images are the guests' memory (the callers' data): only the server may read them. Made 0700
    /// (also when it existed), so what is created inside is out of other host users' reach whatever its mode.
    /// </summary>
    private static void CreatePrivateDirectory(string dir)
    {
        Directory.CreateDirectory(dir);
        if (!OperatingSystem.IsWindows())
        {
            File.SetUnixFileMode(dir, UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute);
        }
    }

    private void RemovePausedImage(SandboxSession session)
    {
        if (session.PausedDirectory is { } dir)
        {
            TryDeleteDirectory(dir);
        }
    }

    private void TryDeleteDirectory(string dir)
    {
        try
        {
            if (Directory.Exists(dir))
            {
                Directory.Delete(dir, recursive: true);
            }
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            LogCleanupFailed(_logger, dir, e.Message);
        }
    }

    [LoggerMessage(Level = LogLevel.Information, Message = "sandbox {Id} paused in {Ms:0} ms ({Bytes} bytes on disk)")]
    private static partial void LogPaused(ILogger logger, string id, double ms, long bytes);

    [LoggerMessage(Level = LogLevel.Information, Message = "sandbox {Id} resumed in {Ms:0} ms")]
    private static partial void LogResumed(ILogger logger, string id, double ms);

    [LoggerMessage(Level = LogLevel.Warning, Message = "sandbox {Id} could not be paused")]
    private static partial void LogPauseFailed(ILogger logger, string id, Exception e);

    [LoggerMessage(Level = LogLevel.Warning, Message = "sandbox {Id} could not be resumed")]
    private static partial void LogResumeFailed(ILogger logger, string id, Exception e);

    [LoggerMessage(Level = LogLevel.Warning, Message = "sandbox {Id} could not be forked")]
    private static partial void LogForkFailed(ILogger logger, string id, Exception e);

    [LoggerMessage(Level = LogLevel.Information, Message = "paused sandbox {Id} of {Template} (owner {Owner}) found in the state directory")]
    private static partial void LogPausedLoaded(ILogger logger, string id, string template, string owner);

    [LoggerMessage(Level = LogLevel.Information, Message = "sandbox {Id} paused into the shared state directory and let go: another node resumes it")]
    private static partial void LogHandedOff(ILogger logger, string id);

    [LoggerMessage(Level = LogLevel.Information, Message = "removed {Dir} from the shared state directory: {Reason}")]
    private static partial void LogSharedSwept(ILogger logger, string dir, string reason);

    [LoggerMessage(Level = LogLevel.Warning, Message = "could not look through {Dir} for paused images no node holds: {Reason}")]
    private static partial void LogSweepFailed(ILogger logger, string dir, string reason);

    [LoggerMessage(Level = LogLevel.Warning, Message = "paused sandbox in {Dir} not loaded: {Reason}")]
    private static partial void LogPausedSkipped(ILogger logger, string dir, string reason);

    [LoggerMessage(Level = LogLevel.Warning, Message = "could not remove {Path}: {Reason}")]
    private static partial void LogCleanupFailed(ILogger logger, string path, string reason);
}

/// <summary>sandbox.json of a paused sandbox.</summary>
internal sealed record PausedRecord
{
    public required string Id { get; init; }
    public required string Owner { get; init; }
    public required string Template { get; init; }
    public string? Runtime { get; init; }
    public DateTimeOffset CreatedAt { get; init; }
    public DateTimeOffset PausedAt { get; init; }
    public double RemainingLifetimeS { get; init; }
    public double TimeoutS { get; init; }
    public double IdleTimeoutS { get; init; }
    public string OnIdle { get; init; } = "kill";
    public bool AutoResume { get; init; } = true;
    /// <summary>Never frozen while idle (keep_running, every E2B sandbox); absent in records of older servers.</summary>
    public bool KeepRunning { get; init; }
    public Dictionary<string, string> Env { get; init; } = [];
    public Dictionary<string, string> Metadata { get; init; } = [];
    public string? BuiltHash { get; init; }
    public int Runs { get; init; }
    public long PausedBytes { get; init; }
    public double? LastPauseMs { get; init; }
    public double? LastResumeMs { get; init; }
    public VmSpec? Spec { get; init; }
}

[System.Text.Json.Serialization.JsonSourceGenerationOptions(PropertyNamingPolicy = System.Text.Json.Serialization.JsonKnownNamingPolicy.SnakeCaseLower, WriteIndented = true)]
[System.Text.Json.Serialization.JsonSerializable(typeof(PausedRecord))]
internal sealed partial class PausedRecordJson : System.Text.Json.Serialization.JsonSerializerContext;
