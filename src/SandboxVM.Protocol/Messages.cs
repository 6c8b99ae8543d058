using System.Text.Json.Serialization;

namespace SandboxVM.Protocol;

/// <summary>Version of the wire protocol. Bump on any incompatible change; the hello exchange checks it.</summary>
public static class ProtocolInfo
{
    /// <summary>
    /// 2: agent-initiated operations (ids with <see cref="AgentIdBit"/>), Credit frames, egress and search ops.
    /// 3: <see cref="ExecRequest.User"/> and <see cref="ExecRequest.EndUserProcesses"/>, which an older agent
    /// would silently ignore (it skips unknown members): a run meant to be isolated would not be.
    /// </summary>
    public const int Version = 3;

    /// <summary>First uid an exec may name in <see cref="ExecRequest.User"/> (a per-run user of a shared VM).</summary>
    public const int RunUserFirst = 2000;

    /// <summary>Last uid an exec may name in <see cref="ExecRequest.User"/>.</summary>
    public const int RunUserLast = 2999;

    /// <summary>Ids with this bit set are opened by the agent (its Request, the host's Response/Error); the host's ids never have it.</summary>
    public const uint AgentIdBit = 0x8000_0000;

    /// <summary>Streams (agent-initiated operations) one connection may have open at once; the host refuses more with <see cref="ErrorCodes.TooManyStreams"/>.</summary>
    public const int MaxAgentOperations = 64;

    public static bool IsAgentInitiated(uint id) => (id & AgentIdBit) != 0;
}

/// <summary>Host to agent, first frame on a connection.</summary>
public sealed class Hello
{
    public int ProtocolVersion { get; set; } = ProtocolInfo.Version;
}

/// <summary>Agent to host: who it is and what it can do.</summary>
public sealed class HelloReply
{
    public int ProtocolVersion { get; set; }
    public string AgentVersion { get; set; } = "";
    /// <summary>Operation names the agent serves (see <see cref="Ops"/>).</summary>
    public List<string> Capabilities { get; set; } = [];
    /// <summary>Process id of the agent inside the guest.</summary>
    public int Pid { get; set; }
}

/// <summary>Operation names carried in <see cref="AgentRequest.Op"/>.</summary>
public static class Ops
{
    public const string Ping = "ping";
    public const string Exec = "exec";
    public const string FileWrite = "file_write";
    public const string FileRead = "file_read";
    public const string FileList = "file_list";
    public const string FileStat = "file_stat";
    public const string FileRemove = "file_remove";
    public const string FileMkdir = "file_mkdir";
    public const string ArtifactsList = "artifacts_list";
    /// <summary>Fresh identity after a snapshot restore: clock, entropy, sandbox id.</summary>
    public const string Reinit = "reinit";
    /// <summary>Host to agent: start the in-guest HTTP proxy (<see cref="EgressEnableRequest"/>, reply <see cref="EgressEnableReply"/>).</summary>
    public const string EgressEnable = "egress_enable";
    /// <summary>
    /// Agent to host: open a TCP connection through the host's egress gateway (<see cref="EgressOpenRequest"/>).
    /// Response <see cref="OkBody"/> = connected, then the id is a <see cref="FrameStream"/>; Error code = the egress reason code.
    /// </summary>
    public const string EgressOpen = "egress_open";
    /// <summary>Agent to host: web search through the host's provider (<see cref="SearchRequest"/>, reply <see cref="SearchReply"/>).</summary>
    public const string Search = "search";
    /// <summary>
    /// Start a command (<see cref="CommandRequest"/>: argv, cwd, env, timeout_ms, background). Background: the
    /// Response <see cref="CommandInfo"/> comes at once. Foreground: Stdout/Stderr frames while it runs, then
    /// the Response once it ended; a Cancel kills it.
    /// </summary>
    public const string CommandStart = "command_start";
    /// <summary>A command's state and buffered output (<see cref="CommandRequest.Id"/>, <see cref="CommandRequest.WaitMs"/>); reply <see cref="CommandInfo"/>.</summary>
    public const string CommandGet = "command_get";
    /// <summary>Every command the agent keeps (no output); reply <see cref="CommandListBody"/>.</summary>
    public const string CommandList = "command_list";
    /// <summary>Write <see cref="CommandRequest.Data"/> to a command's stdin, then close it when <see cref="CommandRequest.Eof"/>; reply <see cref="CommandInfo"/> without output.</summary>
    public const string CommandStdin = "command_stdin";
    /// <summary>Signal a command's process group (<see cref="CommandRequest.Signal"/>, then SIGKILL after <see cref="CommandRequest.KillAfterMs"/>); reply <see cref="CommandInfo"/> without output.</summary>
    public const string CommandSignal = "command_signal";
    /// <summary>
    /// Host to agent: connect to 127.0.0.1:<see cref="PortOpenRequest.Port"/> inside the guest (<see cref="PortOpenRequest"/>).
    /// Response <see cref="OkBody"/> = connected; from then on the id is a <see cref="FrameStream"/> (as for egress_open, the
    /// other way round) until both sides sent DataEnd or either sent Cancel. Error <see cref="ErrorCodes.PortClosed"/> when nothing listens.
    /// </summary>
    public const string PortOpen = "port_open";
    /// <summary>
    /// Host to agent: a program (the template's shell) on a new pseudo-terminal (<see cref="PtyRequest"/>). The id is a
    /// <see cref="FrameStream"/> from the request on (host Data = keystrokes, agent Data = the terminal's output); when the
    /// program has exited the agent sends DataEnd, then the Response <see cref="PtyExit"/>. A Cancel kills its process group.
    /// </summary>
    public const string PtyOpen = "pty_open";
    /// <summary>Host to agent: new size of the terminal of pty_open <see cref="PtyRequest.Target"/> (<see cref="PtyRequest.Cols"/>, <see cref="PtyRequest.Rows"/>); reply <see cref="OkBody"/>.</summary>
    public const string PtyResize = "pty_resize";
    /// <summary>
    /// Host to agent: end the kernel of persistent-run context <see cref="KernelRequest.Context"/> (<see cref="KernelRequest"/>),
    /// its state with it; reply <see cref="OkBody"/> (also when none ran). The next persistent run in that context starts a fresh one.
    /// </summary>
    public const string KernelStop = "kernel_stop";
}

