using System.Diagnostics;
using System.Security.Cryptography;
using System.Text.RegularExpressions;
using Microsoft.Extensions.Logging;
using SandboxVM.Core.Catalog;
using SandboxVM.Core.Pools;
using SandboxVM.Core.Singletons;
using SandboxVM.Core.Templates;
using SandboxVM.Protocol;
using SandboxVM.Runtime;
using SandboxVM.Runtime.Agent;

namespace SandboxVM.Core.Runs;

/// <summary>
/// Executes one-shot runs: validate, wait for a slot, start a sandbox, exec the template's recipe,
/// collect output and artifacts, hand the sandbox back for teardown. Every limit the guest enforces is
/// enforced here too (wall clock, output bytes, memory via the runtime's cgroup).
/// </summary>
public sealed partial class RunService
{
    internal const string Home = "/home/sandbox";
    /// <summary>Where a run's artifacts are written in the sandbox.</summary>
    public const string OutputsDir = "/tmp/outputs";

    /// <summary>Parent of the singleton runs' private directories (root-owned 0711: made so by the guest init, checked by the agent).</summary>
    public const string SingletonRunsDir = SandboxVM.Images.ImageLayout.RunsDir;

    private readonly TemplateCatalog _catalog;
    private readonly PoolManager _pools;
    private readonly SingletonManager? _singletons;
    private readonly VmTracker _tracker;
    private readonly SandboxVmOptions _options;
    private readonly ILogger<RunService> _logger;
    private readonly TimeProvider _time;
    private readonly SemaphoreSlim _slots;
    private int _waiting;

    /// <summary>
    /// <paramref name="time"/> (null: the system clock) times the host's deadlines over a run; the run's
    /// metrics are measured on the real clock whatever it is.
    /// </summary>
    public RunService(TemplateCatalog catalog, PoolManager pools, VmTracker tracker, SandboxVmOptions options, ILogger<RunService> logger,
        SingletonManager? singletons = null, TimeProvider? time = null)
    {
        _time = time ?? TimeProvider.System;
        _catalog = catalog;
        _pools = pools;
        _singletons = singletons;
        _tracker = tracker;
        _options = options;
        _logger = logger;
        _slots = new SemaphoreSlim(options.MaxConcurrentRuns, options.MaxConcurrentRuns);
    }

    public Task<RunResult> RunAsync(RunRequest request, CancellationToken cancellationToken) =>
        RunAsync(request, null, cancellationToken);

