using System.Text;
using SandboxVM.Core.Runs;
using SandboxVM.Protocol;
using SandboxVM.Runtime.Agent;

namespace SandboxVM.Core.Sessions;

/// <summary>A command to run in a sandbox: <see cref="Argv"/> or a <see cref="Shell"/> line (run by /bin/sh -c), not both.</summary>
public sealed class CommandRunRequest
{
    public List<string>? Argv { get; set; }
    public string? Shell { get; set; }
    /// <summary>An existing directory, absolute or relative to /home/sandbox (the default).</summary>
    public string? Cwd { get; set; }
    public Dictionary<string, string>? Env { get; set; }
    /// <summary>Foreground: default 60 s, at most the template's max_timeout_s. Background: none unless given.</summary>
    public double? TimeoutS { get; set; }
    public bool Background { get; set; }
    /// <summary>Written to stdin, which is then closed. Without it a foreground command's stdin is empty and a background one's stays open.</summary>
    public string? Stdin { get; set; }
}

/// <summary>A command as the caller sees it.</summary>
public sealed class CommandResult
{
    public string Id { get; set; } = "";
    public List<string> Argv { get; set; } = [];
    /// <summary>running, exited, signal, timeout, oom, output_limit, cancelled.</summary>
    public string Status { get; set; } = "running";
    public bool Running => Status == "running";
    public int? ExitCode { get; set; }
    public int? Signal { get; set; }
    public DateTimeOffset StartedAt { get; set; }
    public long DurationMs { get; set; }
    /// <summary>Null in listings.</summary>
    public string? Stdout { get; set; }
    public string? Stderr { get; set; }
    public long StdoutBytes { get; set; }
    public long StderrBytes { get; set; }
    /// <summary>The start of the output was dropped (a background command keeps the last 256 KiB per stream; a foreground one its template's output cap).</summary>
    public bool Truncated { get; set; }
    public bool StdinOpen { get; set; }
}

public sealed partial class SessionManager
{
    /// <summary>A foreground command without timeout_s gets this much (or the template's max when lower).</summary>
    public const double DefaultCommandTimeoutS = 60;

    /// <summary>The longest a background command may be given (it also ends with its sandbox).</summary>
    public const double MaxBackgroundTimeoutS = 24 * 3600;

    /// <summary>How long a wait on a command may last (GET .../commands/{cid}?wait=true).</summary>
    public static readonly TimeSpan MaxCommandWait = TimeSpan.FromSeconds(30);

    /// <summary>What the host gives the agent past a foreground command's timeout before it stops waiting.</summary>
    private static readonly TimeSpan _commandGrace = TimeSpan.FromSeconds(10);

    /// <summary>Grace between SIGTERM and SIGKILL when a command is killed.</summary>
    public const int KillGraceMs = 2000;

