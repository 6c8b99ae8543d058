using System.Text;
using SandboxVM.Agent.Processes;

namespace SandboxVM.Agent.Operations;

/// <summary>What operations share for the life of the agent process.</summary>
internal sealed class AgentState(AgentOptions options, ProcessSupervisor supervisor)
{
    public AgentOptions Options { get; } = options;
    public ProcessSupervisor Supervisor { get; } = supervisor;

    /// <summary>The warm Python interpreter run steps may ask for; outlives connections.</summary>
    public ForkServerHost ForkServers { get; } = new(supervisor);

    /// <summary>The Python interpreters persistent run steps share (notebook state), one per context; outlive connections.</summary>
    public KernelContexts Kernels { get; } = new(supervisor);

    /// <summary>Commands started by command_start (running and recently ended).</summary>
    public CommandTable Commands { get; } = new();

    /// <summary>Masters of the terminals pty_open serves, by operation id (pty_resize).</summary>
    public System.Collections.Concurrent.ConcurrentDictionary<uint, Microsoft.Win32.SafeHandles.SafeFileHandle> Terminals { get; } = new();

    /// <summary>The in-guest HTTP proxy (started by egress_enable); outlives connections.</summary>
    public Egress.EgressProxy Egress { get; } = new();

    /// <summary>Private directories of per-run users (exec <c>user</c>); paths under them are acted on as their user.</summary>
    public Files.RunDirectories RunDirectories { get; } = new();

    /// <summary>Whom a file operation on <paramref name="path"/> is done for: the run user whose directory holds it, else the sandbox user.</summary>
    public SandboxUser IdentityFor(string path) => RunDirectories.OwnerOf(path) ?? Options.User;

    /// <summary>Identity given by the last reinit (empty before).</summary>
    public string SandboxId { get; set; } = "";

    private static readonly UTF8Encoding _strictUtf8 = new(encoderShouldEmitUTF8Identifier: false, throwOnInvalidBytes: true);

    /// <summary>
    /// A request path: absolute, or relative to the home directory and staying under it (<c>..</c> does
    /// not climb out of home; an absolute path names anything). What the kernel would refuse (over
    /// PATH_MAX or NAME_MAX bytes) or could only get with a character replaced (a lone UTF-16
    /// surrogate) is a bad request here rather than an I/O error later.
    /// </summary>
    public string ResolvePath(string path)
    {
        if (string.IsNullOrEmpty(path) || path.Contains('\0', StringComparison.Ordinal))
        {
            throw AgentException.BadRequest("path is missing or invalid");
        }
        string full = Path.GetFullPath(path, Options.Home);
        if (!Path.IsPathRooted(path) && full != Options.Home && !full.StartsWith(Options.Home.TrimEnd('/') + "/", StringComparison.Ordinal))
        {
            throw AgentException.BadRequest($"relative path leaves {Options.Home} by '..'; give an absolute path");
        }
        try
        {
            if (_strictUtf8.GetByteCount(full) > 4095 || full.Split('/').Any(name => _strictUtf8.GetByteCount(name) > 255))
            {
                throw AgentException.BadRequest("path is longer than 4095 bytes or has a name longer than 255 bytes");
            }
        }
        catch (EncoderFallbackException)
        {
            throw AgentException.BadRequest("path is not valid Unicode (a lone surrogate)");
        }
        return full;
    }
}