/// <summary>
/// Opens operation <c>id</c>. <see cref="Op"/> names it; the member for that op carries its arguments.
/// file_write: the host then sends Data frames and a DataEnd; the agent replies with <see cref="FileInfoBody"/>.
/// file_read: the agent sends Data frames, a DataEnd, then a Response with <see cref="FileInfoBody"/>.
/// </summary>
public sealed class AgentRequest
{
    public string Op { get; set; } = "";
    public ExecRequest? Exec { get; set; }
    public FileRequest? File { get; set; }
    public ReinitRequest? Reinit { get; set; }
    public EgressEnableRequest? EgressEnable { get; set; }
    public EgressOpenRequest? EgressOpen { get; set; }
    public SearchRequest? Search { get; set; }
    public CommandRequest? Command { get; set; }
    public PortOpenRequest? Port { get; set; }
    public PtyRequest? Pty { get; set; }
    public KernelRequest? Kernel { get; set; }
}

/// <summary>A TCP port on the guest's loopback that the host wants a stream to.</summary>
public sealed class PortOpenRequest
{
    public int Port { get; set; }
}

/// <summary>Where the agent's HTTP proxy listens (a loopback address inside the guest).</summary>
public sealed class EgressEnableRequest
{
    /// <summary><c>ADDRESS:PORT</c>; port 0 picks a free one (tests).</summary>
    public string Listen { get; set; } = "127.0.0.1:3128";
}

/// <summary>Response of egress_enable: the address actually bound.</summary>
public sealed class EgressEnableReply
{
    public string Listen { get; set; } = "";
}

/// <summary>Destination of an egress stream, as the guest asked for it (the host resolves and checks it).</summary>
public sealed class EgressOpenRequest
{
    public string Host { get; set; } = "";
    public int Port { get; set; }
}

public sealed class SearchRequest
{
    public string Query { get; set; } = "";
    public int MaxResults { get; set; } = 5;
}

public sealed class SearchReply
{
    public List<SearchHit> Results { get; set; } = [];
}

public sealed class SearchHit
{
    public string Title { get; set; } = "";
    public string Url { get; set; } = "";
    public string Snippet { get; set; } = "";
}