    /// <summary>
    /// Runs a command in the sandbox as its user, beside (not queued behind) its runs. Foreground: output
    /// goes to <paramref name="events"/> as it comes (when given) and the result when it ended; the
    /// host caps its output (the template's output_bytes: past it the command is killed) and its time
    /// (timeout + grace, then it is cancelled). Background: the result (running) at once.
    /// </summary>
    public Task<CommandResult> RunCommandAsync(string id, CommandRunRequest request, IRunEvents? events, CancellationToken cancellationToken)
    {
        var session = Get(id);
        var template = session.Template;
        List<string> argv = request switch
        {
            { Argv: { Count: > 0 } a, Shell: null } => a,
            { Argv: null or { Count: 0 }, Shell: { Length: > 0 } line } => ["/bin/sh", "-c", line],
            _ => throw new RunRequestException(ProblemCodes.InvalidCommand, "cmd", "cmd must be a non-empty argv array or a non-empty shell string"),
        };
        if (argv.Any(a => a is null || a.Contains('\0')) || argv[0].Length == 0)
        {
            throw new RunRequestException(ProblemCodes.InvalidCommand, "cmd", "cmd has an empty program name, a null or a NUL byte");
        }
        string cwd = request.Cwd is null ? RunService.Home : CheckPath(request.Cwd);
        double? timeoutS = request.Background
            ? (request.TimeoutS is null ? null : RunService.CheckTimeout(request.TimeoutS, "timeout_s", 0, MaxBackgroundTimeoutS))
            : RunService.CheckTimeout(request.TimeoutS, "timeout_s", Math.Min(DefaultCommandTimeoutS, template.Limits.MaxTimeoutS), template.Limits.MaxTimeoutS);
        var env = new Dictionary<string, string>(template.Language.Env, StringComparer.Ordinal);
        foreach (var (key, value) in request.Env ?? [])
        {
            if (!RunService.EnvName().IsMatch(key) || value is null || value.Contains('\0'))
            {
                throw new RunRequestException(ProblemCodes.InvalidEnv, $"env.{key}", $"environment variable '{key}' has an invalid name or value");
            }
            env[key] = value;
        }
        byte[]? stdin = request.Stdin is null ? null : Encoding.UTF8.GetBytes(request.Stdin);
        int stdinLimit = Math.Min(_options.MaxStdinBytes, CommandRequest.MaxStdinBytes);
        if (stdin is { Length: var n } && n > stdinLimit)
        {
            throw new RunRequestException(ProblemCodes.StdinTooLarge, "stdin", $"stdin is {n} bytes; the limit is {stdinLimit}");
        }
        var agentRequest = new CommandRequest
        {
            // The same per-process cap as runs: a fork bomb meets it while the agent still has room.
            Argv = RunService.WithProcessLimit(argv, template.Limits.Processes)!,
            Cwd = cwd,
            Env = env,
            TimeoutMs = timeoutS is { } t ? (int)Math.Ceiling(t * 1000) : 0,
            Background = request.Background,
            Stdin = stdin,
            OutputLimitBytes = request.Background ? 0 : template.Limits.OutputBytes,
        };
        int wrapped = agentRequest.Argv.Count - argv.Count;

        return UseSessionAsync(id, async s =>
        {
            var agent = s.Vm.Agent;
            if (request.Background)
            {
                var started = await CallCommandAsync(() => agent.StartCommandAsync(agentRequest, NoOutput.Instance, cancellationToken));
                s.CommandSeen(started.Id, started.Running);
                return ToResult(started, wrapped);
            }
            var output = new OutputCollector(template.Limits.OutputBytes);
            if (events is not null)
            {
                output.OnChunk = events.OnOutput;
            }
            using var stop = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
            var running = CallCommandAsync(() => agent.StartCommandAsync(agentRequest, output, stop.Token));
            var deadline = Task.Delay(TimeSpan.FromSeconds(timeoutS!.Value) + _commandGrace, _time, cancellationToken);
            if (await Task.WhenAny(running, output.Runaway, deadline) != running)
            {
                // The agent ignored its own cap or deadline: the host's holds. Cancel kills the command in the agent.
                await stop.CancelAsync();
                if (await Task.WhenAny(running, Task.Delay(_commandGrace, _time, CancellationToken.None)) != running)
                {
                    await EndAsync(s, "its agent did not stop a command");
                    throw new RunRequestException(ProblemCodes.SandboxNotFound, null, $"sandbox '{id}' ended: its agent did not stop a command", RefusalKind.NotFound);
                }
            }
            var info = await running;
            var result = ToResult(info, wrapped);
            result.Stdout = output.Stdout;
            result.Stderr = output.Stderr;
            // The agent stops at the cap exactly: the host's copy is whole, the command's output was not.
            result.Truncated = output.Truncated || info.Reason == TerminationReason.OutputLimit;
            return result;
        });
    }

    /// <summary>The sandbox's commands, oldest first (without output).</summary>
    public Task<List<CommandResult>> ListCommandsAsync(string id) =>
        UseSessionAsync(id, async s =>
        {
            var list = await CallCommandAsync(() => s.Vm.Agent.ListCommandsAsync(CancellationToken.None));
            foreach (var c in list.Commands)
            {
                s.CommandSeen(c.Id, c.Running);
            }
            return list.Commands.Select(c => ToResult(c, Wrapped(c))).ToList();
        });