    /// <summary>A one-shot run: a sandbox from the pool, the code run in it, the sandbox ended.</summary>
    public async Task<RunResult> RunAsync(RunRequest request, IRunEvents? events, CancellationToken cancellationToken)
    {
        var clock = Stopwatch.StartNew();
        var (template, exec) = Validate(request);
        using var span = RunTracing.StartRun(template.Name, "run");
        if (_singletons is not null && _singletons.IsSingleton(template.Name))
        {
            var singletonResult = await RunInSingletonAsync(template, exec, events, clock, cancellationToken);
            RunTracing.Finish(span, singletonResult);
            return singletonResult;
        }
        using var slot = await TakeSlotTracedAsync(cancellationToken);
        double queueMs = clock.Elapsed.TotalMilliseconds;
        // The VM is discarded after this run: whatever the run started (a setsid daemon) goes before the
        // artifacts are listed, so nothing can change them after they were hashed.
        exec.EndUserProcesses = true;
        // Ending them is tear-down unless there are artifacts to list: the agent then answers at once.
        exec.DiscardAfter = true;
        if (exec.ForkServer is { } fork)
        {
            // In the warm session kernel the clone brings from its snapshot, not in a child forked from
            // the fork server: nothing outlives this run, and a fork of an interpreter with numpy, pandas
            // and matplotlib loaded is the run's largest cost under gVisor (hundreds of milliseconds).
            fork.Persistent = true;
        }
        RunResult? result = null;
        // A second VM only when the first one's connection closed before the guest started anything: the
        // code never ran, so running it elsewhere cannot run it twice (seen on gVisor pool clones, 1 run in
        // a few hundred: "its VM stopped" 140 ms after the take).
        for (int attempt = 0; attempt < 2 && result is null; attempt++)
        {
            LeasedVm? lease = null;
            long acquireStarted = Stopwatch.GetTimestamp();
            try
            {
                using var acquire = RunTracing.StartPhase("acquire");
                lease = await _pools.AcquireAsync(template, cancellationToken);
                acquire?.SetTag("sandboxvm.vm_source", lease.Source.ToString().ToLowerInvariant());
            }
            catch (Exception e) when (e is not OperationCanceledException and not RunRequestException)
            {
                // A refusal (the host's memory floor) is the caller's 503 to retry, not a run that failed.
                LogSandboxFailed(_logger, template.Name, e);
                result = new RunResult { Status = RunStatus.SandboxError, Error = "the sandbox could not be started: " + CallerErrors.Describe(e) };
            }
            if (lease is not null)
            {
                try
                {
                    long execStarted = Stopwatch.GetTimestamp();
                    var outcome = await ExecuteAsync(lease.Vm, template, exec, events, cancellationToken);
                    if (outcome.NeverStarted && attempt == 0)
                    {
                        LogRetriedOnAnotherVm(_logger, lease.Vm.Id, template.Name);
                        continue;
                    }
                    result = outcome.Result;
                    // A fresh sandbox has no earlier state to lose.
                    result.StateReset = false;
                    // What obtaining the sandbox cost this request: near zero from the pool.
                    result.Metrics.StartupMs = lease.AcquireTime.TotalMilliseconds;
                    result.Metrics.VmSource = lease.Source.ToString().ToLowerInvariant();
                    if (result.Metrics.HostPhases is { } phases)
                    {
                        phases[HostPhases.Attach] = Math.Max(0, (Stopwatch.GetElapsedTime(acquireStarted, execStarted) - lease.AcquireTime).TotalMilliseconds);
                    }
                }
                finally
                {
                    _tracker.Release(lease.Vm);
                }
            }
        }
        result ??= new RunResult { Status = RunStatus.SandboxError, Error = "the sandbox could not be started" };
        Finish(result.Metrics, queueMs, clock);
        RunTracing.Finish(span, result);
        return result;
    }

    /// <summary>
    /// A run in the template's one long-lived VM, which other callers share: in a fresh working directory
    /// of its own (outputs, HOME and TMPDIR inside) removed afterwards, and in a VM as a uid of its own
    /// (its slot's): the directory is 0700 in a root-owned 0711 parent, so concurrent runs see neither
    /// each other's files nor (with /proc mounted hidepid) each other's processes. Every process of the
    /// run is killed when it ends, before its artifacts are listed and before the slot goes to the next.
    /// </summary>
    private async Task<RunResult> RunInSingletonAsync(TemplateDefinition template, ExecRequest exec, IRunEvents? events, Stopwatch clock, CancellationToken cancellationToken)
    {
        string dir = $"{SingletonRunsDir}/{Convert.ToHexStringLower(RandomNumberGenerator.GetBytes(8))}";
        exec.Cwd = dir;
        exec.OutputsDir = dir + "/outputs";
        exec.Env["HOME"] = dir;
        exec.Env["TMPDIR"] = dir;
        exec.EndUserProcesses = true;
        var result = await _singletons!.UseAsync(template, async (vm, slot, ct) =>
        {
            exec.User = slot.RunUser;
            double queueMs = clock.Elapsed.TotalMilliseconds;
            RunResult r;
            try
            {
                r = (await ExecuteAsync(vm, template, exec, events, ct)).Result;
            }
            finally
            {
                if (!vm.Exited.IsCompleted)
                {
                    try
                    {
                        await vm.Agent.RemoveAsync(dir, recursive: true, CancellationToken.None).WaitAsync(TimeSpan.FromSeconds(10), _time, CancellationToken.None);
                    }
                    catch (Exception e) when (e is not OperationCanceledException)
                    {
                        // The agent removes what a run user left when that uid runs next.
                        LogCleanupFailed(_logger, dir, template.Name, e);
                    }
                }
            }
            r.Metrics.VmSource = "singleton";
            r.Metrics.QueueMs = queueMs;
            return r;
        }, cancellationToken);
        Finish(result.Metrics, result.Metrics.QueueMs, clock);
        return result;
    }

