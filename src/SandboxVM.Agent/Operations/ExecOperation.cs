using System.Text;
using SandboxVM.Agent.Processes;
using SandboxVM.Protocol;

namespace SandboxVM.Agent.Operations;

/// <summary>
/// exec: write the files, empty the outputs directory (or, with keep_outputs, note what it holds),
/// compile (optional), run, list artifacts (with keep_outputs: only files new or changed since).
/// Directories and files it creates belong to the user the steps run as (<see cref="SandboxUser"/>).
/// </summary>
internal static class ExecOperation
{
    public const string DefaultPath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

    private static readonly UTF8Encoding _utf8 = new(encoderShouldEmitUTF8Identifier: false);

    public static async Task RunAsync(OperationContext context, AgentState state)
    {
        var request = context.Request.Exec ?? throw AgentException.BadRequest("exec needs an 'exec' member");
        Validate(request);
        ForkPlan? forkPlan = null;
        if (request.ForkServer is { } fork)
        {
            forkPlan = ForkPlan.Create(request.Run, fork, out string? error) ?? throw AgentException.BadRequest(error!);
        }
        var cancellation = context.Cancellation;

        var user = state.Options.User;
        string cwd = state.ResolvePath(request.Cwd);
        CreateDirectory(cwd, user);
        foreach (var (name, content) in request.Files)
        {
            string path = Path.GetFullPath(name, cwd);
            try
            {
                user.CreateDirectory(Path.GetDirectoryName(path) ?? "/");
                await using var file = new FileStream(path, FileMode.Create, FileAccess.Write, FileShare.ReadWrite, bufferSize: 0);
                user.OwnWritten(file.SafeFileHandle, path);
                await file.WriteAsync(_utf8.GetBytes(content), cancellation);
            }
            catch (Exception e) when (AgentException.IsIo(e))
            {
                throw AgentException.FromIo(e, path);
            }
        }
        string outputs = Path.GetFullPath(request.OutputsDir, cwd);
        if (outputs == "/" || Contains(outputs, cwd) || Contains(outputs, state.Options.Home))
        {
            throw AgentException.BadRequest($"outputs_dir {outputs} holds the working or home directory, which emptying it would delete");
        }
        Dictionary<string, FileStamp>? outputsBefore = null;
        if (request.KeepOutputs)
        {
            EnsureDirectory(outputs, user);
            outputsBefore = FileSystem.Snapshot(outputs);
        }
        else
        {
            ResetDirectory(outputs, user);
        }

        var environment = new Dictionary<string, string>(request.Env, StringComparer.Ordinal);
        environment.TryAdd("PATH", DefaultPath);
        environment.TryAdd("HOME", state.Options.Home);

        var result = new ExecResult();
        bool run = true;
        if (request.Compile is { Count: > 0 } compile)
        {
            await context.SendEventAsync("compile_started", CancellationToken.None);
            var spec = new StepSpec(compile, cwd, environment, null, request.CompileTimeoutMs, request.OutputLimitBytes);
            result.Compile = await StepRunner.RunAsync(spec, state.Supervisor, context, state.Options.VmMode, cancellation);
            run = result.Compile is { Reason: TerminationReason.Exited, ExitCode: 0 };
        }
        if (run)
        {
            await context.SendEventAsync("run_started", CancellationToken.None);
            byte[]? stdin = request.Stdin is null ? null : _utf8.GetBytes(request.Stdin);
            var spec = new StepSpec(request.Run, cwd, environment, stdin, request.RunTimeoutMs, request.OutputLimitBytes);
            result.Run = forkPlan switch
            {
                null => await StepRunner.RunAsync(spec, state.Supervisor, context, state.Options.VmMode, cancellation),
                { Persistent: true } => await state.Kernels.RunAsync(spec, forkPlan, outputs, context, state.Options.VmMode, cancellation),
                _ => await state.ForkServers.RunAsync(spec, forkPlan, outputs, context, state.Options.VmMode, cancellation),
            };
        }
        // Listed even after a cancel: the caller may still want what was written.
        result.Artifacts = await FileSystem.ListArtifactsAsync(outputs, CancellationToken.None, outputsBefore);
        await context.RespondAsync(result, ProtocolJson.Default.ExecResult);
    }

    private static void Validate(ExecRequest request)
    {
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

    private static void CreateDirectory(string path, SandboxUser user)
    {
        try
        {
            user.CreateDirectory(path);
        }
        catch (Exception e) when (AgentException.IsIo(e))
        {
            throw AgentException.FromIo(e, path);
        }
    }

    /// <summary>Creates the directory if missing; anything else in its place is removed first.</summary>
    private static void EnsureDirectory(string path, SandboxUser user)
    {
        try
        {
            var existing = FileSystem.TryDescribe(path);
            if (existing?.Kind == FileKind.Directory)
            {
                return;
            }
            if (existing is not null)
            {
                File.Delete(path);
            }
            user.CreateDirectory(path);
        }
        catch (Exception e) when (AgentException.IsIo(e))
        {
            throw AgentException.FromIo(e, path);
        }
    }

    private static void ResetDirectory(string path, SandboxUser user)
    {
        try
        {
            var existing = FileSystem.TryDescribe(path);
            if (existing?.Kind == FileKind.Directory)
            {
                Directory.Delete(path, recursive: true);
            }
            else if (existing is not null)
            {
                File.Delete(path);
            }
            user.CreateDirectory(path);
        }
        catch (Exception e) when (AgentException.IsIo(e))
        {
            throw AgentException.FromIo(e, path);
        }
    }
}