    /// <summary>
    /// A command's state and the output it kept; with <paramref name="wait"/>, after it ended or the wait (at most
    /// <see cref="MaxCommandWait"/>) passed, or, with <paramref name="outputBeyond"/>, once it has written more than
    /// that many bytes (stdout plus stderr): following a command without polling.
    /// </summary>
    public Task<CommandResult> GetCommandAsync(string id, string commandId, TimeSpan wait, CancellationToken cancellationToken, long? outputBeyond = null) =>
        UseSessionAsync(id, async s =>
        {
            int waitMs = (int)Math.Clamp(wait.TotalMilliseconds, 0, MaxCommandWait.TotalMilliseconds);
            var info = await CallCommandAsync(() => s.Vm.Agent.GetCommandAsync(commandId, waitMs, includeOutput: true, cancellationToken, outputBeyond));
            s.CommandSeen(info.Id, info.Running);
            var result = ToResult(info, Wrapped(info));
            result.Stdout = Encoding.UTF8.GetString(info.Stdout ?? []);
            result.Stderr = Encoding.UTF8.GetString(info.Stderr ?? []);
            result.Truncated = info.StdoutTruncated || info.StderrTruncated;
            return result;
        });

    /// <summary>Writes to a background command's stdin, closing it after when <paramref name="eof"/>.</summary>
    public Task<CommandResult> SendCommandStdinAsync(string id, string commandId, string data, bool eof, CancellationToken cancellationToken)
    {
        Get(id);
        byte[] bytes = Encoding.UTF8.GetBytes(data);
        if (bytes.Length > CommandRequest.MaxStdinBytes)
        {
            throw new RunRequestException(ProblemCodes.StdinTooLarge, "data", $"data is {bytes.Length} bytes; at most {CommandRequest.MaxStdinBytes} per request");
        }
        return UseSessionAsync(id, async s =>
        {
            var info = await CallCommandAsync(() => s.Vm.Agent.WriteCommandStdinAsync(commandId, bytes, eof, cancellationToken));
            s.CommandSeen(info.Id, info.Running);
            return ToResult(info, Wrapped(info));
        });
    }

    /// <summary>
    /// Signals a command's process group. SIGTERM (the default) is followed by SIGKILL after
    /// <see cref="KillGraceMs"/> if it still runs, and the answer comes once it ended; another signal is
    /// only delivered.
    /// </summary>
    public Task<CommandResult> KillCommandAsync(string id, string commandId, string? signal, CancellationToken cancellationToken)
    {
        Get(id);
        int number = ParseSignal(signal);
        return UseSessionAsync(id, async s =>
        {
            var info = await CallCommandAsync(() => s.Vm.Agent.SignalCommandAsync(commandId, number, number == 15 ? KillGraceMs : 0, cancellationToken));
            s.CommandSeen(info.Id, info.Running);
            return ToResult(info, Wrapped(info));
        });
    }

    /// <summary>
    /// Runs <paramref name="call"/> with the agent of sandbox <paramref name="id"/> for port <paramref name="port"/>
    /// (the port proxy), counted as activity and thawed like any call.
    /// </summary>
    public Task<T> UsePortAsync<T>(string id, int port, Func<AgentClient, Task<T>> call)
    {
        Get(id);
        if (port is < 1 or > 65535)
        {
            throw new RunRequestException(ProblemCodes.InvalidPort, "port", $"port {port} is not 1..65535");
        }
        return UseSessionAsync(id, s => call(s.Vm.Agent));
    }

    /// <summary>
    /// Runs <paramref name="call"/> with the agent of sandbox <paramref name="id"/> (resumed first when paused) and the terminal's
    /// program <paramref name="argv"/> under the template's process cap, as commands are, for as long as the terminal lasts: the
    /// sandbox counts as in use meanwhile, so it is not paused or ended for idleness.
    /// </summary>
    public Task<T> UseTerminalAsync<T>(string id, List<string> argv, Func<AgentClient, List<string>, Task<T>> call) =>
        UseSessionAsync(id, s => call(s.Vm.Agent, RunService.WithProcessLimit(argv, s.Template.Limits.Processes)!));

