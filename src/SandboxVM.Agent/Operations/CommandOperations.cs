using SandboxVM.Agent.Files;
using SandboxVM.Agent.Native;
using SandboxVM.Agent.Processes;
using SandboxVM.Protocol;

namespace SandboxVM.Agent.Operations;

/// <summary>
/// command_start/get/list/stdin/signal: commands that run beside runs, as the sandbox user, each in a
/// process group of its own, started exactly like a step (<see cref="ProcessSupervisor"/>, setpriv when
/// the agent is root, the working directory opened as the user). See README "Commands".
/// </summary>
internal static class CommandOperations
{
    /// <summary>The longest command_get may wait (the host asks for less).</summary>
    private const int MaxWaitMs = 60_000;

    public static async Task StartAsync(OperationContext context, AgentState state)
    {
        var request = Arguments(context);
        Validate(request);
        var who = state.Options.User;
        var (cwd, environment) = Place(state, request.Cwd, request.Env);

        var command = state.Commands.Add(request.Argv, request.OutputCapBytes);
        IStepOutput? live = request.Background ? null : context;
        try
        {
            string? path = await UserFiles.ResolveExecutableAsync(who, request.Argv[0], cwd, environment["PATH"]);
            if (path is null)
            {
                command.FailStart(127, $"{request.Argv[0]}: command not found", live);
            }
            else
            {
                using var cwdHandle = await UserFiles.OpenDirectoryAsync(who, cwd);
                try
                {
                    var child = state.Supervisor.Start(path, request.Argv, [.. environment.Select(kv => $"{kv.Key}={kv.Value}")], cwdHandle, who);
                    command.Begin(child, request.TimeoutMs, request.OutputLimitBytes, request.Stdin, live, keepStdin: request.Background);
                }
                catch (SpawnException e)
                {
                    command.FailStart(e.Errno is Libc.EAccess or Libc.ENoExec ? 126 : 127, e.Message, live);
                }
            }
        }
        catch
        {
            // Refused before anything ran (cwd missing, not a directory, not the user's to enter).
            state.Commands.Remove(command);
            throw;
        }

        if (!request.Background)
        {
            // A foreground command belongs to its request: a Cancel (the caller left) ends it.
            using (context.Cancellation.Register(() => command.Kill(TerminationReason.Cancelled)))
            {
                await command.Finished;
            }
        }
        await context.RespondAsync(command.ToInfo(includeOutput: false), ProtocolJson.Default.CommandInfo);
    }

    public static async Task GetAsync(OperationContext context, AgentState state)
    {
        var request = Arguments(context);
        var command = state.Commands.Get(request.Id);
        if (request.WaitMs > 0 && command.Running)
        {
            using var stop = CancellationTokenSource.CreateLinkedTokenSource(context.Cancellation);
            Task ended = command.Finished;
            if (request.OutputBeyond is long seen)
            {
                // New output answers too: a caller following the command gets it as it is printed, not at its next poll.
                ended = Task.WhenAny(ended, command.OutputBeyondAsync(seen, stop.Token));
            }
            try
            {
                await ended.WaitAsync(TimeSpan.FromMilliseconds(Math.Min(request.WaitMs, MaxWaitMs)), context.Cancellation);
            }
            catch (TimeoutException)
            {
                // Still running: the answer says so.
            }
            await stop.CancelAsync();
        }
        await context.RespondAsync(command.ToInfo(request.IncludeOutput), ProtocolJson.Default.CommandInfo);
    }

    public static async Task ListAsync(OperationContext context, AgentState state) =>
        await context.RespondAsync(new CommandListBody { Commands = [.. state.Commands.List().Select(c => c.ToInfo(includeOutput: false))] },
            ProtocolJson.Default.CommandListBody);

    public static async Task StdinAsync(OperationContext context, AgentState state)
    {
        var request = Arguments(context);
        if (request.Data is { Length: > CommandRequest.MaxStdinBytes })
        {
            throw AgentException.BadRequest($"command.data holds {request.Data.Length} bytes; at most {CommandRequest.MaxStdinBytes} per request");
        }
        var command = state.Commands.Get(request.Id);
        await command.WriteStdinAsync(request.Data ?? [], request.Eof, context.Cancellation);
        await context.RespondAsync(command.ToInfo(includeOutput: false), ProtocolJson.Default.CommandInfo);
    }

    public static async Task SignalAsync(OperationContext context, AgentState state)
    {
        var request = Arguments(context);
        if (request.Signal is < 1 or > 64 || request.KillAfterMs is < 0 or > MaxWaitMs)
        {
            throw AgentException.BadRequest($"command.signal must be 1..64 and kill_after_ms 0..{MaxWaitMs}");
        }
        var command = state.Commands.Get(request.Id);
        await command.SignalAsync(state.Supervisor, request.Signal, TimeSpan.FromMilliseconds(request.KillAfterMs), context.Cancellation);
        await context.RespondAsync(command.ToInfo(includeOutput: false), ProtocolJson.Default.CommandInfo);
    }

    /// <summary>Where a command or terminal runs: its directory (home when empty) and its environment with PATH and HOME unless given.</summary>
    internal static (string Cwd, Dictionary<string, string> Environment) Place(AgentState state, string cwd, Dictionary<string, string> env)
    {
        var environment = new Dictionary<string, string>(env, StringComparer.Ordinal);
        environment.TryAdd("PATH", ExecOperation.DefaultPath);
        environment.TryAdd("HOME", state.Options.Home);
        return (state.ResolvePath(cwd.Length == 0 ? state.Options.Home : cwd), environment);
    }

    private static CommandRequest Arguments(OperationContext context) =>
        context.Request.Command ?? throw AgentException.BadRequest($"{context.Request.Op} needs a 'command' member");

    private static void Validate(CommandRequest request)
    {
        if (request.Argv is not { Count: > 0 } || request.Argv[0].Length == 0)
        {
            throw AgentException.BadRequest("command.argv needs at least a program name");
        }
        if (request.TimeoutMs < 0 || request.OutputLimitBytes < 0 || request.OutputCapBytes is < 0 or > CommandRequest.MaxOutputCapBytes)
        {
            throw AgentException.BadRequest(
                $"command.timeout_ms and output_limit_bytes may not be negative, output_cap_bytes is 0..{CommandRequest.MaxOutputCapBytes}");
        }
        if (request.Stdin is { Length: > CommandRequest.MaxStdinBytes })
        {
            throw AgentException.BadRequest($"command.stdin holds {request.Stdin.Length} bytes; at most {CommandRequest.MaxStdinBytes}");
        }
        // Strings become C strings for execve: an embedded NUL would silently cut them.
        if (request.Argv.Concat(request.Env.Keys).Concat(request.Env.Values).Append(request.Cwd).Any(s => s.Contains('\0', StringComparison.Ordinal)))
        {
            throw AgentException.BadRequest("command strings may not contain NUL");
        }
        if (request.Env.Keys.Any(k => k.Length == 0 || k.Contains('=', StringComparison.Ordinal)))
        {
            throw AgentException.BadRequest("command.env names must be non-empty and without '='");
        }
    }
}
