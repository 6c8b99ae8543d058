using System.Diagnostics;
using System.Text;
using Microsoft.Win32.SafeHandles;
using SandboxVM.Agent.Files;
using SandboxVM.Agent.Processes;
using SandboxVM.Protocol;

namespace SandboxVM.Agent.Operations;

/// <summary>
/// exec: make the working directory, write the files, empty the outputs directory (or, with keep_outputs,
/// note what it holds), compile (optional), run, end the user's processes (when asked), list artifacts
/// (with keep_outputs: only files new or changed since). Every file operation is done as the user the
/// steps run as (<see cref="UserFiles"/>); with exec.user, that is a run user in a fresh private directory.
/// </summary>
internal static class ExecOperation
{
    public const string DefaultPath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

    private static readonly UTF8Encoding _utf8 = new(encoderShouldEmitUTF8Identifier: false);

    public static async Task RunAsync(OperationContext context, AgentState state)
    {
        long started = Stopwatch.GetTimestamp();
        var request = context.Request.Exec ?? throw AgentException.BadRequest("exec needs an 'exec' member");
        Validate(request, state);
        ForkPlan? forkPlan = null;
        if (request.ForkServer is { } fork)
        {
            forkPlan = ForkPlan.Create(request.Run, fork, out string? error) ?? throw AgentException.BadRequest(error!);
            if (fork.Persistent)
            {
                state.Kernels.For(fork.Context); // a bad or one-too-many context is refused before anything is written
            }
        }
        var cancellation = context.Cancellation;
        string cwd = state.ResolvePath(request.Cwd);
        string outputs = Path.GetFullPath(request.OutputsDir, cwd);
        if (outputs == "/" || Contains(outputs, cwd) || Contains(outputs, state.Options.Home))
        {
            throw AgentException.BadRequest($"outputs_dir {outputs} holds the working or home directory, which emptying it would delete");
        }

        SandboxUser who;
        IDisposable? claim = null;
        SafeFileHandle? runDirectory = null;
        if (request.User is int uid)
        {
            // A run of its own in a VM others share: a fresh private directory, nothing of an earlier run
            // of this uid left, and never the fork server (it runs as the sandbox user).
            claim = state.RunDirectories.Claim(uid);
            who = SandboxUser.Of(uid, uid);
            try
            {
                await UserProcesses.EndAllAsync(who, state.Supervisor);
                await state.RunDirectories.RemoveLeftoversAsync(uid);
                runDirectory = await state.RunDirectories.CreateAsync(cwd, uid);
            }
            catch
            {
                claim.Dispose();
                throw;
            }
            if (forkPlan is not null)
            {
                AgentLog.Write($"exec {context.Id} runs as user {uid}: the fork server is not used");
                forkPlan = null;
            }
        }
        else
        {
            who = state.IdentityFor(cwd);
        }
        using (claim)
        {
            SafeFileHandle cwdHandle;
            Dictionary<string, FileStamp>? outputsBefore;
            try
            {
                (cwdHandle, outputsBefore) = await UserFiles.PrepareExecAsync(who, cwd, runDirectory,
                    [.. request.Files.Select(f => (Path.GetFullPath(f.Key, cwd), _utf8.GetBytes(f.Value)))], outputs, request.KeepOutputs);
            }
            catch
            {
                runDirectory?.Dispose();
                throw;
            }
            using (cwdHandle)
            {
                var timings = new ExecTimings { PrepareMs = Stopwatch.GetElapsedTime(started).TotalMilliseconds };
                var result = await RunStepsAsync(context, state, request, who, cwd, cwdHandle, outputs, outputsBefore, forkPlan, timings, cancellation);
                timings.TotalMs = Stopwatch.GetElapsedTime(started).TotalMilliseconds;
                result.Timings = timings;
                await context.RespondAsync(result, ProtocolJson.Default.ExecResult);
            }
        }
    }

