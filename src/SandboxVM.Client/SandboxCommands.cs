using System.Text.Json;
using SandboxVM.Client.Internal;

namespace SandboxVM.Client;

/// <summary>
/// Shell commands and background processes in one sandbox (<see cref="Sandbox.Commands"/>). They run as the
/// sandbox's user, beside its runs, under the same limits; a background command (a web server, a long job)
/// keeps running between calls and keeps the sandbox from being frozen while it does.
/// </summary>
/// <example>
/// <code>
/// var ls = await sb.Commands.RunAsync("ls -la /home/sandbox");
/// var server = await sb.Commands.StartAsync(["python3", "-m", "http.server", "8000"]);
/// await sb.Commands.KillAsync(server.Id);
/// </code>
/// </example>
public sealed class SandboxCommands
{
    private readonly SandboxClient _client;
    private readonly string _id;

    internal SandboxCommands(SandboxClient client, string id)
    {
        _client = client;
        _id = id;
    }

    /// <summary>Runs a shell line (<c>/bin/sh -c</c>) and waits for it to end.</summary>
    /// <param name="shell">The command line.</param>
    /// <param name="options">Working directory, environment, timeout, stdin.</param>
    /// <param name="cancellationToken">Abandons the call (the command is killed).</param>
    /// <returns>Its exit code, status and output.</returns>
    /// <exception cref="SandboxNotFoundException">The sandbox has ended.</exception>
    /// <exception cref="SandboxApiException">The server refused it (e.g. <c>invalid_command</c>, <c>file_not_found</c> for a missing cwd).</exception>
    /// <exception cref="SandboxConnectionException">The server could not be reached or did not answer in time.</exception>
    public Task<SandboxCommand> RunAsync(string shell, CommandOptions? options = null, CancellationToken cancellationToken = default)
    {
        ArgumentException.ThrowIfNullOrEmpty(shell);
        return PostAsync(JsonSerializer.SerializeToElement(shell, SandboxJson.Default.String), false, options, cancellationToken);
    }

    /// <summary>Runs a program with arguments (no shell) and waits for it to end.</summary>
    /// <param name="argv">The program and its arguments.</param>
    /// <param name="options">Working directory, environment, timeout, stdin.</param>
    /// <param name="cancellationToken">Abandons the call (the command is killed).</param>
    /// <returns>Its exit code, status and output.</returns>
    /// <exception cref="SandboxApiException">The server refused it.</exception>
    public Task<SandboxCommand> RunAsync(IReadOnlyList<string> argv, CommandOptions? options = null, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(argv);
        return PostAsync(JsonSerializer.SerializeToElement(argv.ToList(), SandboxJson.Default.ListString), false, options, cancellationToken);
    }

    /// <summary>Starts a background command (a shell line) and returns at once; its output is kept (the last 256 KiB per stream).</summary>
    /// <param name="shell">The command line.</param>
    /// <param name="options">Working directory, environment, timeout (none by default), stdin.</param>
    /// <param name="cancellationToken">Abandons the call.</param>
    /// <returns>The command, running, with its <see cref="SandboxCommand.Id"/>.</returns>
    /// <exception cref="SandboxApiException">429 <c>too_many_commands</c> when 16 already run; other refusals.</exception>
    public Task<SandboxCommand> StartAsync(string shell, CommandOptions? options = null, CancellationToken cancellationToken = default)
    {
        ArgumentException.ThrowIfNullOrEmpty(shell);
        return PostAsync(JsonSerializer.SerializeToElement(shell, SandboxJson.Default.String), true, options, cancellationToken);
    }

    /// <summary>Starts a background program with arguments (no shell) and returns at once.</summary>
    /// <param name="argv">The program and its arguments.</param>
    /// <param name="options">Working directory, environment, timeout (none by default), stdin.</param>
    /// <param name="cancellationToken">Abandons the call.</param>
    /// <returns>The command, running.</returns>
    /// <exception cref="SandboxApiException">The server refused it.</exception>
    public Task<SandboxCommand> StartAsync(IReadOnlyList<string> argv, CommandOptions? options = null, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(argv);
        return PostAsync(JsonSerializer.SerializeToElement(argv.ToList(), SandboxJson.Default.ListString), true, options, cancellationToken);
    }

