namespace SandboxVM.Core.Runs;

/// <summary>One-shot run request (POST /v1/run).</summary>
public sealed class RunRequest
{
    public string? Template { get; set; }
    public string? Code { get; set; }
    public string? Stdin { get; set; }
    public Dictionary<string, string>? Env { get; set; }
    public double? TimeoutS { get; set; }
    public double? CompileTimeoutS { get; set; }
    /// <summary>Sessions, Python: which of the sandbox's independent Python states runs the code (null: the default one; the E2B door's code contexts).</summary>
    public string? Context { get; set; }
    /// <summary>Sessions, Python: also return <see cref="RunResult.ResultData"/> and <see cref="RunResult.Displays"/> (the E2B door).</summary>
    public bool RichResults { get; set; }
}

public enum RunStatus
{
    Ok,
    Error,
    CompileError,
    Timeout,
    Oom,
    OutputLimit,
    SandboxError,
}

public sealed class RunArtifact
{
    public string Path { get; set; } = "";
    public string Mime { get; set; } = "";
    public long Size { get; set; }
    public string Sha256 { get; set; } = "";
    /// <summary>The bytes, base64, when within the inline caps; null otherwise.</summary>
    public string? ContentBase64 { get; set; }
}

public sealed class RunMetrics
{
    public double QueueMs { get; set; }
    public double StartupMs { get; set; }
    public double CompileMs { get; set; }
    public double RunMs { get; set; }
    /// <summary>Time the host spent on this run outside the queue, VM startup and the guest's own steps.</summary>
    public double HostMs { get; set; }
    public double TotalMs { get; set; }
    /// <summary>pool, restore, boot, singleton or process.</summary>
    public string VmSource { get; set; } = "";
    /// <summary>
    /// Where <see cref="HostMs"/> went, by part (<see cref="HostPhases"/>), in milliseconds; null when the run
    /// did not get that far or the agent does not report its own times.
    /// </summary>
    public Dictionary<string, double>? HostPhases { get; set; }
}

/// <summary>The parts of a run's <see cref="RunMetrics.HostMs"/> (keys of <see cref="RunMetrics.HostPhases"/>).</summary>
public static class HostPhases
{
    /// <summary>After the pool take: what the runtime does with a leased sandbox (egress attach or its absence).</summary>
    public const string Attach = "attach";
    /// <summary>The agent's exec before the first step: working directory, files, outputs directory.</summary>
    public const string Prepare = "prepare";
    /// <summary>The agent's steps beyond the guest's compile and run time (spawn, fork server or kernel hand-off).</summary>
    public const string Steps = "steps";
    /// <summary>The agent ending the run's processes (end_user_processes).</summary>
    public const string EndProcesses = "end_processes";
    /// <summary>The agent listing and hashing the artifacts.</summary>
    public const string List = "list";
    /// <summary>The exec's round trip beyond the agent's own time: the channel, framing, the host's scheduling.</summary>
    public const string Channel = "channel";
    /// <summary>The host reading the artifacts.</summary>
    public const string Artifacts = "artifacts";
    /// <summary>Whatever the other parts do not account for.</summary>
    public const string Other = "other";
}

/// <summary>What a caller gets back from a run.</summary>
public sealed class RunResult
{
    public string Stdout { get; set; } = "";
    public string Stderr { get; set; } = "";
    /// <summary>stdout and stderr interleaved in the order they were written: what a caller shows.</summary>
    public string Output { get; set; } = "";
    public int? ExitCode { get; set; }
    public RunStatus Status { get; set; }
    /// <summary>True when output was cut at the template's output cap.</summary>
    public bool Truncated { get; set; }
    /// <summary>Why the sandbox failed, for status sandbox_error; why the run ended, for timeout/oom.</summary>
    public string? Error { get; set; }
    /// <summary>Sessions, Python: repr() of the value of the code's final expression, as a notebook shows it.</summary>
    public string? Result { get; set; }
    /// <summary>Sessions, compiled languages: the source had not changed, so nothing was compiled.</summary>
    public bool BuildCached { get; set; }
    /// <summary>Sessions: the interpreter holding the sandbox's state was restarted (the previous run was killed), so earlier state is gone.</summary>
    public bool StateReset { get; set; }
    /// <summary>Sessions, Python: the final expression by MIME type (text/plain, text/html, image/png as base64...), from its _repr_*_ methods.</summary>
    public Dictionary<string, string>? ResultData { get; set; }
    /// <summary>Sessions, Python: what the code passed to display(), in order, by MIME type like <see cref="ResultData"/>.</summary>
    public List<Dictionary<string, string>>? Displays { get; set; }
    public List<RunArtifact> Artifacts { get; set; } = [];
    public RunMetrics Metrics { get; set; } = new();
}

