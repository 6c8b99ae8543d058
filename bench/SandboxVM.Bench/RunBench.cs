using System.Diagnostics;
using SandboxVM.Core.Pools;
using SandboxVM.Core.Templates;
using SandboxVM.Protocol;
using SandboxVM.Runtime;
using SandboxVM.Runtime.Agent;

namespace SandboxVM.Bench;

/// <summary>
/// Where a pooled run's time goes, phase by phase, with the same pieces RunService uses: take from the
/// pool (with its health check), the exec round trip (run_started event, first output, result), the
/// cgroup reads, artifact listing, and a second exec in the same VM (its code already translated by TCG).
/// </summary>
internal static class RunBench
{
    public sealed record Phases(double Acquire, double ToRunStarted, double ToFirstOutput, double ExecTotal, double GuestRunMs, double Usage, double SecondExec, double SecondGuestRunMs);

    /// <summary>The exec RunService builds for <paramref name="code"/> (its BuildExec is internal).</summary>
    public static ExecRequest Exec(TemplateDefinition t, string code) => new()
    {
        Cwd = "/home/sandbox",
        Files = new() { [t.Language.SourceFile] = code },
        Run = ["/usr/bin/prlimit", $"--nproc={t.Limits.Processes}", "--", .. t.Language.Run],
        Env = new Dictionary<string, string>(t.Language.Env, StringComparer.Ordinal),
        CompileTimeoutMs = (int)(t.Limits.CompileTimeoutS * 1000),
        RunTimeoutMs = (int)(t.Limits.RunTimeoutS * 1000),
        OutputLimitBytes = t.Limits.OutputBytes,
        OutputsDir = "/tmp/outputs",
        ForkServer = t.Language.ForkServer is { } fork ? new ForkServerRequest { Preload = [.. fork.Preload], Script = t.Language.SourceFile } : null,
    };

    public static async Task<Phases> MeasureAsync(PoolManager pools, TemplateDefinition t, string code, CancellationToken cancellationToken)
    {
        var clock = Stopwatch.StartNew();
        LeasedVm lease = await pools.AcquireAsync(t, cancellationToken);
        double acquire = clock.Elapsed.TotalMilliseconds;
        if (lease.Source != VmSource.Pool)
        {
            Console.WriteLine($"  (not from the pool: {lease.Source})");
        }
        try
        {
            var observer = new Observer(clock);
            double execStart = clock.Elapsed.TotalMilliseconds;
            ExecResult r = await lease.Vm.Agent.ExecAsync(Exec(t, code), observer, cancellationToken);
            double execEnd = clock.Elapsed.TotalMilliseconds;
            lease.Vm.ReadUsage();
            lease.Vm.ReadUsage();
            double usage = clock.Elapsed.TotalMilliseconds - execEnd;
            double s0 = clock.Elapsed.TotalMilliseconds;
            ExecResult r2 = await lease.Vm.Agent.ExecAsync(Exec(t, code), new Observer(clock), cancellationToken);
            double second = clock.Elapsed.TotalMilliseconds - s0;
            return new Phases(acquire, observer.RunStarted - execStart, observer.FirstOutput - execStart, execEnd - execStart,
                r.Run?.DurationMs ?? -1, usage, second, r2.Run?.DurationMs ?? -1);
        }
        finally
        {
            await lease.Vm.DisposeAsync();
        }
    }

    private sealed class Observer(Stopwatch clock) : IExecObserver
    {
        public double RunStarted { get; private set; } = double.NaN;
        public double FirstOutput { get; private set; } = double.NaN;

        public void OnStdout(ReadOnlySpan<byte> data)
        {
            if (double.IsNaN(FirstOutput))
            {
                FirstOutput = clock.Elapsed.TotalMilliseconds;
            }
        }

        public void OnStderr(ReadOnlySpan<byte> data) => OnStdout(data);

        public void OnEvent(ExecEvent e)
        {
            if (e.Kind == "run_started")
            {
                RunStarted = clock.Elapsed.TotalMilliseconds;
            }
        }
    }
}
