using System.Diagnostics;
using System.Globalization;
using System.Text;
using SandboxVM.Protocol;
using SandboxVM.Runtime;
using SandboxVM.Runtime.Agent;

namespace SandboxVM.Bench;

/// <summary>
/// Guest clock against host wall time in restored clones: the guest prints its clock, waits, prints it
/// again; the host stamps the arrival of each line. Host delta vs guest delta is the clock's rate
/// (transport jitter is a few ms on a 2 s sleep).
/// </summary>
internal static class ClockBench
{
    public sealed record Sample(string Clocksource, double HostS, double GuestS)
    {
        public double Ratio => GuestS / HostS;
    }

    /// <summary>One measurement in <paramref name="agent"/>'s guest: a shell sleep of <paramref name="seconds"/>.</summary>
    public static async Task<Sample> MeasureAsync(AgentClient agent, double seconds, CancellationToken cancellationToken)
    {
        var observer = new StampingObserver();
        // No process starts between the two stamps (a fork under TCG can hold the agent off the vCPU and
        // delay the first line): bash builtins only, the wait is a read with a timeout on an idle fifo.
        string script = "cat /sys/devices/system/clocksource/clocksource0/current_clocksource; " +
            "rm -f /tmp/.clk; mkfifo /tmp/.clk; exec 3<>/tmp/.clk; " +
            "echo T1 $EPOCHREALTIME; read -t " + seconds.ToString(CultureInfo.InvariantCulture) + " -u 3; echo T2 $EPOCHREALTIME";
        ExecResult result = await agent.ExecAsync(new ExecRequest { Run = ["bash", "-c", script], RunTimeoutMs = 60_000 }, observer, cancellationToken);
        if (result.Run is not { Reason: TerminationReason.Exited, ExitCode: 0 })
        {
            throw new InvalidOperationException($"clock script ended {result.Run?.Reason} {result.Run?.ExitCode}");
        }
        return observer.ToSample();
    }

    /// <summary>Lines as they arrive, each with the host's monotonic time of arrival.</summary>
    private sealed class StampingObserver : IExecObserver
    {
        private readonly StringBuilder _pending = new();
        private readonly List<(string Line, long Ticks)> _lines = [];

        public void OnStdout(ReadOnlySpan<byte> data)
        {
            long now = Stopwatch.GetTimestamp();
            lock (_lines)
            {
                _pending.Append(Encoding.UTF8.GetString(data));
                string text = _pending.ToString();
                int nl;
                while ((nl = text.IndexOf('\n', StringComparison.Ordinal)) >= 0)
                {
                    _lines.Add((text[..nl], now));
                    text = text[(nl + 1)..];
                }
                _pending.Clear().Append(text);
            }
        }

        public void OnStderr(ReadOnlySpan<byte> data)
        {
        }

        public void OnEvent(ExecEvent e)
        {
        }

        public Sample ToSample()
        {
            lock (_lines)
            {
                var t1 = _lines.Single(l => l.Line.StartsWith("T1 ", StringComparison.Ordinal));
                var t2 = _lines.Single(l => l.Line.StartsWith("T2 ", StringComparison.Ordinal));
                double guest = double.Parse(t2.Line[3..], CultureInfo.InvariantCulture) - double.Parse(t1.Line[3..], CultureInfo.InvariantCulture);
                double host = Stopwatch.GetElapsedTime(t1.Ticks, t2.Ticks).TotalSeconds;
                return new Sample(_lines[0].Line.Trim(), host, guest);
            }
        }
    }
}
