using System.Globalization;
using System.Text.RegularExpressions;

namespace SandboxVM.Runtime.Qemu;

/// <summary>
/// The host's TSC frequency. Under TCG the guest's TSC is the host's, but a microvm guest has no HPET
/// or ACPI PM timer to calibrate it against, and PIT calibration fails often enough on a busy host that
/// about half of the boots measured here hung ("tsc: Unable to calibrate against PIT"). Telling the
/// guest the frequency (tsc_early_khz) made every boot succeed and keeps its clock running at the
/// right rate.
/// </summary>
internal static partial class HostTsc
{
    private static readonly Lazy<int?> _detected = new(Detect);

    /// <summary>kHz, or null when this host does not say.</summary>
    internal static int? Khz => _detected.Value;

    private static int? Detect()
    {
        int? fromLog = ParseKernelLog(HostNative.ReadKernelLog());
        if (fromLog is not null)
        {
            return fromLog;
        }
        try
        {
            return ParseCpuinfo(File.ReadAllText("/proc/cpuinfo"));
        }
        catch (IOException)
        {
            return null;
        }
    }

    /// <summary>The kernel's own calibration: refined if it ran, else the TSC line, else the processor line.</summary>
    internal static int? ParseKernelLog(IEnumerable<string> records)
    {
        int? refined = null, tsc = null, processor = null;
        foreach (string record in records)
        {
            int semicolon = record.IndexOf(';', StringComparison.Ordinal);
            string text = semicolon >= 0 ? record[(semicolon + 1)..] : record;
            Match m = RefinedPattern().Match(text);
            if (m.Success)
            {
                refined = ToKhz(m);
                continue;
            }
            m = DetectedPattern().Match(text);
            if (m.Success)
            {
                if (m.Groups[3].Value == "TSC")
                {
                    tsc = ToKhz(m);
                }
                else
                {
                    processor = ToKhz(m);
                }
            }
        }
        return refined ?? tsc ?? processor;
    }

    /// <summary>
    /// "cpu MHz" is the TSC frequency only where the kernel has no APERF/MPERF to report the current
    /// clock (typical in VMs); elsewhere it changes with frequency scaling and cannot be used.
    /// </summary>
    internal static int? ParseCpuinfo(string cpuinfo)
    {
        string? flags = null, mhz = null;
        foreach (string line in cpuinfo.Split('\n'))
        {
            if (flags is null && line.StartsWith("flags", StringComparison.Ordinal))
            {
                flags = line;
            }
            else if (mhz is null && line.StartsWith("cpu MHz", StringComparison.Ordinal))
            {
                mhz = line[(line.IndexOf(':', StringComparison.Ordinal) + 1)..].Trim();
            }
        }
        if (flags is null || mhz is null)
        {
            return null;
        }
        var set = flags.Split([' ', '\t', ':'], StringSplitOptions.RemoveEmptyEntries);
        if (!set.Contains("constant_tsc") || set.Contains("aperfmperf"))
        {
            return null;
        }
        return double.TryParse(mhz, NumberStyles.Float, CultureInfo.InvariantCulture, out double v) && v > 0
            ? (int)Math.Round(v * 1000)
            : null;
    }

    private static int ToKhz(Match m) =>
        int.Parse(m.Groups[1].Value, CultureInfo.InvariantCulture) * 1000 + int.Parse(m.Groups[2].Value, CultureInfo.InvariantCulture);

    [GeneratedRegex(@"tsc: Refined TSC clocksource calibration: (\d+)\.(\d{3}) MHz")]
    private static partial Regex RefinedPattern();

    [GeneratedRegex(@"tsc: Detected (\d+)\.(\d{3}) MHz (TSC|processor)")]
    private static partial Regex DetectedPattern();
}