    private static readonly Dictionary<string, int> _signals = new(StringComparer.OrdinalIgnoreCase)
    {
        ["HUP"] = 1, ["INT"] = 2, ["QUIT"] = 3, ["KILL"] = 9, ["USR1"] = 10, ["USR2"] = 12, ["TERM"] = 15, ["CONT"] = 18, ["STOP"] = 19,
    };

    internal static int ParseSignal(string? signal)
    {
        if (string.IsNullOrEmpty(signal))
        {
            return 15;
        }
        string name = signal.StartsWith("SIG", StringComparison.OrdinalIgnoreCase) ? signal[3..] : signal;
        if (_signals.TryGetValue(name, out int n) || (int.TryParse(signal, out n) && n is >= 1 and <= 64))
        {
            return n;
        }
        throw new RunRequestException(ProblemCodes.InvalidSignal, "signal",
            $"'{signal}' is not a signal: use a number 1..64 or one of {string.Join(", ", _signals.Keys.Select(k => "SIG" + k))}");
    }

    /// <summary>Agent errors of command calls as problems.</summary>
    private static async Task<T> CallCommandAsync<T>(Func<Task<T>> call)
    {
        try
        {
            return await call();
        }
        catch (AgentException e)
        {
            throw e.Code switch
            {
                ErrorCodes.CommandNotFound => new RunRequestException(ProblemCodes.CommandNotFound, "cid", e.Message, RefusalKind.NotFound),
                ErrorCodes.TooManyCommands => new RunRequestException(ProblemCodes.TooManyCommands, null, e.Message, RefusalKind.Busy),
                ErrorCodes.StdinClosed => new RunRequestException(ProblemCodes.StdinClosed, null, e.Message, RefusalKind.Conflict),
                ErrorCodes.NotFound => new RunRequestException(ProblemCodes.FileNotFound, "cwd", e.Message, RefusalKind.NotFound),
                ErrorCodes.PermissionDenied => new RunRequestException(ProblemCodes.PermissionDenied, "cwd", e.Message, RefusalKind.Forbidden),
                ErrorCodes.BadRequest or ErrorCodes.IoError => new RunRequestException(ProblemCodes.InvalidCommand, null, e.Message),
                ErrorCodes.UnknownOp => new RunRequestException(ProblemCodes.AgentError, null,
                    "this sandbox's agent predates commands; create a new sandbox", RefusalKind.SandboxFailed),
                _ => new RunRequestException(ProblemCodes.AgentError, null, $"the sandbox's agent failed ({e.Code}): {e.Message}", RefusalKind.SandboxFailed),
            };
        }
    }

    /// <summary>How many argv elements the host put in front (the process cap's prlimit).</summary>
    private static int Wrapped(CommandInfo info) =>
        info.Argv is ["/usr/bin/prlimit", _, "--", ..] ? 3 : 0;

    private static CommandResult ToResult(CommandInfo info, int wrapped) => new()
    {
        Id = info.Id,
        Argv = [.. info.Argv.Skip(wrapped)],
        Status = info.Running ? "running" : info.Reason switch
        {
            TerminationReason.Exited => "exited",
            TerminationReason.Signal => "signal",
            TerminationReason.Timeout => "timeout",
            TerminationReason.Oom => "oom",
            TerminationReason.OutputLimit => "output_limit",
            TerminationReason.Cancelled => "cancelled",
            _ => "exited",
        },
        ExitCode = info.ExitCode,
        Signal = info.Signal,
        StartedAt = DateTimeOffset.FromUnixTimeMilliseconds(info.StartedAtMs),
        DurationMs = info.DurationMs,
        StdoutBytes = info.StdoutBytes,
        StderrBytes = info.StderrBytes,
        Truncated = info.StdoutTruncated || info.StderrTruncated,
        StdinOpen = info.StdinOpen,
    };

    /// <summary>A background start streams nothing.</summary>
    private sealed class NoOutput : IExecObserver
    {
        public static readonly NoOutput Instance = new();

        public void OnStdout(ReadOnlySpan<byte> data)
        {
        }

        public void OnStderr(ReadOnlySpan<byte> data)
        {
        }

        public void OnEvent(ExecEvent e)
        {
        }
    }
}
