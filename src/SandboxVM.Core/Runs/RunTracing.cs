using System.Diagnostics;

namespace SandboxVM.Core.Runs;

/// <summary>
/// Traces of runs (System.Diagnostics activities, exported by the server through OpenTelemetry when
/// an OTLP endpoint is configured): a <c>sandboxvm.run</c> span per run with one child per phase
/// (<c>queue</c>, <c>acquire</c>, <c>exec</c> with <c>compile</c> and <c>run</c> under it, <c>artifacts</c>).
/// Without a listener, starting a span costs a null check.
/// </summary>
public static class RunTracing
{
    /// <summary>The source's name, for an OpenTelemetry tracer provider's <c>AddSource</c>.</summary>
    public const string SourceName = "SandboxVM.Runs";

    public static readonly ActivitySource Source = new(SourceName);

    /// <summary>The span of a whole run of <paramref name="template"/>; <paramref name="kind"/> is <c>run</c> (one-shot) or <c>sandbox</c>.</summary>
    public static Activity? StartRun(string template, string kind)
    {
        var span = Source.StartActivity("sandboxvm.run");
        span?.SetTag("sandboxvm.template", template);
        span?.SetTag("sandboxvm.kind", kind);
        return span;
    }

    /// <summary>A phase of the current run (a child of the ambient span).</summary>
    public static Activity? StartPhase(string phase) => Source.StartActivity(phase);

    /// <summary>
    /// The guest's compile and run steps as children of <paramref name="exec"/>, placed from their measured
    /// durations (the agent reports them when the exec ends, so they are recorded afterwards).
    /// </summary>
    public static void RecordSteps(Activity? exec, double compileMs, double runMs)
    {
        if (exec is null)
        {
            return;
        }
        var start = exec.StartTimeUtc;
        if (compileMs > 0)
        {
            Record(exec, "compile", start, compileMs);
            start += TimeSpan.FromMilliseconds(compileMs);
        }
        if (runMs > 0)
        {
            Record(exec, "run", start, runMs);
        }
    }

    /// <summary>Ends <paramref name="run"/> with the run's status, where it got its sandbox, and an error status when it did not succeed.</summary>
    public static void Finish(Activity? run, RunResult result)
    {
        if (run is null)
        {
            return;
        }
        run.SetTag("sandboxvm.status", result.Status.ToString());
        run.SetTag("sandboxvm.vm_source", result.Metrics.VmSource);
        if (result.Status is RunStatus.SandboxError)
        {
            run.SetStatus(ActivityStatusCode.Error, result.Error);
        }
    }

    private static void Record(Activity parent, string name, DateTime startUtc, double ms)
    {
        using var step = Source.StartActivity(name, ActivityKind.Internal, parent.Context, startTime: startUtc);
        step?.SetEndTime(startUtc + TimeSpan.FromMilliseconds(ms));
    }
}