    /// <summary>The sandbox's commands (running and recently ended), without their output.</summary>
    /// <param name="cancellationToken">Abandons the call.</param>
    /// <returns>Oldest first.</returns>
    /// <exception cref="SandboxNotFoundException">The sandbox has ended.</exception>
    public async Task<IReadOnlyList<SandboxCommand>> ListAsync(CancellationToken cancellationToken = default)
    {
        var list = await _client.SendJsonAsync(HttpMethod.Get, SandboxClient.SandboxPath(_id, "/commands"), null,
            SandboxJson.Default.CommandList, cancellationToken).ConfigureAwait(false);
        return list.Commands ?? [];
    }

    /// <summary>A command with its kept output; with <paramref name="wait"/>, once it ended or after up to 30 s.</summary>
    /// <param name="commandId">The id <see cref="StartAsync(string, CommandOptions?, CancellationToken)"/> gave.</param>
    /// <param name="wait">Wait for it to end (bounded by the server: 30 s).</param>
    /// <param name="cancellationToken">Abandons the call.</param>
    /// <returns>The command.</returns>
    /// <exception cref="SandboxApiException">404 <c>command_not_found</c>.</exception>
    public Task<SandboxCommand> GetAsync(string commandId, bool wait = false, CancellationToken cancellationToken = default) =>
        _client.SendJsonAsync(HttpMethod.Get, CommandPath(commandId, wait ? "?wait=true" : ""), null, SandboxJson.Default.SandboxCommand, cancellationToken);

    /// <summary>Writes <paramref name="data"/> to a command's stdin; <paramref name="eof"/> closes it afterwards.</summary>
    /// <param name="commandId">The command.</param>
    /// <param name="data">Text (UTF-8), at most 256 KiB per call.</param>
    /// <param name="eof">Close stdin after the data.</param>
    /// <param name="cancellationToken">Abandons the call.</param>
    /// <returns>The command.</returns>
    /// <exception cref="SandboxApiException">409 <c>stdin_closed</c>: closed, or the command did not read it.</exception>
    public Task<SandboxCommand> SendStdinAsync(string commandId, string data, bool eof = false, CancellationToken cancellationToken = default)
    {
        var body = JsonSerializer.SerializeToUtf8Bytes(new CommandStdinRequest { Data = data, Eof = eof }, SandboxJson.Default.CommandStdinRequest);
        return _client.SendJsonAsync(HttpMethod.Post, CommandPath(commandId, "/stdin"), body, SandboxJson.Default.SandboxCommand, cancellationToken);
    }

    /// <summary>
    /// Signals a command's process group: by default SIGTERM, then SIGKILL two seconds later if it still runs
    /// (the answer comes once it ended); another signal (e.g. <c>SIGINT</c>, <c>HUP</c>, <c>9</c>) is only delivered.
    /// </summary>
    /// <param name="commandId">The command.</param>
    /// <param name="signal">A signal name or number; null for SIGTERM.</param>
    /// <param name="cancellationToken">Abandons the call.</param>
    /// <returns>The command after the signal.</returns>
    /// <exception cref="SandboxApiException">404 <c>command_not_found</c>, 400 <c>invalid_signal</c>.</exception>
    public Task<SandboxCommand> KillAsync(string commandId, string? signal = null, CancellationToken cancellationToken = default) =>
        _client.SendJsonAsync(HttpMethod.Delete, CommandPath(commandId, signal is null ? "" : "?signal=" + Uri.EscapeDataString(signal)), null,
            SandboxJson.Default.SandboxCommand, cancellationToken);

