using System.Diagnostics;
using SandboxVM.Agent.Files;
using SandboxVM.Protocol;

namespace SandboxVM.Agent.Processes;

/// <summary>
/// Keeps the agent's fork server: started by the first run step that asks for one, kept for the life
/// of the agent (so a warm-up run before a VM snapshot leaves it imported in the snapshot), replaced
/// when it died or when a step needs a different one (other interpreter argv, modules or PYTHON*
/// variables). Every way the fork server can fail ends in a plain process run instead.
/// </summary>
internal sealed class ForkServerHost(ProcessSupervisor supervisor)
{
    /// <summary>A start that never came up (or servers that broke this often) is not tried again for the same key.</summary>
    private const int MaxBrokenServersPerKey = 3;

    private readonly Lock _lock = new();
    private readonly HashSet<string> _failedKeys = [];
    private readonly Dictionary<string, int> _brokenCounts = [];
    private ForkServer? _current;
    private string? _startingKey;
    private Task<ForkServer?>? _starting;
    private bool _stopped;

    /// <summary>How long a server may take to import its modules before it is given up.</summary>
    public TimeSpan StartDeadline { get; init; } = TimeSpan.FromSeconds(60);

    /// <summary>
    /// Runs a step as a child of the fork server when it can, else as a plain process. A step waits for
    /// a server that is still starting at most its own timeout (<see cref="ExecLimits.InterpreterWait"/>, not
    /// counted against the program's time), then runs plain while the start goes on.
    /// <paramref name="outputsDir"/>: where the child saves figures (when the plan asks).
    /// </summary>
    public async Task<StepResult> RunAsync(StepSpec spec, ForkPlan plan, string outputsDir, IStepOutput output, bool detectOom,
        CancellationToken cancellationToken)
    {
        string? interpreter = await UserFiles.ResolveExecutableAsync(supervisor.User, plan.Interpreter[0], spec.Cwd, spec.Environment.GetValueOrDefault("PATH"));
        if (interpreter is not null)
        {
            var launch = new ForkServerLaunch(plan.ServerKey(spec.Environment), interpreter, plan.Interpreter, plan.Preload,
                [.. spec.Environment.Select(kv => $"{kv.Key}={kv.Value}")], spec.Cwd);
            var job = plan.Job(spec, outputsDir);
            // A second attempt only after a server turned out broken (killed, wedged): with a fresh one.
            for (int attempt = 0; attempt < 2 && !cancellationToken.IsCancellationRequested; attempt++)
            {
                var server = await GetAsync(launch, ExecLimits.InterpreterWait(spec.TimeoutMs), cancellationToken);
                if (server is null)
                {
                    break;
                }
                long? oomBefore = detectOom ? StepRunner.ReadOomKillCount() : null;
                var stopwatch = Stopwatch.StartNew();
                ForkedStep step;
                try
                {
                    step = await server.StartJobAsync(job, supervisor);
                }
                catch (ForkServerException e)
                {
                    AgentLog.Write($"fork server {server.Pid} did not take the job: {e.Message}");
                    if (!e.ServerBroken)
                    {
                        break;
                    }
                    Discard(server);
                    continue;
                }
                var result = await StepRunner.SuperviseAsync(step, spec, output, oomBefore, stopwatch, cancellationToken);
                result.Forked = true;
                return result;
            }
        }
        return await StepRunner.RunAsync(spec, supervisor, output, detectOom, cancellationToken);
    }

    /// <summary>Kills the server (the agent is exiting); later requests get none.</summary>
    public void StopAll()
    {
        lock (_lock)
        {
            _stopped = true;
            _current?.KillAndClean();
            _current = null;
        }
    }

    /// <summary>A ready server for <paramref name="launch"/>, or null: run plain.</summary>
    private async Task<ForkServer?> GetAsync(ForkServerLaunch launch, TimeSpan maxWait, CancellationToken cancellationToken)
    {
        Task<ForkServer?> starting;
        lock (_lock)
        {
            if (_stopped)
            {
                return null;
            }
            if (_current is { } current)
            {
                if (current.IsAlive && current.Key == launch.Key)
                {
                    return current;
                }
                if (current.IsAlive)
                {
                    AgentLog.Write($"fork server {current.Pid} retired: a step needs another interpreter, modules or PYTHON* variables");
                    current.Retire();
                }
                else
                {
                    var status = current.Exited.Result;
                    AgentLog.Write($"fork server {current.Pid} is gone (exit {status.ExitCode}, signal {status.Signal}); starting a new one");
                }
                _current = null;
            }
            if (_failedKeys.Contains(launch.Key))
            {
                return null;
            }
            if (_starting is not null)
            {
                if (_startingKey != launch.Key)
                {
                    return null; // another kind of server is on its way; this step runs plain meanwhile
                }
                starting = _starting;
            }
            else
            {
                // Not inline: the start must never complete under this lock.
                starting = Task.Run(() => StartAsync(launch), CancellationToken.None);
                _starting = starting;
                _startingKey = launch.Key;
            }
        }
        try
        {
            return await starting.WaitAsync(maxWait, cancellationToken);
        }
        catch (TimeoutException)
        {
            AgentLog.Write($"fork server still starting after {maxWait.TotalMilliseconds:0} ms: this step runs as a plain process");
            return null;
        }
        catch (OperationCanceledException) when (cancellationToken.IsCancellationRequested)
        {
            return null; // the plain path reports the cancel
        }
    }

    private async Task<ForkServer?> StartAsync(ForkServerLaunch launch)
    {
        ForkServer? server = null;
        var stopwatch = Stopwatch.StartNew();
        try
        {
            server = await ForkServer.StartAsync(launch, supervisor, StartDeadline);
            AgentLog.Write($"fork server {server.Pid} ready in {stopwatch.ElapsedMilliseconds} ms (preloaded: {string.Join(", ", launch.Preload)})");
        }
        catch (ForkServerException e)
        {
            AgentLog.Write($"{e.Message}; steps that ask for this fork server run as plain processes");
        }
        lock (_lock)
        {
            _starting = null;
            _startingKey = null;
            if (server is null)
            {
                _failedKeys.Add(launch.Key);
            }
            else if (_stopped)
            {
                server.KillAndClean();
                server = null;
            }
            else
            {
                _current?.Retire();
                _current = server;
            }
        }
        return server;
    }

    /// <summary>Gives up a server that failed a job; a key whose servers keep breaking is not started again.</summary>
    private void Discard(ForkServer server)
    {
        lock (_lock)
        {
            server.Kill();
            if (_current == server)
            {
                _current = null;
            }
            int broken = _brokenCounts[server.Key] = _brokenCounts.GetValueOrDefault(server.Key) + 1;
            if (broken >= MaxBrokenServersPerKey)
            {
                _failedKeys.Add(server.Key);
            }
        }
    }
}