    private static async Task<ExecResult> RunStepsAsync(OperationContext context, AgentState state, ExecRequest request, SandboxUser who,
        string cwd, SafeFileHandle cwdHandle, string outputs, Dictionary<string, FileStamp>? outputsBefore, ForkPlan? forkPlan,
        ExecTimings timings, CancellationToken cancellation)
    {
        var environment = new Dictionary<string, string>(request.Env, StringComparer.Ordinal);
        environment.TryAdd("PATH", DefaultPath);
        environment.TryAdd("HOME", state.Options.Home);

        var result = new ExecResult();
        bool run = true;
        long phase = Stopwatch.GetTimestamp();
        if (request.Compile is { Count: > 0 } compile)
        {
            await context.SendEventAsync("compile_started", CancellationToken.None);
            var spec = new StepSpec(compile, cwd, cwdHandle, who, environment, null, request.CompileTimeoutMs, request.OutputLimitBytes);
            result.Compile = await StepRunner.RunAsync(spec, state.Supervisor, context, state.Options.VmMode, cancellation);
            run = result.Compile is { Reason: TerminationReason.Exited, ExitCode: 0 };
        }
        if (run)
        {
            await context.SendEventAsync("run_started", CancellationToken.None);
            byte[]? stdin = request.Stdin is null ? null : _utf8.GetBytes(request.Stdin);
            var spec = new StepSpec(request.Run, cwd, cwdHandle, who, environment, stdin, request.RunTimeoutMs, request.OutputLimitBytes);
            result.Run = forkPlan switch
            {
                null => await StepRunner.RunAsync(spec, state.Supervisor, context, state.Options.VmMode, cancellation),
                { Persistent: true } => await state.Kernels.For(request.ForkServer!.Context).RunAsync(spec, forkPlan, outputs, context, state.Options.VmMode, cancellation),
                _ => await state.ForkServers.RunAsync(spec, forkPlan, outputs, context, state.Options.VmMode, cancellation),
            };
        }
        timings.StepsMs = Stopwatch.GetElapsedTime(phase).TotalMilliseconds;
        phase = Stopwatch.GetTimestamp();
        if (request.EndUserProcesses)
        {
            // Before the listing: nothing the run started may change the outputs after they were hashed.
            // In a one-shot VM or gVisor sandbox everything but the agent is the sandbox user's: kill(-1) from the agent does.
            bool everyoneElse = UserProcesses.IsSandboxInit && request.User is null && who.Uid == state.Options.User.Uid && !state.RunDirectories.AnyBusy;
            if (everyoneElse && request.DiscardAfter && await NothingToListAfterStopAsync(who, outputs, outputsBefore))
            {
                timings.EndProcessesMs = Stopwatch.GetElapsedTime(phase).TotalMilliseconds;
                return result;
            }
            int ended = await UserProcesses.EndAllAsync(who, state.Supervisor, everyoneElse);
            if (ended > 0)
            {
                AgentLog.Write($"exec {context.Id}: ended {ended} processes of {who} left after the run");
            }
        }
        timings.EndProcessesMs = Stopwatch.GetElapsedTime(phase).TotalMilliseconds;
        phase = Stopwatch.GetTimestamp();
        // Listed even after a cancel: the caller may still want what was written.
        result.Artifacts = await UserFiles.ListArtifactsAsync(who, outputs, CancellationToken.None, outputsBefore);
        timings.ListMs = Stopwatch.GetElapsedTime(phase).TotalMilliseconds;
        return result;
    }

    /// <summary>
    /// A discarded sandbox whose init is the agent: stops every other process (kill(-1, SIGSTOP)) once, then
    /// true when the outputs hold no file to list. The answer (no artifacts) then needs nothing more from
    /// those processes, and the host's tear-down of the sandbox kills them. Stopped, not killed: a SIGKILL
    /// made the sentry tear the warm kernel down (unmap its 100+ MB) on the sandbox's CPU while the agent
    /// answered; the host's kill of the whole sandbox frees it after the answer. A process cannot run user
    /// code once SIGSTOP is pending (it can be neither caught nor ignored, and every process that could send
    /// SIGCONT is stopped by the same call), so no file appears after this look. False: they are killed and
    /// waited for before the listing, as always.
    /// </summary>
    private static async Task<bool> NothingToListAfterStopAsync(SandboxUser who, string outputs, Dictionary<string, FileStamp>? before)
    {
        UserProcesses.StopEveryoneElseOnce();
        return !await UserFiles.HoldsArtifactsAsync(who, outputs, before);
    }

    private static void Validate(ExecRequest request, AgentState state)
    {
        if (request.User is int user)
        {
            if (user is < ProtocolInfo.RunUserFirst or > ProtocolInfo.RunUserLast)
            {
                throw AgentException.BadRequest(
                    $"exec.user {user} is not a run user ({ProtocolInfo.RunUserFirst}..{ProtocolInfo.RunUserLast})");
            }
            if (!state.Options.User.Switches)
            {
                throw AgentException.BadRequest($"exec.user {user} needs an agent running as root (this one runs steps as {state.Options.User})");
            }
        }
        if ((request.EndUserProcesses || request.User is not null) && !UserProcesses.CanEnd)
        {
            throw AgentException.BadRequest(UserProcesses.CannotEndReason);
        }
        if (request.Run is not { Count: > 0 } || request.Run[0].Length == 0)
        {
            throw AgentException.BadRequest("exec.run needs at least a program name");
        }
        if (request.Compile is { Count: > 0 } && request.Compile[0].Length == 0)
        {
            throw AgentException.BadRequest("exec.compile starts with an empty program name");
        }
        if (request.RunTimeoutMs <= 0 || request.CompileTimeoutMs <= 0 || request.OutputLimitBytes < 0)
        {
            throw AgentException.BadRequest("timeouts must be positive and output_limit_bytes not negative");
        }
        if (string.IsNullOrEmpty(request.OutputsDir))
        {
            throw AgentException.BadRequest("exec.outputs_dir is empty");
        }
        // Strings become C strings for execve: an embedded NUL would silently cut them.
        IEnumerable<string> strings = request.Run
            .Concat(request.Compile ?? [])
            .Concat(request.Env.Keys)
            .Concat(request.Env.Values)
            .Concat(request.Files.Keys)
            .Concat(request.ForkServer?.Preload ?? [])
            .Append(request.ForkServer?.Script ?? "")
            .Append(request.Cwd);
        if (strings.Any(s => s.Contains('\0', StringComparison.Ordinal)))
        {
            throw AgentException.BadRequest("exec strings may not contain NUL");
        }
        if (request.Env.Keys.Any(k => k.Length == 0 || k.Contains('=', StringComparison.Ordinal)))
        {
            throw AgentException.BadRequest("exec.env names must be non-empty and without '='");
        }
    }

    /// <summary>True when <paramref name="path"/> is <paramref name="dir"/> or lies under it.</summary>
    private static bool Contains(string dir, string path) =>
        path == dir || path.StartsWith(dir.EndsWith('/') ? dir : dir + "/", StringComparison.Ordinal);
}