/// <summary>Run a program: write sources, compile (optional), run. Output is streamed as Stdout/Stderr frames.</summary>
public sealed class ExecRequest
{
    /// <summary>Working directory (created if missing). Relative source paths are under it.</summary>
    public string Cwd { get; set; } = "/home/sandbox";
    /// <summary>Files written before anything runs: path (relative to <see cref="Cwd"/> or absolute) to UTF-8 content.</summary>
    public Dictionary<string, string> Files { get; set; } = [];
    /// <summary>Compile step argv, or null when the language is interpreted.</summary>
    public List<string>? Compile { get; set; }
    /// <summary>Run step argv.</summary>
    public List<string> Run { get; set; } = [];
    /// <summary>Environment of both steps (nothing is inherited from the agent but PATH when unset here).</summary>
    public Dictionary<string, string> Env { get; set; } = [];
    /// <summary>Bytes given to the run step's stdin (UTF-8 text); null means an empty stdin.</summary>
    public string? Stdin { get; set; }
    public int CompileTimeoutMs { get; set; } = 30_000;
    public int RunTimeoutMs { get; set; } = 10_000;
    /// <summary>Cap on stdout plus stderr bytes of one step; past it the step is killed with <see cref="TerminationReason.OutputLimit"/>.</summary>
    public long OutputLimitBytes { get; set; } = 1 << 20;
    /// <summary>Directory whose files are the run's artifacts; emptied and created before the run.</summary>
    public string OutputsDir { get; set; } = "/tmp/outputs";
    /// <summary>
    /// Run the run step in a warm Python interpreter (a fork server the agent keeps for the life of the
    /// sandbox) instead of starting a process; null = a plain process. Falls back to a plain process
    /// whenever the fork server cannot be used.
    /// </summary>
    public ForkServerRequest? ForkServer { get; set; }
    /// <summary>
    /// Sessions: leave <see cref="OutputsDir"/> as it is instead of emptying it, and report in
    /// <see cref="ExecResult.Artifacts"/> only the files this exec created or changed.
    /// </summary>
    public bool KeepOutputs { get; set; }
    /// <summary>
    /// A per-run user for a VM that several callers share (the singleton): the exec runs as uid = gid =
    /// this value (<see cref="ProtocolInfo.RunUserFirst"/>..<see cref="ProtocolInfo.RunUserLast"/>; needs
    /// an agent running as root). <see cref="Cwd"/> must then be a fresh absolute path: its parent is
    /// created root-owned 0711 if missing (an existing one must be root's and closed to others), the
    /// directory itself 0700 for that user. Files under it are acted on as that user until it is removed.
    /// Never two execs with the same user at once; the fork server is not used. Null: the agent's user.
    /// </summary>
    public int? User { get; set; }
    /// <summary>
    /// After the steps and before the artifacts are listed, kill every process of the exec's user (also
    /// those that left the step's process group with setsid), so nothing the run started outlives it.
    /// For one-shot runs (the VM is discarded afterwards), never for sessions.
    /// </summary>
    public bool EndUserProcesses { get; set; }
    /// <summary>
    /// The VM is discarded after this exec (a one-shot run). With <see cref="EndUserProcesses"/> in a
    /// sandbox whose init is the agent, the agent stops every other process (kill(-1, SIGSTOP)) and, when
    /// the outputs then hold no file to list, answers at once: the stopped processes run no more code and
    /// die with the VM's tear-down. With files there it kills them and waits first, as without this flag,
    /// so nothing changes them after they were hashed. An agent that does not know the member ignores it
    /// and always waits.
    /// </summary>
    public bool DiscardAfter { get; set; }
}

