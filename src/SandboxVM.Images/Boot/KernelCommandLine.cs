using System.Globalization;
using System.Runtime.Intrinsics.X86;

namespace SandboxVM.Images.Boot;

/// <summary>Kernel command lines for booting the <see cref="BootArtifacts"/> under QEMU microvm.</summary>
public static class KernelCommandLine
{
    /// <summary>
    /// Serial console that stays silent unless something fails (<c>quiet</c>), reboot at once on a panic
    /// (with <c>-no-reboot</c> the VM then ends), our <c>/init</c>. Never add <c>nomodule</c>: the
    /// virtio drivers of the Debian cloud kernel are modules.
    /// </summary>
    public const string Default = "console=ttyS0 quiet panic=-1 rdinit=/init";

    /// <summary>Used when the host's TSC rate cannot be read.</summary>
    public const int FallbackTscKhz = 2_000_000;

    /// <summary>
    /// <see cref="Default"/> plus what the accelerator needs, plus <paramref name="extra"/> arguments
    /// (e.g. <c>sandboxvm.tmp_size=512M</c>; see <see cref="InitScript"/>).
    /// </summary>
    /// <param name="tcg">
    /// True under TCG: microvm has no PIT speaker gate, HPET or PM timer, so the guest cannot calibrate its
    /// TSC and can hang at "tsc: Unable to calibrate against PIT". <c>tsc_early_khz</c> gives it the rate.
    /// TCG's guest TSC is the host's TSC, so the host's rate is the right value; a wrong one makes the
    /// guest clock (and the agent's timeouts) run fast or slow by the same factor. <c>tsc=reliable</c> keeps
    /// the TSC as the clocksource (see the runtime's README). Under KVM the
    /// guest gets the rate from kvmclock: pass false. Also skips the crypto self-tests
    /// (<c>cryptomgr.notests</c>), which take about 0.3 s of an emulated boot.
    /// </param>
    /// <param name="extra">More arguments, appended in order.</param>
    public static string For(bool tcg, params IEnumerable<string> extra)
    {
        ArgumentNullException.ThrowIfNull(extra);
        var args = new List<string> { Default };
        if (tcg)
        {
            args.Add("tsc_early_khz=" + (HostTscKhz() ?? FallbackTscKhz).ToString(CultureInfo.InvariantCulture));
            // Keeps the TSC as the clocksource: the watchdog's only reference under TCG is jiffies, whose
            // late ticks make it call the TSC unstable and switch the guest clock to jiffies.
            args.Add("tsc=reliable");
            args.Add("cryptomgr.notests");
        }
        foreach (var e in extra)
        {
            if (string.IsNullOrWhiteSpace(e) || e.Any(char.IsControl))
                throw new ArgumentException($"'{e}' is not a kernel command line argument.", nameof(extra));
            args.Add(e.Trim());
        }

        return string.Join(' ', args);
    }

    /// <summary>The host's TSC rate in kHz from CPUID when the CPU or hypervisor states it, else from
    /// <c>/proc/cpuinfo</c>; null when it cannot be told.</summary>
    public static int? HostTscKhz()
    {
        if (CpuidTscKhz() is { } khz)
            return khz;
        try
        {
            return File.Exists("/proc/cpuinfo") ? ParseTscKhz(File.ReadAllText("/proc/cpuinfo")) : null;
        }
        catch (IOException)
        {
            return null;
        }
    }

    /// <summary>
    /// Exact rates: the hypervisor timing leaf 0x40000010 (KVM/QEMU and VMware put the TSC kHz in EAX), or
    /// Intel's leaf 0x15 (TSC/crystal ratio times the crystal clock). Null when neither says.
    /// </summary>
    internal static int? CpuidTscKhz()
    {
        if (!X86Base.IsSupported)
            return null;
        const int hypervisorBit = 1 << 31;
        if ((X86Base.CpuId(1, 0).Ecx & hypervisorBit) != 0)
        {
            var (maxLeaf, b, c, d) = X86Base.CpuId(0x40000000, 0);
            Span<byte> vendor = stackalloc byte[12];
            BitConverter.TryWriteBytes(vendor, b);
            BitConverter.TryWriteBytes(vendor[4..], c);
            BitConverter.TryWriteBytes(vendor[8..], d);
            var known = vendor.SequenceEqual("KVMKVMKVM\0\0\0"u8) || vendor.SequenceEqual("VMwareVMware"u8);
            if (known && (uint)maxLeaf >= 0x40000010 && Plausible(X86Base.CpuId(0x40000010, 0).Eax) is { } khz)
                return khz;
        }

        if ((uint)X86Base.CpuId(0, 0).Eax >= 0x15)
        {
            var (denominator, numerator, crystalHz, _) = X86Base.CpuId(0x15, 0);
            if (denominator > 0 && numerator > 0 && crystalHz > 0)
                return Plausible((long)crystalHz * numerator / denominator / 1000);
        }

        return null;
    }

    private static int? Plausible(long khz) => khz is > 100_000 and < 10_000_000 ? (int)khz : null;

    /// <summary>
    /// "cpu MHz" of the first processor. With <c>constant_tsc</c> (every x86 CPU of the last 15 years) the TSC
    /// ticks at a fixed rate; in a VM host and on CPUs flagged <c>tsc_known_freq</c> "cpu MHz" is that rate.
    /// On bare metal with frequency scaling it is the current core clock, an approximation.
    /// </summary>
    internal static int? ParseTscKhz(string cpuinfo)
    {
        foreach (var line in cpuinfo.Split('\n'))
        {
            var colon = line.IndexOf(':', StringComparison.Ordinal);
            if (colon < 0 || line[..colon].Trim() != "cpu MHz")
                continue;
            if (double.TryParse(line[(colon + 1)..].Trim(), NumberStyles.Float, CultureInfo.InvariantCulture, out var mhz) && mhz is > 100 and < 100_000)
                return (int)Math.Round(mhz * 1000);
            return null;
        }

        return null;
    }
}