    /// <summary>
    /// Runs <paramref name="exec"/> in a sandbox the caller keeps (a session): waits for a run slot like
    /// any run, and leaves the VM running afterwards unless it had to be killed.
    /// </summary>
    public async Task<RunOutcome> RunOnVmAsync(IVm vm, TemplateDefinition template, ExecRequest exec, IRunEvents? events, CancellationToken cancellationToken)
    {
        var clock = Stopwatch.StartNew();
        using var span = RunTracing.StartRun(template.Name, "sandbox");
        using var slot = await TakeSlotTracedAsync(cancellationToken);
        double queueMs = clock.Elapsed.TotalMilliseconds;
        var outcome = await ExecuteAsync(vm, template, exec, events, cancellationToken);
        Finish(outcome.Result.Metrics, queueMs, clock);
        RunTracing.Finish(span, outcome.Result);
        return outcome;
    }

    private static void Finish(RunMetrics m, double queueMs, Stopwatch clock)
    {
        m.QueueMs = queueMs;
        m.TotalMs = clock.Elapsed.TotalMilliseconds;
        m.HostMs = Math.Max(0, m.TotalMs - m.QueueMs - m.StartupMs - m.CompileMs - m.RunMs);
        if (m.HostPhases is { } phases)
        {
            phases[HostPhases.Other] = Math.Max(0, m.HostMs - phases.Where(p => p.Key != HostPhases.Other).Sum(p => p.Value));
        }
    }

    /// <summary>The agent's and the host's parts of an exec that ended on its own terms (<see cref="RunMetrics.HostPhases"/>).</summary>
    private static Dictionary<string, double>? ExecPhases(ExecResult r, RunMetrics m, double roundTripMs, double artifactsMs)
    {
        if (r.Timings is not { } t)
        {
            return null;
        }
        // The guest's word: each part is held within the exec's round trip as the host measured it.
        double Guest(double ms) => double.IsFinite(ms) ? Math.Clamp(ms, 0, roundTripMs) : 0;
        return new Dictionary<string, double>(StringComparer.Ordinal)
        {
            [HostPhases.Prepare] = Guest(t.PrepareMs),
            [HostPhases.Steps] = Math.Max(0, Guest(t.StepsMs) - m.CompileMs - m.RunMs),
            [HostPhases.EndProcesses] = Guest(t.EndProcessesMs),
            [HostPhases.List] = Guest(t.ListMs),
            [HostPhases.Channel] = roundTripMs - Guest(t.TotalMs),
            [HostPhases.Artifacts] = artifactsMs,
        };
    }

    private async Task<IDisposable> TakeSlotTracedAsync(CancellationToken cancellationToken)
    {
        using var queue = RunTracing.StartPhase("queue");
        return await TakeSlotAsync(cancellationToken);
    }

    /// <summary>One of the server's concurrent run slots; waiting runs are bounded (429 past the bound).</summary>
    private async Task<IDisposable> TakeSlotAsync(CancellationToken cancellationToken)
    {
        if (Interlocked.Increment(ref _waiting) > _options.MaxQueuedRuns)
        {
            Interlocked.Decrement(ref _waiting);
            throw new RunRequestException(ProblemCodes.Overloaded, null, $"more than {_options.MaxQueuedRuns} runs are waiting; try again later", RefusalKind.Busy);
        }
        try
        {
            await _slots.WaitAsync(cancellationToken);
        }
        finally
        {
            Interlocked.Decrement(ref _waiting);
        }
        return new SlotReleaser(_slots);
    }

    private sealed class SlotReleaser(SemaphoreSlim slots) : IDisposable
    {
        private int _released;

        public void Dispose()
        {
            if (Interlocked.Exchange(ref _released, 1) == 0)
            {
                slots.Release();
            }
        }
    }

