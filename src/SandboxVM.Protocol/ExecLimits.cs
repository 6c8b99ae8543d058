namespace SandboxVM.Protocol;

/// <summary>Timing rules of exec that agent and host both count on.</summary>
public static class ExecLimits
{
    /// <summary>
    /// How long a persistent (kernel) run may take to end after the agent interrupted it on timeout
    /// before the kernel is killed and its state lost. The host adds it to its own deadline.
    /// </summary>
    public static readonly TimeSpan KernelInterruptGrace = TimeSpan.FromSeconds(2);

    /// <summary>
    /// How long a run through a fork server or kernel waits for one that is still starting (its
    /// imports take seconds on a loaded or emulated host) before it runs as a plain process: the run's
    /// own timeout. The wait is not the program's time (the plain run that follows gets its whole
    /// timeout), so the host adds it to its own deadline.
    /// </summary>
    public static TimeSpan InterpreterWait(int runTimeoutMs) => TimeSpan.FromMilliseconds(Math.Max(0, runTimeoutMs));
}
