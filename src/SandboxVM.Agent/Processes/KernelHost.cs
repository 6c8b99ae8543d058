using System.Diagnostics;
using SandboxVM.Agent.Files;
using SandboxVM.Protocol;

namespace SandboxVM.Agent.Processes;

/// <summary>
/// Keeps the agent's kernel: one long-lived Python interpreter (forkserver.py started with
/// <c>--kernel</c>) that runs persistent run steps in one <c>__main__</c> namespace, one at a time.
/// It is kept apart from the fork server, under its own key (same interpreter argv, preloads and
/// PYTHON* variables as a fork server would have), so one-shot forked runs never see its state.
/// A run that kills it (timeout, output limit, cancel) or a kernel that died loses the state; the next
/// persistent run starts a new kernel and reports <see cref="StepResult.StateReset"/>. Every way the
/// kernel cannot be used ends in a plain process run (state reset, no result repr, no figures).
/// One per context (<see cref="KernelContexts"/>): <paramref name="context"/> is part of its key, so
/// contexts never share a process.
/// </summary>
internal sealed class KernelHost(ProcessSupervisor supervisor, string context = "")
{
    private const string KeyPrefix = "kernel\0";

    /// <summary>Persistent runs take turns: the kernel runs one job at a time.</summary>
    private readonly SemaphoreSlim _turn = new(1, 1);
    private readonly Lock _lock = new();
    private ForkServer? _kernel;
    /// <summary>The current kernel has taken a job: its namespace is no longer fresh.</summary>
    private bool _kernelUsed;
    private Task<ForkServer?>? _starting;
    private string? _startingKey;
    /// <summary>Bumped by every start and by <see cref="StopAll"/>: only the latest start may become the kernel.</summary>
    private int _generation;
    private bool _stopped;

    /// <summary>How long a kernel may take to import its modules before it is given up.</summary>
    public TimeSpan StartDeadline { get; init; } = TimeSpan.FromSeconds(60);

    /// <summary>
    /// Runs a persistent step in the kernel when it can, else as a plain process. Waits for an earlier
    /// persistent run to end first (that wait is not part of the step's timeout); waits for a kernel
    /// that is starting at most the step's own timeout, then runs plain while the start goes on.
    /// </summary>
    public async Task<StepResult> RunAsync(StepSpec spec, ForkPlan plan, string outputsDir, IStepOutput output, bool detectOom,
        CancellationToken cancellationToken)
    {
        try
        {
            await _turn.WaitAsync(cancellationToken);
        }
        catch (OperationCanceledException)
        {
            return new StepResult { Reason = TerminationReason.Cancelled };
        }
        try
        {
            return await RunTurnAsync(spec, plan, outputsDir, output, detectOom, cancellationToken);
        }
        finally
        {
            _turn.Release();
        }
    }

    /// <summary>Kills the kernel (the agent is exiting); later requests get none.</summary>
    public void StopAll()
    {
        lock (_lock)
        {
            _stopped = true;
            _generation++;
            _kernel?.KillAndClean();
            _kernel = null;
        }
    }

    private async Task<StepResult> RunTurnAsync(StepSpec spec, ForkPlan plan, string outputsDir, IStepOutput output, bool detectOom,
        CancellationToken cancellationToken)
    {
        string? interpreter = await UserFiles.ResolveExecutableAsync(supervisor.User, plan.Interpreter[0], spec.Cwd, spec.Environment.GetValueOrDefault("PATH"));
        if (interpreter is not null)
        {
            var launch = new ForkServerLaunch(KeyPrefix + context + "\0" + plan.ServerKey(spec.Environment), interpreter, plan.Interpreter, plan.Preload,
                [.. spec.Environment.Select(kv => $"{kv.Key}={kv.Value}")], spec.Cwd, Kernel: true);
            var job = plan.Job(spec, outputsDir);
            // A second attempt only after a kernel turned out broken before it ran anything: with a fresh one.
            for (int attempt = 0; attempt < 2 && !cancellationToken.IsCancellationRequested; attempt++)
            {
                // A kernel that is still starting is waited for at most the step's own timeout, and that
                // wait is not the program's time: a plain run after it gets the whole timeout (the
                // host's deadline counts both, see ExecLimits.InterpreterWait).
                var (kernel, fresh) = await GetAsync(launch, ExecLimits.InterpreterWait(spec.TimeoutMs), cancellationToken);
                if (kernel is null)
                {
                    break;
                }
                long? oomBefore = detectOom ? StepRunner.ReadOomKillCount() : null;
                var stopwatch = Stopwatch.StartNew();
                KernelStep step;
                try
                {
                    step = await kernel.StartKernelRunAsync(job, supervisor);
                }
                catch (ForkServerException e)
                {
                    AgentLog.Write($"{kernel.Name} did not take the job: {e.Message}");
                    if (!e.ServerBroken)
                    {
                        break;
                    }
                    Discard(kernel);
                    continue;
                }
                MarkUsed(kernel);
                var result = await StepRunner.SuperviseAsync(step, spec, output, oomBefore, stopwatch, cancellationToken);
                // Forked: the run did not start a process of its own (it ran in the warm kernel).
                result.Forked = true;
                result.StateReset = fresh;
                bool answered = result.Reason == TerminationReason.Exited && kernel.IsAlive;
                result.ResultRepr = answered ? step.ResultRepr : null;
                result.ResultData = answered ? step.ResultData : null;
                result.Displays = answered && step.Displays.Count > 0 ? step.Displays : null;
                if (!kernel.IsAlive)
                {
                    // Started now, not by the next run: it waits for imports (seconds under TCG) otherwise.
                    AgentLog.Write($"{kernel.Name} ended with its run ({result.Reason}): starting a new kernel for the next persistent run");
                    StartAhead(launch);
                }
                return result;
            }
        }
        var plain = await StepRunner.RunAsync(spec, supervisor, output, detectOom, cancellationToken);
        plain.StateReset = true;
        return plain;
    }