/// <summary>A run's result and whether its compile step (if it ran) produced a program.</summary>
/// <summary>
/// What a run on a VM came to. <paramref name="NeverStarted"/>: the VM failed before the guest started a step or
/// printed anything (its connection closed at once): the caller's code never ran there.
/// </summary>
public sealed record RunOutcome(RunResult Result, bool BuildSucceeded, bool NeverStarted = false);

/// <summary>Receives a run's output and artifacts as they happen (streaming). Called on the agent's reader: keep it quick.</summary>
public interface IRunEvents
{
    /// <summary><paramref name="stream"/> is "stdout" or "stderr"; a chunk may end inside a UTF-8 character.</summary>
    void OnOutput(string stream, ReadOnlyMemory<byte> data);

    void OnArtifact(RunArtifact artifact);
}

/// <summary>
/// Why a request is refused, as Core sees it; the HTTP layer maps each kind to its status (the
/// server's <c>ProblemStatus</c>), so Core names no HTTP status.
/// </summary>
public enum RefusalKind
{
    /// <summary>The request is wrong: a field, a path, a size or a name the caller sent.</summary>
    Invalid,
    /// <summary>What it names does not exist (or is not the caller's).</summary>
    NotFound,
    /// <summary>The sandbox may not touch what it names.</summary>
    Forbidden,
    /// <summary>The state of the server or the sandbox refuses it now (template unavailable, file state, a download over the limit).</summary>
    Conflict,
    /// <summary>What the caller sends is over a size limit.</summary>
    TooLarge,
    /// <summary>A capacity limit is reached; the caller may try again later.</summary>
    Busy,
    /// <summary>A sandbox could not be started.</summary>
    Unavailable,
    /// <summary>The sandbox's agent failed in a way the host does not know.</summary>
    SandboxFailed,
    /// <summary>What it names existed and is over for good (an expired link).</summary>
    Gone,
}

/// <summary>A request Core refuses: a stable code, the field at fault and the kind of refusal.</summary>
public sealed class RunRequestException(string code, string? field, string message, RefusalKind kind = RefusalKind.Invalid, TimeSpan? retryAfter = null)
    : Exception(message)
{
    public string Code { get; } = code;
    public string? Field { get; } = field;
    public RefusalKind Kind { get; } = kind;

    /// <summary>When a refused caller may try again: for <see cref="RefusalKind.Busy"/>, one second unless the thrower knows better.</summary>
    public TimeSpan? RetryAfter { get; } = retryAfter ?? (kind == RefusalKind.Busy ? TimeSpan.FromSeconds(1) : null);
}

