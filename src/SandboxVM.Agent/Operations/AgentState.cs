using SandboxVM.Agent.Processes;

namespace SandboxVM.Agent.Operations;

/// <summary>What operations share for the life of the agent process.</summary>
internal sealed class AgentState(AgentOptions options, ProcessSupervisor supervisor)
{
    public AgentOptions Options { get; } = options;
    public ProcessSupervisor Supervisor { get; } = supervisor;

    /// <summary>The warm Python interpreter run steps may ask for; outlives connections.</summary>
    public ForkServerHost ForkServers { get; } = new(supervisor);

    /// <summary>The Python interpreter persistent run steps share (notebook state); outlives connections.</summary>
    public KernelHost Kernels { get; } = new(supervisor);

    /// <summary>The in-guest HTTP proxy (started by egress_enable); outlives connections.</summary>
    public Egress.EgressProxy Egress { get; } = new();

    /// <summary>Private directories of per-run users (exec <c>user</c>); paths under them are acted on as their user.</summary>
    public Files.RunDirectories RunDirectories { get; } = new();

    /// <summary>Whom a file operation on <paramref name="path"/> is done for: the run user whose directory holds it, else the sandbox user.</summary>
    public SandboxUser IdentityFor(string path) => RunDirectories.OwnerOf(path) ?? Options.User;

    /// <summary>Identity given by the last reinit (empty before).</summary>
    public string SandboxId { get; set; } = "";

    /// <summary>A request path: absolute, or relative to the home directory.</summary>
    public string ResolvePath(string path)
    {
        if (string.IsNullOrEmpty(path) || path.Contains('\0', StringComparison.Ordinal))
        {
            throw AgentException.BadRequest("path is missing or invalid");
        }
        return Path.GetFullPath(path, Options.Home);
    }
}