    /// <summary>Starts a kernel for <paramref name="launch"/> unless one lives or is starting; the next run takes it.</summary>
    private void StartAhead(ForkServerLaunch launch)
    {
        lock (_lock)
        {
            if (_stopped || _starting is not null || _kernel is { IsAlive: true })
            {
                return;
            }
            _kernel = null;
            int generation = ++_generation;
            _starting = Task.Run(() => StartAsync(launch, generation), CancellationToken.None);
            _startingKey = launch.Key;
        }
    }

    /// <summary>A ready kernel for <paramref name="launch"/> and whether it has run nothing yet, or null: run plain.</summary>
    private async Task<(ForkServer? Kernel, bool Fresh)> GetAsync(ForkServerLaunch launch, TimeSpan maxWait, CancellationToken cancellationToken)
    {
        Task<ForkServer?> starting;
        lock (_lock)
        {
            if (_stopped)
            {
                return (null, false);
            }
            if (_kernel is { } current)
            {
                if (current.IsAlive && current.Key == launch.Key)
                {
                    return (current, !_kernelUsed);
                }
                if (current.IsAlive)
                {
                    // Its state belongs to another interpreter setup: nothing to keep.
                    AgentLog.Write($"{current.Name} killed: a persistent run needs another interpreter, modules or PYTHON* variables");
                    current.Kill();
                }
                else
                {
                    var status = current.Exited.Result;
                    AgentLog.Write($"{current.Name} is gone (exit {status.ExitCode}, signal {status.Signal}); starting a new one");
                }
                _kernel = null;
            }
            if (_starting is not null && _startingKey == launch.Key)
            {
                starting = _starting;
            }
            else
            {
                // Not inline: the start must never complete under this lock. A start for another key
                // still on its way is superseded (it kills itself when it comes up).
                int generation = ++_generation;
                starting = Task.Run(() => StartAsync(launch, generation), CancellationToken.None);
                _starting = starting;
                _startingKey = launch.Key;
            }
        }
        ForkServer? kernel;
        try
        {
            kernel = await starting.WaitAsync(maxWait, cancellationToken);
        }
        catch (TimeoutException)
        {
            AgentLog.Write($"kernel still starting after {maxWait.TotalMilliseconds:0} ms: this run is a plain process");
            return (null, false);
        }
        catch (OperationCanceledException) when (cancellationToken.IsCancellationRequested)
        {
            return (null, false); // the plain path reports the cancel
        }
        lock (_lock)
        {
            return kernel is not null && kernel == _kernel ? (kernel, !_kernelUsed) : (null, false);
        }
    }

    private async Task<ForkServer?> StartAsync(ForkServerLaunch launch, int generation)
    {
        ForkServer? kernel = null;
        var stopwatch = Stopwatch.StartNew();
        try
        {
            kernel = await ForkServer.StartAsync(launch, supervisor, StartDeadline);
            AgentLog.Write($"{kernel.Name} ready in {stopwatch.ElapsedMilliseconds} ms (preloaded: {string.Join(", ", launch.Preload)})");
        }
        catch (ForkServerException e)
        {
            AgentLog.Write($"{e.Message}; persistent runs are plain processes until a kernel starts");
        }
        lock (_lock)
        {
            if (generation != _generation)
            {
                kernel?.KillAndClean(); // superseded by a start for another key, or the agent is stopping
                return null;
            }
            _starting = null;
            _startingKey = null;
            if (kernel is not null)
            {
                _kernel?.Kill();
                _kernel = kernel;
                _kernelUsed = false;
            }
        }
        return kernel;
    }

    private void MarkUsed(ForkServer kernel)
    {
        lock (_lock)
        {
            if (_kernel == kernel)
            {
                _kernelUsed = true;
            }
        }
    }

    /// <summary>Gives up a kernel that could not take a job.</summary>
    private void Discard(ForkServer kernel)
    {
        lock (_lock)
        {
            kernel.Kill();
            if (_kernel == kernel)
            {
                _kernel = null;
            }
        }
    }
}