public static class ProblemCodes
{
    public const string UnknownTemplate = "unknown_template";
    public const string TemplateUnavailable = "template_unavailable";
    public const string MissingField = "missing_field";
    public const string EmptyCode = "empty_code";
    public const string CodeTooLarge = "code_too_large";
    public const string StdinTooLarge = "stdin_too_large";
    public const string TimeoutOutOfRange = "timeout_out_of_range";
    public const string InvalidEnv = "invalid_env";
    public const string MalformedJson = "malformed_json";
    public const string Overloaded = "overloaded";
    public const string Unauthorized = "unauthorized";
    public const string SandboxNotFound = "sandbox_not_found";
    public const string TooManySandboxes = "too_many_sandboxes";
    public const string SandboxStartFailed = "sandbox_start_failed";
    /// <summary>The host has less memory available than the server keeps free: no sandbox starts now (503, Retry-After).</summary>
    public const string HostMemoryLow = "host_memory_low";
    public const string TemplateMismatch = "template_mismatch";
    public const string InvalidMetadata = "invalid_metadata";
    public const string InvalidPath = "invalid_path";
    public const string FileNotFound = "file_not_found";
    public const string FileError = "file_error";
    public const string FileTooLarge = "file_too_large";
    public const string PermissionDenied = "permission_denied";
    public const string NotRegularFile = "not_regular_file";
    public const string FileChanged = "file_changed";
    /// <summary>The sandbox's agent failed in a way this server does not know (HTTP 502).</summary>
    public const string AgentError = "agent_error";
    /// <summary>The runtime cannot save a running sandbox (the process runtime): no pause, resume or fork (409).</summary>
    public const string PauseUnsupported = "pause_unsupported";
    /// <summary>A drain without a shared state directory: its paused sandboxes could not move to other nodes (409).</summary>
    public const string SharedStateRequired = "shared_state_required";
    /// <summary>The sandbox is paused: pause again, or a call with auto_resume off (409).</summary>
    public const string SandboxPaused = "sandbox_paused";
    /// <summary>Resume of a sandbox that is not paused (409).</summary>
    public const string SandboxNotPaused = "sandbox_not_paused";
    /// <summary>A file call is in progress: the sandbox cannot be paused now (409).</summary>
    public const string SandboxBusy = "sandbox_busy";
    public const string PauseFailed = "pause_failed";
    public const string ResumeFailed = "resume_failed";
    public const string ForkFailed = "fork_failed";
    public const string InvalidCount = "invalid_count";
    public const string InvalidOnIdle = "invalid_on_idle";
    public const string InvalidSnapshotName = "invalid_snapshot_name";
    /// <summary>A list filter (<c>state</c>, <c>metadata.KEY</c>) the server does not know (400).</summary>
    public const string InvalidFilter = "invalid_filter";
    public const string SnapshotNotFound = "snapshot_not_found";
    /// <summary>The caller has a snapshot of that name already (409).</summary>
    public const string SnapshotExists = "snapshot_exists";
    /// <summary>A sandbox is being started from the snapshot: it cannot be deleted now (409).</summary>
    public const string SnapshotBusy = "snapshot_busy";
    public const string TooManySnapshots = "too_many_snapshots";
    public const string SnapshotFailed = "snapshot_failed";
    /// <summary>A command's cmd, cwd or arguments are not usable (400).</summary>
    public const string InvalidCommand = "invalid_command";
    /// <summary>DELETE .../commands/{cid}?signal= names no signal (400).</summary>
    public const string InvalidSignal = "invalid_signal";
    /// <summary>No command with that id in the sandbox (404).</summary>
    public const string CommandNotFound = "command_not_found";
    /// <summary>The sandbox runs as many commands as it may (429).</summary>
    public const string TooManyCommands = "too_many_commands";
    /// <summary>The command's stdin is closed, or it did not read it (409).</summary>
    public const string StdinClosed = "stdin_closed";
    /// <summary>A port outside 1..65535 (400).</summary>
    public const string InvalidPort = "invalid_port";
    /// <summary>Nothing in the sandbox accepts connections on that port (502).</summary>
    public const string PortClosed = "port_closed";
    /// <summary>A share link's token is not one this server made (changed, made up, from before a restart) (404).</summary>
    public const string ShareNotFound = "share_not_found";
    /// <summary>A share link past its expiry (410).</summary>
    public const string ShareExpired = "share_expired";
    /// <summary>A share link's expires_in_s is out of range (400).</summary>
    public const string InvalidExpiry = "invalid_expiry";
}