    private async Task<RunOutcome> ExecuteAsync(IVm vm, TemplateDefinition template, ExecRequest exec, IRunEvents? events, CancellationToken cancellationToken)
    {
        var output = new OutputCollector(exec.OutputLimitBytes);
        if (events is not null)
        {
            output.OnChunk = events.OnOutput;
        }
        long oomBefore = vm.ReadUsage().OomKills;
        double guestBudgetS = (exec.Compile is null ? 0 : exec.CompileTimeoutMs / 1000.0) + exec.RunTimeoutMs / 1000.0
            // A run through a fork server or kernel may first wait for one that is still starting.
            + (exec.ForkServer is null ? 0 : ExecLimits.InterpreterWait(exec.RunTimeoutMs).TotalSeconds)
            // A kernel run that times out is interrupted and may take this long to end before it is killed.
            + (exec.ForkServer?.Persistent == true ? ExecLimits.KernelInterruptGrace.TotalSeconds : 0);
        var hostDeadline = TimeSpan.FromSeconds(guestBudgetS + _options.HostTimeoutMarginS);
        // One host deadline over the whole run: the exec by hostDeadline, then artifact collection and
        // its file reads by runDeadline (both from now), whatever the guest reports or stalls on.
        var runDeadline = hostDeadline + TimeSpan.FromSeconds(_options.ArtifactTimeoutS);
        using var runExpiry = new CancellationTokenSource(runDeadline, _time);
        using var runTimer = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken, runExpiry.Token);

        using var cancelExec = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
        var execSpan = RunTracing.StartPhase("exec");
        long execStarted = Stopwatch.GetTimestamp();
        Task<ExecResult> execTask = vm.Agent.ExecAsync(exec, output, cancelExec.Token);
        Task deadline = Task.Delay(hostDeadline, _time, cancellationToken);
        Task first = await Task.WhenAny(execTask, output.Runaway, deadline);
        double roundTripMs = Stopwatch.GetElapsedTime(execStarted).TotalMilliseconds;
        execSpan?.Stop();

        if (first == execTask && execTask.IsCompletedSuccessfully)
        {
            var result = Map(execTask.Result, output, vm.ReadUsage().OomKills > oomBefore);
            RunTracing.RecordSteps(execSpan, result.Metrics.CompileMs, result.Metrics.RunMs);
            string? failure;
            long artifactsStarted = Stopwatch.GetTimestamp();
            using (var artifacts = RunTracing.StartPhase("artifacts"))
            {
                failure = await CollectArtifactsAsync(vm, execTask.Result.Artifacts, exec.OutputsDir, result, events, runDeadline, runTimer.Token, cancellationToken);
                artifacts?.SetTag("sandboxvm.artifacts", result.Artifacts.Count);
            }
            result.Metrics.HostPhases = ExecPhases(execTask.Result, result.Metrics, roundTripMs, Stopwatch.GetElapsedTime(artifactsStarted).TotalMilliseconds);
            if (failure is not null)
            {
                // The guest misbehaved after its program ended: what it handed over is not trusted, the sandbox goes.
                LogArtifactsFailed(_logger, template.Name, failure);
                await _tracker.KillAsync(vm);
                result.Status = RunStatus.SandboxError;
                result.Error = failure;
                return new RunOutcome(result, false);
            }
            bool built = execTask.Result.Compile is { Reason: TerminationReason.Exited, ExitCode: 0 } && execTask.Result.Run is not null;
            return new RunOutcome(result, built);
        }