/// <summary>
/// How the run step uses the agent's fork server. <see cref="ExecRequest.Run"/> is read as
/// <c>INTERPRETER... SCRIPT ARGS...</c>: the fork server is started as <c>INTERPRETER...</c> (same
/// program, flags and wrappers, such as prlimit), and the step's child runs SCRIPT as <c>__main__</c>
/// with <c>sys.argv = [SCRIPT, ARGS...]</c>, the step's cwd, environment and stdio.
/// </summary>
public sealed class ForkServerRequest
{
    /// <summary>Modules the server imports once before it serves (e.g. numpy, pandas, matplotlib.pyplot).</summary>
    public List<string> Preload { get; set; } = [];
    /// <summary>The element of <see cref="ExecRequest.Run"/> naming the Python file (its last occurrence counts); empty = the last element.</summary>
    public string Script { get; set; } = "";
    /// <summary>
    /// Run the script in the server's own interpreter instead of a forked child, with one
    /// <c>__main__</c> namespace kept from run to run (a notebook kernel): globals and imports
    /// survive, an exception leaves earlier state in place, and the repr of a final expression
    /// statement comes back in <see cref="StepResult.ResultRepr"/>. Used by sessions.
    /// </summary>
    public bool Persistent { get; set; }
    /// <summary>After the script, save every matplotlib figure still open as OUTPUTS/figure-N.png (N counting on from the highest present) and close it.</summary>
    public bool SaveFigures { get; set; }
    /// <summary>
    /// Persistent runs: which kernel (an independent Python state) runs the script; null or empty = the default
    /// one. At most <see cref="KernelRequest.MaxContexts"/> per agent (<see cref="ErrorCodes.TooManyKernels"/>).
    /// An agent older than this member runs every context in the default kernel: hosts check for
    /// <see cref="Ops.KernelStop"/> among its capabilities first.
    /// </summary>
    public string? Context { get; set; }
    /// <summary>
    /// Persistent runs: fill <see cref="StepResult.ResultData"/> and <see cref="StepResult.Displays"/> (the E2B door asks;
    /// others get only the repr, and display() prints the repr as IPython's display does outside a notebook).
    /// </summary>
    public bool RichResults { get; set; }
}

/// <summary>How a step ended.</summary>
[JsonConverter(typeof(JsonStringEnumConverter<TerminationReason>))]
public enum TerminationReason
{
    [JsonStringEnumMemberName("exited")] Exited,
    [JsonStringEnumMemberName("signal")] Signal,
    [JsonStringEnumMemberName("timeout")] Timeout,
    [JsonStringEnumMemberName("oom")] Oom,
    [JsonStringEnumMemberName("output_limit")] OutputLimit,
    [JsonStringEnumMemberName("cancelled")] Cancelled,
}

/// <summary>Outcome of one step (compile or run).</summary>
public sealed class StepResult
{
    public TerminationReason Reason { get; set; }
    /// <summary>Exit code when <see cref="Reason"/> is exited, else -1.</summary>
    public int ExitCode { get; set; } = -1;
    /// <summary>Signal number when the process was killed by a signal (also on timeout/output_limit: 9).</summary>
    public int? Signal { get; set; }
    public long DurationMs { get; set; }
    public long StdoutBytes { get; set; }
    public long StderrBytes { get; set; }
    /// <summary>True when the step ran as a child of the fork server (see <see cref="ExecRequest.ForkServer"/>).</summary>
    public bool Forked { get; set; }
    /// <summary>Persistent runs: repr() of the value of the script's final expression statement, when it has one and it is not None.</summary>
    public string? ResultRepr { get; set; }
    /// <summary>Persistent runs: the interpreter holding the state was started for this run (first run, or the previous one was killed), so earlier state is gone.</summary>
    public bool StateReset { get; set; }
    /// <summary>
    /// Persistent runs: the final expression's representations by MIME type (text/plain, text/html, image/png as
    /// base64, ...) from its IPython-style <c>_repr_*_</c> methods, when it has one and it is not None.
    /// </summary>
    public Dictionary<string, string>? ResultData { get; set; }
    /// <summary>Persistent runs: what the script passed to <c>display()</c>, in order, each by MIME type like <see cref="ResultData"/>.</summary>
    public List<Dictionary<string, string>>? Displays { get; set; }
}

/// <summary>Response of exec.</summary>
public sealed class ExecResult
{
    /// <summary>Null when there was no compile step.</summary>
    public StepResult? Compile { get; set; }
    /// <summary>Null when the compile step failed and nothing ran.</summary>
    public StepResult? Run { get; set; }
    /// <summary>Files under the outputs directory after the run.</summary>
    public List<ArtifactInfo> Artifacts { get; set; } = [];
    /// <summary>Where the agent's time went, for the host's breakdown of a run; null from agents before it.</summary>
    public ExecTimings? Timings { get; set; }
}

