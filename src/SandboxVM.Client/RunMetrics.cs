namespace SandboxVM.Client;

/// <summary>Where the time of a run went, in milliseconds as measured by the server.</summary>
public sealed class RunMetrics
{
    /// <summary>Waiting for a free VM or slot.</summary>
    public double QueueMs { get; init; }

    /// <summary>Obtaining and starting the VM (pool take, snapshot restore or boot).</summary>
    public double StartupMs { get; init; }

    /// <summary>Compiling (0 for interpreted languages).</summary>
    public double CompileMs { get; init; }

    /// <summary>Running the program.</summary>
    public double RunMs { get; init; }

    /// <summary>Host-side overhead: request handling, collecting output and artifacts.</summary>
    public double HostMs { get; init; }

    /// <summary>The whole request, end to end on the server.</summary>
    public double TotalMs { get; init; }

    /// <summary>How the VM was obtained.</summary>
    public VmSource VmSource { get; init; }
}