        // From here on the guest did not finish on its own terms: the host decides.
        if (cancellationToken.IsCancellationRequested)
        {
            // The caller went away: the agent was told to cancel (the linked token); a sandbox that
            // lives on must have finished that exec before its next run starts.
            await Task.WhenAny(execTask, Task.Delay(TimeSpan.FromSeconds(5), _time, CancellationToken.None));
            if (!execTask.IsCompleted)
            {
                await _tracker.KillAsync(vm);
            }
            cancellationToken.ThrowIfCancellationRequested();
        }
        await cancelExec.CancelAsync();
        await _tracker.KillAsync(vm);
        bool oom = vm.ReadUsage().OomKills > oomBefore;
        var failed = new RunResult { Stdout = output.Stdout, Stderr = output.Stderr, Output = output.Combined, Truncated = output.Truncated };
        if (first == output.Runaway)
        {
            failed.Status = RunStatus.OutputLimit;
            failed.Truncated = true;
            failed.Error = $"output exceeded {exec.OutputLimitBytes} bytes; the host stopped the sandbox";
        }
        else if (first == deadline)
        {
            failed.Status = RunStatus.Timeout;
            failed.Error = $"no answer from the sandbox within {hostDeadline.TotalSeconds:0.#} s; the host stopped it";
        }
        else if (oom)
        {
            failed.Status = RunStatus.Oom;
            failed.Error = $"the sandbox ran out of memory ({template.MemoryMib} MiB)";
        }
        else
        {
            Exception? e = execTask.Exception?.GetBaseException();
            LogSandboxFailed(_logger, template.Name, e);
            failed.Status = RunStatus.SandboxError;
            failed.Error = "the sandbox failed: " + CallerErrors.Describe(e);
            // Never started: the guest's end closed (no fault of the guest's that the host found: those are
            // hostile, and stay the caller's error) before it said or printed anything.
            return new RunOutcome(failed, false, NeverStarted: !output.Heard && e is AgentDisconnectedException && vm.Agent.FailureReason is null);
        }
        return new RunOutcome(failed, false);
    }

    private static RunResult Map(ExecResult r, OutputCollector output, bool hostSawOom)
    {
        var result = new RunResult
        {
            Stdout = output.Stdout,
            Stderr = output.Stderr,
            Output = output.Combined,
            Truncated = output.Truncated,
            Result = r.Run?.ResultRepr,
            StateReset = r.Run?.StateReset ?? false,
            ResultData = r.Run?.ResultData,
            Displays = r.Run?.Displays,
        };
        var (hostCompile, hostRun) = output.HostStepTimes();
        result.Metrics.CompileMs = Math.Min(r.Compile?.DurationMs ?? 0, hostCompile ?? double.MaxValue);
        result.Metrics.RunMs = Math.Min(r.Run?.DurationMs ?? 0, hostRun ?? double.MaxValue);
        bool compileFailed = r.Compile is { } c && (c.Reason != TerminationReason.Exited || c.ExitCode != 0);
        StepResult? step = compileFailed ? r.Compile : r.Run;
        if (step is null)
        {
            result.Status = RunStatus.SandboxError;
            result.Error = "the agent reported neither a compile nor a run step";
            return result;
        }
        result.ExitCode = step.Reason switch
        {
            TerminationReason.Exited => step.ExitCode,
            // Shell convention, so callers see 139 for a segfault as they would in a terminal.
            TerminationReason.Signal when step.Signal is int s => 128 + s,
            _ => null,
        };
        result.Status = step.Reason switch
        {
            TerminationReason.Timeout or TerminationReason.Cancelled => RunStatus.Timeout,
            TerminationReason.OutputLimit => RunStatus.OutputLimit,
            TerminationReason.Oom => RunStatus.Oom,
            // A SIGKILL nobody asked for, while the cgroup counted an OOM kill, is the OOM killer.
            TerminationReason.Signal when hostSawOom && step.Signal == 9 => RunStatus.Oom,
            // Under gVisor the host's OOM killer kills the sandbox's stub process, and the sentry ends the
            // program with exit code 1 (runsc 20240729; measured): a failure while the cgroup counted one is OOM.
            TerminationReason.Exited when hostSawOom && step.ExitCode != 0 => RunStatus.Oom,
            _ when compileFailed => RunStatus.CompileError,
            TerminationReason.Exited when step.ExitCode == 0 => RunStatus.Ok,
            _ => RunStatus.Error,
        };
        if (result.Status == RunStatus.OutputLimit)
        {
            result.Truncated = true;
        }
        if (result.Status == RunStatus.Oom)
        {
            result.ExitCode = null;
        }
        return result;
    }

    /// <summary>
    /// Adds the run's artifacts to <paramref name="result"/>, reading small ones inline, each read capped at
    /// the size the agent listed (and the inline limits), all of it by <paramref name="deadline"/>. Null when
    /// done; otherwise why the sandbox failed (it sent more than it listed, stalled, or broke the channel).
    /// </summary>
    private async Task<string?> CollectArtifactsAsync(IVm vm, List<ArtifactInfo>? artifacts, string outputsDir, RunResult result, IRunEvents? events,
        TimeSpan runDeadline, CancellationToken deadline, CancellationToken cancellationToken)
    {
        long inlineBudget = _options.ArtifactInlineTotalBytes;
        foreach (var a in (artifacts ?? []).OrderBy(a => a.Path, StringComparer.Ordinal))
        {
            if (a is null || string.IsNullOrEmpty(a.Path) || a.Size < 0)
            {
                return "the agent listed an artifact without a path or with a negative size";
            }
            string relative = a.Path.StartsWith(outputsDir + "/", StringComparison.Ordinal) ? a.Path[(outputsDir.Length + 1)..] : a.Path;
            var artifact = new RunArtifact { Path = relative, Mime = MimeTypes.For(relative), Size = a.Size, Sha256 = a.Sha256 };
            if (a.Size <= _options.ArtifactInlineMaxBytes && a.Size <= inlineBudget)
            {
                // Grown as bytes arrive: the listed size is the guest's word, not an allocation to make on its behalf.
                using var bytes = new MemoryStream((int)Math.Min(a.Size, Frame.ChunkSize));
                try
                {
                    await vm.Agent.ReadFileAsync(a.Path, bytes, a.Size, deadline);
                }
                catch (AgentReadLimitException)
                {
                    return $"artifact '{relative}' sent more than the {a.Size} bytes the agent listed for it; the host stopped the sandbox";
                }
                catch (OperationCanceledException) when (!cancellationToken.IsCancellationRequested)
                {
                    return $"the sandbox did not hand over its artifacts within the run's deadline ({runDeadline.TotalSeconds:0.#} s); the host stopped it";
                }
                catch (Exception e) when (e is AgentException or AgentDisconnectedException or TimeoutException)
                {
                    return $"artifact '{relative}' could not be read: {e.Message}";
                }
                // Sizes and hashes the caller sees are the host's, computed on the bytes it got.
                artifact.Size = bytes.Length;
                artifact.Sha256 = Convert.ToHexStringLower(SHA256.HashData(bytes.GetBuffer().AsSpan(0, (int)bytes.Length)));
                artifact.ContentBase64 = Convert.ToBase64String(bytes.GetBuffer(), 0, (int)bytes.Length);
                inlineBudget -= bytes.Length;
            }
            result.Artifacts.Add(artifact);
            events?.OnArtifact(artifact);
        }
        return null;
    }

    [GeneratedRegex("^[A-Za-z_][A-Za-z0-9_]*$")]
    internal static partial Regex EnvName();

    internal (TemplateDefinition Template, ExecRequest Exec) Validate(RunRequest request)
    {
        if (string.IsNullOrEmpty(request.Template))
        {
            throw new RunRequestException(ProblemCodes.MissingField, "template", "field 'template' is required");
        }
        var template = FindTemplate(request.Template);
        return (template, ValidateFor(template, request));
    }

    /// <summary>The available template <paramref name="name"/>, or a problem saying why there is none.</summary>
    public TemplateDefinition FindTemplate(string name)
    {
        var template = _catalog.Find(name)
            ?? throw new RunRequestException(ProblemCodes.UnknownTemplate, "template",
                $"unknown template '{name}'; available: {string.Join(", ", _catalog.All.Select(t => t.Name))}");
        if (TemplateCatalog.UnavailableReason(template) is { } why)
        {
            throw new RunRequestException(ProblemCodes.TemplateUnavailable, "template", $"template '{template.Name}' is unavailable: {why}", RefusalKind.Conflict);
        }
        return template;
    }

    /// <summary>Checks a run request's code, stdin, timeouts and env against <paramref name="template"/>; the agent's exec for it.</summary>
    public ExecRequest ValidateFor(TemplateDefinition template, RunRequest request)
    {
        if (request.Code is null)
        {
            throw new RunRequestException(ProblemCodes.MissingField, "code", "field 'code' is required");
        }
        if (string.IsNullOrWhiteSpace(request.Code))
        {
            throw new RunRequestException(ProblemCodes.EmptyCode, "code", "field 'code' is empty");
        }
        int codeBytes = System.Text.Encoding.UTF8.GetByteCount(request.Code);
        if (codeBytes > _options.MaxCodeBytes)
        {
            throw new RunRequestException(ProblemCodes.CodeTooLarge, "code", $"code is {codeBytes} bytes; the limit is {_options.MaxCodeBytes}");
        }
        if (request.Stdin is { } stdin && System.Text.Encoding.UTF8.GetByteCount(stdin) > _options.MaxStdinBytes)
        {
            throw new RunRequestException(ProblemCodes.StdinTooLarge, "stdin", $"stdin is over the limit of {_options.MaxStdinBytes} bytes");
        }
        double runTimeout = CheckTimeout(request.TimeoutS, "timeout_s", template.Limits.RunTimeoutS, template.Limits.MaxTimeoutS);
        double compileTimeout = CheckTimeout(request.CompileTimeoutS, "compile_timeout_s", template.Limits.CompileTimeoutS, template.Limits.MaxTimeoutS);
        var env = new Dictionary<string, string>(template.Language.Env, StringComparer.Ordinal);
        foreach (var (key, value) in request.Env ?? [])
        {
            if (!EnvName().IsMatch(key) || value is null || value.Contains('\0'))
            {
                throw new RunRequestException(ProblemCodes.InvalidEnv, $"env.{key}", $"environment variable '{key}' has an invalid name or value");
            }
            env[key] = value;
        }
        return BuildExec(template, request.Code, request.Stdin, env, runTimeout, compileTimeout);
    }

    /// <summary>The agent's exec for running <paramref name="code"/> with the template's recipe.</summary>
    internal static ExecRequest BuildExec(TemplateDefinition template, string code, string? stdin, Dictionary<string, string> env,
        double runTimeoutS, double compileTimeoutS) => new()
    {
        Cwd = Home,
        Files = new() { [template.Language.SourceFile] = code },
        Compile = WithProcessLimit(template.Language.Compile, template.Limits.Processes),
        Run = WithProcessLimit(template.Language.Run, template.Limits.Processes)!,
        Env = env,
        Stdin = stdin,
        CompileTimeoutMs = (int)(compileTimeoutS * 1000),
        RunTimeoutMs = (int)(runTimeoutS * 1000),
        OutputLimitBytes = template.Limits.OutputBytes,
        OutputsDir = OutputsDir,
        // A warm interpreter in the sandbox forks per run instead of starting and importing anew.
        ForkServer = template.Language.ForkServer is { } fork
            ? new ForkServerRequest
            {
                Preload = [.. fork.Preload],
                Script = template.Language.SourceFile,
                // Figures left open at the end come back as images in text+images templates.
                SaveFigures = template.Output == OutputMode.TextAndImages,
            }
            : null,
    };

    /// <summary>
    /// Caps the processes a step may create below the sandbox's own cgroup cap, so a fork bomb meets
    /// its limit while the agent, which shares the sandbox, still has room to report it.
    /// </summary>
    internal static List<string>? WithProcessLimit(List<string>? argv, int processes) =>
        argv is null ? null : ["/usr/bin/prlimit", $"--nproc={processes}", "--", .. argv];

    internal static double CheckTimeout(double? requested, string field, double fallback, double max)
    {
        if (requested is not { } v)
        {
            return fallback;
        }
        if (double.IsNaN(v) || v <= 0 || v > max)
        {
            throw new RunRequestException(ProblemCodes.TimeoutOutOfRange, field, $"{field} must be greater than 0 and at most {max} seconds (got {v})");
        }
        return v;
    }

    [LoggerMessage(Level = LogLevel.Warning, Message = "cannot remove {Dir} in the {Template} singleton")]
    private static partial void LogCleanupFailed(ILogger logger, string dir, string template, Exception e);

    [LoggerMessage(Level = LogLevel.Warning, Message = "sandbox for template {Template} failed while handing over artifacts: {Reason}")]
    private static partial void LogArtifactsFailed(ILogger logger, string template, string reason);

    [LoggerMessage(Level = LogLevel.Warning, Message = "sandbox for template {Template} failed")]
    private static partial void LogSandboxFailed(ILogger logger, string template, Exception? e);

    [LoggerMessage(Level = LogLevel.Warning, Message = "sandbox {Vm} of {Template} closed before its run started anything: running it on another")]
    private static partial void LogRetriedOnAnotherVm(ILogger logger, string vm, string template);
}