/// <summary>The agent's own time in one exec, by part, in milliseconds (its monotonic clock).</summary>
public sealed class ExecTimings
{
    /// <summary>Working directory, files, outputs directory (and a run user's claim), before the first step.</summary>
    public double PrepareMs { get; set; }
    /// <summary>The compile and run steps from the first spawn to the last exit, waits for a fork server or kernel included.</summary>
    public double StepsMs { get; set; }
    /// <summary>end_user_processes: killing every process of the user and waiting until none is left.</summary>
    public double EndProcessesMs { get; set; }
    /// <summary>Listing and hashing the artifacts.</summary>
    public double ListMs { get; set; }
    /// <summary>From the request to the response.</summary>
    public double TotalMs { get; set; }
}

/// <summary>Progress of an exec, sent as Event frames.</summary>
public sealed class ExecEvent
{
    /// <summary>"compile_started", "run_started".</summary>
    public string Kind { get; set; } = "";
}

public sealed class ArtifactInfo
{
    /// <summary>Absolute path inside the guest.</summary>
    public string Path { get; set; } = "";
    public long Size { get; set; }
    /// <summary>Lower-case hex SHA-256 of the content.</summary>
    public string Sha256 { get; set; } = "";
}

/// <summary>Arguments of the file_* ops.</summary>
public sealed class FileRequest
{
    /// <summary>Absolute, or relative to the agent's working directory (/home/sandbox).</summary>
    public string Path { get; set; } = "";
    /// <summary>file_remove: remove a directory and everything under it. file_mkdir: create parents.</summary>
    public bool Recursive { get; set; }
    /// <summary>file_write: Unix permission bits of a new file.</summary>
    public int Mode { get; set; } = 0b110_100_100; // 0644
}

[JsonConverter(typeof(JsonStringEnumConverter<FileKind>))]
public enum FileKind
{
    [JsonStringEnumMemberName("file")] File,
    [JsonStringEnumMemberName("directory")] Directory,
    [JsonStringEnumMemberName("symlink")] Symlink,
    [JsonStringEnumMemberName("other")] Other,
}

/// <summary>Response of file_stat, file_write, file_read, file_mkdir.</summary>
public sealed class FileInfoBody
{
    public string Path { get; set; } = "";
    public string Name { get; set; } = "";
    public FileKind Kind { get; set; }
    public long Size { get; set; }
    /// <summary>Modification time, Unix milliseconds.</summary>
    public long MtimeMs { get; set; }
}

/// <summary>Response of file_list.</summary>
public sealed class FileListBody
{
    public string Path { get; set; } = "";
    public List<FileInfoBody> Entries { get; set; } = [];
}

/// <summary>Response of artifacts_list.</summary>
public sealed class ArtifactListBody
{
    public List<ArtifactInfo> Artifacts { get; set; } = [];
}

public sealed class ReinitRequest
{
    public long UnixTimeMs { get; set; }
    /// <summary>Host entropy mixed into the guest RNG.</summary>
    public byte[] Entropy { get; set; } = [];
    public string SandboxId { get; set; } = "";
}

/// <summary>Empty response (ping, file_remove, reinit).</summary>
public sealed class OkBody
{
    public bool Ok { get; set; } = true;
}

/// <summary>Payload of an Error frame.</summary>
public sealed class ErrorBody
{
    /// <summary>Stable machine code, see <see cref="ErrorCodes"/>.</summary>
    public string Code { get; set; } = "";
    public string Message { get; set; } = "";
}

