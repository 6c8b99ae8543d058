using System.Globalization;
using System.Text;

namespace SandboxVM.Client;

/// <summary>What a run printed, how it ended, the files it produced and how long each step took.</summary>
public sealed class RunResult
{
    /// <summary>What to show the caller: stdout and stderr interleaved in the order they were written.</summary>
    public string Output { get; init => field = value ?? ""; } = "";

    /// <summary>Everything the program (and its compiler) wrote to standard output.</summary>
    public string Stdout { get; init => field = value ?? ""; } = "";

    /// <summary>Everything the program (and its compiler) wrote to standard error.</summary>
    public string Stderr { get; init => field = value ?? ""; } = "";

    /// <summary>Exit code of the program; null when it did not exit normally (killed, timed out, never ran).</summary>
    public int? ExitCode { get; init; }

    /// <summary>How the run ended.</summary>
    public RunStatus Status { get; init; }

    /// <summary>Files the run left in its outputs directory, e.g. matplotlib figures as PNG.</summary>
    public IReadOnlyList<Artifact> Artifacts { get; init => field = value ?? []; } = [];

    /// <summary>Timings of the run on the server.</summary>
    public RunMetrics Metrics { get; init => field = value ?? new RunMetrics(); } = new();

    /// <summary>Why the sandbox failed (<see cref="RunStatus.SandboxError"/>) or why the run was stopped (timeout, oom); otherwise null.</summary>
    public string? Error { get; init; }

    /// <summary>True when stdout or stderr was cut at the template's output limit.</summary>
    public bool Truncated { get; init; }

    /// <summary>The value of the last expression, for templates that report one; otherwise null.</summary>
    public string? Result { get; init; }

    /// <summary>
    /// For compiled languages: true when the build came from the cache (in a sandbox: nothing was recompiled);
    /// null when the server did not say.
    /// </summary>
    public bool? BuildCached { get; init; }

    /// <summary>
    /// Sandboxes: true when the interpreter was (re)started for this run, so variables and imports of
    /// earlier runs are gone (first run, or the previous run was killed, e.g. by a timeout).
    /// </summary>
    public bool StateReset { get; init; }

    /// <summary>A readable summary: status, exit code, timings, the output and the artifacts.</summary>
    /// <returns>Several lines of text, ending with the output.</returns>
    public override string ToString()
    {
        var text = new StringBuilder();
        var culture = CultureInfo.InvariantCulture;
        text.Append(culture, $"{FormatStatus(Status)} (exit {ExitCode?.ToString(culture) ?? "-"}) in {Metrics.TotalMs:0.#} ms");
        text.Append(culture, $" [startup {Metrics.StartupMs:0.#} ms via {Metrics.VmSource.ToString().ToLowerInvariant()}");
        if (Metrics.CompileMs > 0 || BuildCached is not null)
        {
            text.Append(culture, $", compile {Metrics.CompileMs:0.#} ms{(BuildCached == true ? " (cached)" : "")}");
        }

        text.Append(culture, $", run {Metrics.RunMs:0.#} ms]");
        if (Truncated)
        {
            text.Append(" (output truncated)");
        }

        if (!string.IsNullOrEmpty(Error))
        {
            text.Append(": ").Append(Error);
        }

        text.AppendLine();
        if (Output.Length > 0)
        {
            text.Append(Output);
            if (!Output.EndsWith('\n'))
            {
                text.AppendLine();
            }
        }

        if (Result is not null)
        {
            text.Append("result: ").AppendLine(Result);
        }

        if (StateReset)
        {
            text.AppendLine("(interpreter state was reset)");
        }

        foreach (var artifact in Artifacts)
        {
            text.Append("artifact: ").AppendLine(artifact.ToString());
        }

        return text.ToString().TrimEnd('\n');
    }

    private static string FormatStatus(RunStatus status) => status switch
    {
        RunStatus.Ok => "ok",
        RunStatus.Error => "error",
        RunStatus.CompileError => "compile_error",
        RunStatus.Timeout => "timeout",
        RunStatus.Oom => "oom",
        RunStatus.OutputLimit => "output_limit",
        RunStatus.SandboxError => "sandbox_error",
        _ => "unknown",
    };
}
