namespace SandboxVM.Protocol;

/// <summary>Timing rules of exec that agent and host both count on.</summary>
public static class ExecLimits
{
    /// <summary>
    /// How long a persistent (kernel) run may take to end after the agent interrupted it on timeout
    /// before the kernel is killed and its state lost. The host adds it to its own deadline.
    /// </summary>
    public static readonly TimeSpan KernelInterruptGrace = TimeSpan.FromSeconds(2);
}