public static class ErrorCodes
{
    public const string BadFrame = "bad_frame";
    public const string FrameTooLarge = "frame_too_large";
    public const string BadRequest = "bad_request";
    public const string UnknownOp = "unknown_op";
    public const string DuplicateId = "duplicate_id";
    public const string NotFound = "not_found";
    public const string IoError = "io_error";
    public const string VersionMismatch = "version_mismatch";
    public const string Internal = "internal";
    /// <summary>An agent-initiated operation over <see cref="ProtocolInfo.MaxAgentOperations"/>.</summary>
    public const string TooManyStreams = "too_many_streams";
    public const string Cancelled = "cancelled";
    public const string SearchNotConfigured = "search_not_configured";
    public const string SearchFailed = "search_failed";
    /// <summary>A path the agent would open on the user's behalf is a symlink, FIFO, device or socket; it is never followed or opened.</summary>
    public const string NotRegularFile = "not_regular_file";
    /// <summary>A file the agent would write on the user's behalf has more than one link (a hard link could point at a file that is not the user's).</summary>
    public const string HardLinked = "hard_linked";
    /// <summary>The user the operation is done for may not reach that path (EACCES/EPERM as that user).</summary>
    public const string PermissionDenied = "permission_denied";
    /// <summary>No command with that id (command_get/stdin/signal).</summary>
    public const string CommandNotFound = "command_not_found";
    /// <summary>The sandbox runs as many commands as it may (<c>command_start</c>).</summary>
    public const string TooManyCommands = "too_many_commands";
    /// <summary>command_stdin: stdin was closed, or the command does not read it (the pipe stayed full).</summary>
    public const string StdinClosed = "stdin_closed";
    /// <summary>port_open: nothing accepts connections on that port (or it is the agent's own).</summary>
    public const string PortClosed = "port_closed";
    /// <summary>exec: a persistent run names a new kernel context while <see cref="KernelRequest.MaxContexts"/> kernels live.</summary>
    public const string TooManyKernels = "too_many_kernels";
}

/// <summary>Arguments of the command_* ops (each op reads the members its summary names).</summary>
public sealed class CommandRequest
{
    /// <summary>Kept output per stream: two of them in base64 stay well under <see cref="Frame.MaxPayload"/>.</summary>
    public const int MaxOutputCapBytes = 256 * 1024;
    /// <summary>Stdin bytes per command_stdin (base64 in one Request frame).</summary>
    public const int MaxStdinBytes = 256 * 1024;

    /// <summary>command_get/stdin/signal: the id command_start gave.</summary>
    public string Id { get; set; } = "";
    /// <summary>command_start: the program and its arguments (argv[0] without a slash is looked up on PATH).</summary>
    public List<string> Argv { get; set; } = [];
    /// <summary>command_start: an existing directory (absolute or relative to home).</summary>
    public string Cwd { get; set; } = "";
    /// <summary>command_start: the environment (plus PATH and HOME when not given).</summary>
    public Dictionary<string, string> Env { get; set; } = [];
    /// <summary>command_start: the group is killed this long after the start; 0 = no limit.</summary>
    public int TimeoutMs { get; set; }
    /// <summary>command_start: answer at once and keep stdin open; false = stream its output and answer when it ended.</summary>
    public bool Background { get; set; }
    /// <summary>
    /// command_start: the last this many bytes of each stream are kept (older output is dropped,
    /// <see cref="CommandInfo.StdoutTruncated"/>); at most <see cref="MaxOutputCapBytes"/>, so both fit one Response frame.
    /// </summary>
    public int OutputCapBytes { get; set; } = MaxOutputCapBytes;
    /// <summary>command_start: bytes written to stdin, which is then closed (also for a background command).</summary>
    public byte[]? Stdin { get; set; }
    /// <summary>command_start: stdout plus stderr past this many bytes kills the group (reason output_limit); 0 = no limit.</summary>
    public long OutputLimitBytes { get; set; }
    /// <summary>command_get: wait up to this long for the command to end.</summary>
    public int WaitMs { get; set; }
    /// <summary>command_get: include the buffered output.</summary>
    public bool IncludeOutput { get; set; } = true;
    /// <summary>command_stdin: bytes to write (at most <see cref="MaxStdinBytes"/> per request).</summary>
    public byte[]? Data { get; set; }
    /// <summary>command_stdin: close stdin after the data.</summary>
    public bool Eof { get; set; }
    /// <summary>command_signal: the signal number (1..64).</summary>
    public int Signal { get; set; } = 15;
    /// <summary>command_signal: SIGKILL to the group if the command still runs this long after the signal; 0 = never.</summary>
    public int KillAfterMs { get; set; }
    /// <summary>
    /// command_get with <see cref="WaitMs"/>: also answer as soon as the command has written more than this many bytes
    /// (stdout plus stderr, as <see cref="CommandInfo.StdoutBytes"/> + <see cref="CommandInfo.StderrBytes"/> count them),
    /// so a caller that passes what it has seen gets new output as it is printed. Null: wait for the end only (an older
    /// agent ignores it, and the wait then ends at <see cref="WaitMs"/>).
    /// </summary>
    public long? OutputBeyond { get; set; }
}

