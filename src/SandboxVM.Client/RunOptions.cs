namespace SandboxVM.Client;

/// <summary>
/// Optional settings of a run in a sandbox (<see cref="Sandbox.RunAsync(string, RunOptions?, CancellationToken)"/>):
/// stdin, environment, time limits, and callbacks that receive output as it is written.
/// Unset (null) members are left out of the request so the template's defaults apply.
/// </summary>
/// <example>
/// <code>
/// var result = await sandbox.RunAsync(code, new RunOptions
/// {
///     TimeoutS = 60,
///     OnStdout = text => Console.Write(text),
///     OnStderr = text => Console.Error.Write(text),
/// });
/// </code>
/// </example>
public sealed class RunOptions
{
    /// <summary>Text fed to the program's standard input.</summary>
    public string? Stdin { get; init; }

    /// <summary>Extra environment variables for the program.</summary>
    public IReadOnlyDictionary<string, string>? Env { get; init; }

    /// <summary>Run time limit in seconds (the template's default when null; capped by its maximum).</summary>
    public double? TimeoutS { get; init; }

    /// <summary>Compile time limit in seconds for compiled languages (the template's default when null).</summary>
    public double? CompileTimeoutS { get; init; }

    /// <summary>
    /// Called with each piece of standard output as the program writes it. Setting any callback makes
    /// <see cref="Sandbox.RunAsync(string, RunOptions?, CancellationToken)"/> stream the run
    /// (<c>text/event-stream</c>); the result is the same. Callbacks run on the reading task, one at a time, in order;
    /// an exception thrown by one ends the call (and so cancels the run). Ignored by the <c>RunStreamAsync</c> methods.
    /// </summary>
    public Action<string>? OnStdout { get; init; }

    /// <summary>Called with each piece of standard error as the program writes it; see <see cref="OnStdout"/>.</summary>
    public Action<string>? OnStderr { get; init; }

    /// <summary>Called when the run produces an artifact (its content is not included); see <see cref="OnStdout"/>.</summary>
    public Action<Artifact>? OnArtifact { get; init; }

    internal bool HasCallbacks => OnStdout is not null || OnStderr is not null || OnArtifact is not null;
}
