namespace SandboxVM.Client;

/// <summary>
/// One event of a streamed run, in the order it happened: <see cref="StdoutEvent"/>, <see cref="StderrEvent"/>,
/// <see cref="ArtifactEvent"/>, and last a <see cref="ResultEvent"/> carrying the whole <see cref="RunResult"/>.
/// </summary>
/// <example>
/// <code>
/// await foreach (var e in sandbox.RunStreamAsync(code))
/// {
///     switch (e)
///     {
///         case StdoutEvent o: Console.Write(o.Text); break;
///         case StderrEvent o: Console.Error.Write(o.Text); break;
///         case ArtifactEvent a: Console.WriteLine($"made {a.Artifact.Path}"); break;
///         case ResultEvent r: Console.WriteLine(r.Result.Status); break;
///     }
/// }
/// </code>
/// </example>
public abstract class RunEvent
{
    private protected RunEvent()
    {
    }
}

/// <summary>The program wrote <see cref="Text"/> to standard output.</summary>
public sealed class StdoutEvent : RunEvent
{
    /// <summary>Creates the event.</summary>
    /// <param name="text">The text written.</param>
    public StdoutEvent(string text) => Text = text;

    /// <summary>The text written (not necessarily whole lines).</summary>
    public string Text { get; }

    /// <inheritdoc/>
    public override string ToString() => "stdout: " + Text;
}

/// <summary>The program wrote <see cref="Text"/> to standard error.</summary>
public sealed class StderrEvent : RunEvent
{
    /// <summary>Creates the event.</summary>
    /// <param name="text">The text written.</param>
    public StderrEvent(string text) => Text = text;

    /// <summary>The text written (not necessarily whole lines).</summary>
    public string Text { get; }

    /// <inheritdoc/>
    public override string ToString() => "stderr: " + Text;
}

/// <summary>The run produced a file in its outputs directory; its content comes with the result or from the artifact calls.</summary>
public sealed class ArtifactEvent : RunEvent
{
    /// <summary>Creates the event.</summary>
    /// <param name="artifact">The artifact's path, type, size and hash.</param>
    public ArtifactEvent(Artifact artifact) => Artifact = artifact;

    /// <summary>The artifact's path, type, size and hash (<see cref="Artifact.Content"/> is null).</summary>
    public Artifact Artifact { get; }

    /// <inheritdoc/>
    public override string ToString() => "artifact: " + Artifact;
}

/// <summary>The run has finished; always the last event.</summary>
public sealed class ResultEvent : RunEvent
{
    /// <summary>Creates the event.</summary>
    /// <param name="result">The run's result.</param>
    public ResultEvent(RunResult result) => Result = result;

    /// <summary>The same result a non-streamed run returns.</summary>
    public RunResult Result { get; }

    /// <inheritdoc/>
    public override string ToString() => "result: " + Result.Status;
}