/// <summary>A command as the agent knows it.</summary>
public sealed class CommandInfo
{
    public string Id { get; set; } = "";
    public List<string> Argv { get; set; } = [];
    /// <summary>Its pid, which is also its process group (0 when it never started).</summary>
    public int Pid { get; set; }
    public bool Running { get; set; }
    /// <summary>Once ended: exited, signal, timeout, oom (see <see cref="TerminationReason"/>).</summary>
    public TerminationReason? Reason { get; set; }
    /// <summary>Exit code when reason is exited.</summary>
    public int? ExitCode { get; set; }
    public int? Signal { get; set; }
    /// <summary>Unix milliseconds.</summary>
    public long StartedAtMs { get; set; }
    /// <summary>Start to end (or to now while running).</summary>
    public long DurationMs { get; set; }
    /// <summary>Bytes written to each stream in all.</summary>
    public long StdoutBytes { get; set; }
    public long StderrBytes { get; set; }
    /// <summary>The kept tail of each stream (command_get with include_output).</summary>
    public byte[]? Stdout { get; set; }
    public byte[]? Stderr { get; set; }
    /// <summary>More was written than is kept: the start of the stream was dropped.</summary>
    public bool StdoutTruncated { get; set; }
    public bool StderrTruncated { get; set; }
    /// <summary>Whether stdin is still open for command_stdin.</summary>
    public bool StdinOpen { get; set; }
}

public sealed class CommandListBody
{
    public List<CommandInfo> Commands { get; set; } = [];
}

/// <summary>A pseudo-terminal (pty_open: argv, cwd, env, size) or its new size (pty_resize: target, cols, rows).</summary>
public sealed class PtyRequest
{
    /// <summary>Largest width or height, in cells.</summary>
    public const int MaxCells = 1000;

    public List<string> Argv { get; set; } = [];
    /// <summary>Working directory (empty: the home directory).</summary>
    public string Cwd { get; set; } = "";
    public Dictionary<string, string> Env { get; set; } = [];
    public int Cols { get; set; } = 80;
    public int Rows { get; set; } = 24;
    /// <summary>pty_resize: the id of the pty_open operation.</summary>
    public uint Target { get; set; }
}

/// <summary>Response of pty_open: how the program ended.</summary>
public sealed class PtyExit
{
    /// <summary>Its exit code, or 128 + the signal that ended it.</summary>
    public int ExitCode { get; set; }
    /// <summary>The signal that ended it, if one did.</summary>
    public int? Signal { get; set; }
}

/// <summary>Arguments of kernel_stop.</summary>
public sealed class KernelRequest
{
    /// <summary>Kernels (persistent-run contexts, the default one included) one agent keeps at most.</summary>
    public const int MaxContexts = 8;

    /// <summary>The context (see <see cref="ForkServerRequest.Context"/>); null or empty = the default one.</summary>
    public string? Context { get; set; }
}

/// <summary>Source-generated JSON for every message (the agent is NativeAOT: no reflection).</summary>
[JsonSourceGenerationOptions(
    PropertyNamingPolicy = JsonKnownNamingPolicy.SnakeCaseLower,
    DefaultIgnoreCondition = JsonIgnoreCondition.WhenWritingNull,
    UnmappedMemberHandling = JsonUnmappedMemberHandling.Skip)]
[JsonSerializable(typeof(Hello))]
[JsonSerializable(typeof(HelloReply))]
[JsonSerializable(typeof(AgentRequest))]
[JsonSerializable(typeof(ExecResult))]
[JsonSerializable(typeof(ExecEvent))]
[JsonSerializable(typeof(FileInfoBody))]
[JsonSerializable(typeof(FileListBody))]
[JsonSerializable(typeof(ArtifactListBody))]
[JsonSerializable(typeof(OkBody))]
[JsonSerializable(typeof(ErrorBody))]
[JsonSerializable(typeof(EgressEnableReply))]
[JsonSerializable(typeof(SearchReply))]
[JsonSerializable(typeof(CommandInfo))]
[JsonSerializable(typeof(CommandListBody))]
[JsonSerializable(typeof(PtyExit))]
public sealed partial class ProtocolJson : JsonSerializerContext;