    private Task<SandboxCommand> PostAsync(JsonElement cmd, bool background, CommandOptions? options, CancellationToken cancellationToken)
    {
        var request = new CommandStartRequest
        {
            Cmd = cmd,
            Cwd = options?.Cwd,
            Env = options?.Env,
            TimeoutS = options?.TimeoutS,
            Background = background,
            Stdin = options?.Stdin,
        };
        var body = JsonSerializer.SerializeToUtf8Bytes(request, SandboxJson.Default.CommandStartRequest);
        string path = SandboxClient.SandboxPath(_id, "/commands");
        if (options is { OnStdout: not null } or { OnStderr: not null })
        {
            if (background)
            {
                throw new ArgumentException("output callbacks are for foreground commands; a background command's output is read with GetAsync", nameof(options));
            }
            return _client.StreamCommandAsync(path, body, options.OnStdout, options.OnStderr, cancellationToken);
        }
        return _client.SendJsonAsync(HttpMethod.Post, path, body, SandboxJson.Default.SandboxCommand, cancellationToken);
    }

    private string CommandPath(string commandId, string rest)
    {
        ArgumentException.ThrowIfNullOrEmpty(commandId);
        return SandboxClient.SandboxPath(_id, "/commands/" + Uri.EscapeDataString(commandId) + rest);
    }
}

/// <summary>How to run a command.</summary>
public sealed class CommandOptions
{
    /// <summary>An existing directory, absolute or relative to /home/sandbox (the default).</summary>
    public string? Cwd { get; init; }

    /// <summary>Environment variables on top of the template's.</summary>
    public IReadOnlyDictionary<string, string>? Env { get; init; }

    /// <summary>Seconds until the command's process group is killed: foreground default 60 (at most the template's max); background none.</summary>
    public double? TimeoutS { get; init; }

    /// <summary>Text written to stdin, which is then closed.</summary>
    public string? Stdin { get; init; }

    /// <summary>
    /// Gets a foreground command's stdout as it is printed (chunks as they arrive, not lines); the result still
    /// carries all of it. Not for background commands (their output is kept for <see cref="SandboxCommands.GetAsync"/>).
    /// </summary>
    public Action<string>? OnStdout { get; init; }

    /// <summary>Gets a foreground command's stderr as it is printed, like <see cref="OnStdout"/>.</summary>
    public Action<string>? OnStderr { get; init; }
}

/// <summary>A command in a sandbox and how it ended.</summary>
public sealed class SandboxCommand
{
    /// <summary>Its id in the sandbox (e.g. <c>c3</c>).</summary>
    public string Id { get; init; } = "";

    /// <summary>The program and its arguments (a shell line shows as <c>/bin/sh -c LINE</c>).</summary>
    public IReadOnlyList<string> Cmd { get; init; } = [];

    /// <summary><c>running</c>, <c>exited</c>, <c>signal</c>, <c>timeout</c>, <c>oom</c>, <c>output_limit</c>, <c>cancelled</c>.</summary>
    public string Status { get; init; } = "";

    /// <summary>Whether it still runs.</summary>
    public bool Running { get; init; }

    /// <summary>Its exit code when <see cref="Status"/> is <c>exited</c>.</summary>
    public int? ExitCode { get; init; }

    /// <summary>The signal that ended it, if one did.</summary>
    public int? Signal { get; init; }

    /// <summary>When it started.</summary>
    public DateTimeOffset StartedAt { get; init; }

    /// <summary>Start to end, or to now while running.</summary>
    public long DurationMs { get; init; }

    /// <summary>Its standard output (null in listings).</summary>
    public string? Stdout { get; init; }

    /// <summary>Its standard error (null in listings).</summary>
    public string? Stderr { get; init; }

    /// <summary>Bytes written to stdout in all.</summary>
    public long StdoutBytes { get; init; }

    /// <summary>Bytes written to stderr in all.</summary>
    public long StderrBytes { get; init; }

    /// <summary>Part of the output was dropped (over the cap).</summary>
    public bool Truncated { get; init; }

    /// <summary>Whether stdin still takes <see cref="SandboxCommands.SendStdinAsync"/>.</summary>
    public bool StdinOpen { get; init; }

    /// <inheritdoc/>
    public override string ToString() => $"{Id} {Status}{(ExitCode is int c ? " " + c : "")}: {string.Join(' ', Cmd)}";
}
