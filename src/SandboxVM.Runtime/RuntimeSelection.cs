using SandboxVM.Runtime.Cgroups;
using SandboxVM.Runtime.Gvisor;

namespace SandboxVM.Runtime;

/// <summary>What this host offers to the runtimes, probed once at start and shown by `sandboxvm doctor`.</summary>
public sealed record HostFacts(
    bool KvmPresent,
    bool KvmUsable,
    string? FirecrackerPath,
    string? QemuPath,
    string? BwrapPath,
    string? MmdebstrapPath,
    CgroupVersion Cgroups,
    bool IsRoot)
{
    /// <summary>runsc (gVisor), if installed.</summary>
    public string? RunscPath { get; init; }

    /// <summary>Whether a gVisor sandbox really ran here; null when not probed (see <see cref="Probe"/>).</summary>
    public RunscStatus? Runsc { get; init; }

    /// <summary>The platform gvisor sandboxes use (and the probe tries).</summary>
    public const string GvisorPlatform = "systrap";

    /// <param name="probeRunsc">Run a tiny gVisor sandbox to see whether runsc works here (about a second): only when gvisor may be chosen.</param>
    public static HostFacts Probe(bool probeRunsc = true)
    {
        bool kvm = File.Exists("/dev/kvm");
        string? qemu = FindOnPath("qemu-system-x86_64");
        string? runsc = FindOnPath("runsc");
        return new HostFacts(
            KvmPresent: kvm,
            // The ioctl check is cheap; the guest run settles cases where the kernel says yes but QEMU cannot.
            KvmUsable: kvm && HostNative.KvmCanCreateVm() && (qemu is null || KvmProbe.QemuCanUseKvm(qemu, TimeSpan.FromSeconds(5))),
            FirecrackerPath: FindOnPath("firecracker"),
            QemuPath: qemu,
            BwrapPath: FindOnPath("bwrap"),
            MmdebstrapPath: FindOnPath("mmdebstrap"),
            Cgroups: new CgroupManager().Version,
            IsRoot: Environment.UserName == "root")
        {
            RunscPath = runsc,
            Runsc = probeRunsc && runsc is not null ? RunscProbe.Check(runsc, GvisorPlatform, TimeSpan.FromSeconds(20)) : null,
        };
    }

    private static string? FindOnPath(string name) => HostPath.Find(name);
}

/// <summary>The runtime a server will use and why.</summary>
public sealed record RuntimeChoice(string Runtime, string? Accel, string Reason);

/// <summary>
/// Picks a runtime. `auto` prefers firecracker (KVM and a firecracker binary), then qemu with KVM (only
/// when QEMU really ran a guest with it), then gvisor where a gVisor sandbox really ran, then qemu with
/// TCG, then the process runtime; runtimes this build
/// does not implement yet are passed over with the reason.
/// </summary>
public static class RuntimeSelector
{
    /// <summary>Runtimes implemented in this build.</summary>
    public static IReadOnlySet<string> Implemented { get; } = new HashSet<string> { "process", "qemu", "gvisor" };

    /// <param name="requested">auto, firecracker, qemu, gvisor or process.</param>
    /// <param name="host">What this host offers.</param>
    /// <param name="accel">auto, kvm or tcg: forces the acceleration of qemu (tcg proves the no-KVM path on a KVM host, and keeps `auto` on qemu).</param>
    public static RuntimeChoice Choose(string requested, HostFacts host, string accel = "auto")
    {
        if (accel is not ("auto" or "kvm" or "tcg"))
        {
            throw new ArgumentException($"unknown accel '{accel}' (expected auto, kvm or tcg)", nameof(accel));
        }
        if (accel == "kvm" && !host.KvmUsable)
        {
            throw new InvalidOperationException("accel 'kvm' was requested but KVM cannot create a VM on this host");
        }
        bool kvm = accel == "kvm" || (accel == "auto" && host.KvmUsable);
        var notes = new List<string>();
        switch (requested)
        {
            case "process":
                return host.BwrapPath is null
                    ? throw new InvalidOperationException("runtime 'process' needs bubblewrap (apt-get install bubblewrap)")
                    : new RuntimeChoice("process", null, "requested explicitly; shared-kernel isolation (bubblewrap)");
            case "qemu":
                return host.QemuPath is null
                    ? throw new InvalidOperationException("runtime 'qemu' needs qemu-system-x86_64 (apt-get install qemu-system-x86)")
                    : new RuntimeChoice("qemu", kvm ? "kvm" : "tcg", $"requested explicitly; qemu with {(kvm ? "kvm" : "tcg")}");
            case "gvisor":
                if (host.RunscPath is null)
                {
                    throw new InvalidOperationException("runtime 'gvisor' needs runsc (scripts/install-deps.sh installs it from Debian's bookworm-backports)");
                }
                if (host.Runsc is { Works: false } failed)
                {
                    throw new InvalidOperationException($"runtime 'gvisor' cannot run a sandbox on this host: {failed.Detail}");
                }
                return new RuntimeChoice("gvisor", HostFacts.GvisorPlatform,
                    $"requested explicitly; gVisor ({HostFacts.GvisorPlatform}), user-space-kernel isolation");
            case "firecracker":
                throw new InvalidOperationException("runtime 'firecracker' is not implemented in this build yet");
            case "auto":
                break;
            default:
                throw new ArgumentException($"unknown runtime '{requested}' (expected auto, firecracker, qemu, gvisor or process)", nameof(requested));
        }

        if (kvm && host.FirecrackerPath is not null)
        {
            if (Implemented.Contains("firecracker"))
            {
                return new RuntimeChoice("firecracker", "kvm", "/dev/kvm is usable and firecracker is installed");
            }
            notes.Add("firecracker would fit (KVM + binary) but is not implemented yet");
        }
        else
        {
            notes.Add(!kvm && host.KvmUsable ? "KVM not used (accel tcg requested)"
                : kvm ? "no firecracker binary" : host.KvmPresent ? "/dev/kvm is not usable" : "no /dev/kvm");
        }
        if (kvm && host.QemuPath is not null)
        {
            return new RuntimeChoice("qemu", "kvm", string.Join("; ", notes.Append("qemu with kvm")));
        }
        string? gvisor = GvisorNote(host, accel);
        if (gvisor is null)
        {
            return new RuntimeChoice("gvisor", HostFacts.GvisorPlatform,
                string.Join("; ", notes.Append($"gVisor ran a {HostFacts.GvisorPlatform} sandbox here ({host.Runsc!.Version})")));
        }
        notes.Add(gvisor);
        if (host.QemuPath is not null)
        {
            string qemuAccel = kvm ? "kvm" : "tcg";
            return new RuntimeChoice("qemu", qemuAccel, string.Join("; ", notes.Append($"qemu with {qemuAccel}")));
        }
        notes.Add("qemu-system-x86_64 is not installed");
        if (host.BwrapPath is not null)
        {
            return new RuntimeChoice("process", null, string.Join("; ", notes.Append("falling back to process (bubblewrap, shared kernel)")));
        }
        throw new InvalidOperationException("no runtime is usable: " + string.Join("; ", notes.Append("bubblewrap is not installed")));
    }

    /// <summary>Why `auto` does not take gvisor on a host without KVM, or null when it does.</summary>
    private static string? GvisorNote(HostFacts host, string accel)
    {
        if (host.RunscPath is null)
        {
            return "runsc (gVisor) is not installed";
        }
        if (host.Runsc is not { } runsc)
        {
            return "runsc was not probed";
        }
        if (!runsc.Works)
        {
            return "gVisor does not run here: " + runsc.Detail;
        }
        if (accel == "tcg")
        {
            return "gVisor works but accel tcg was requested";
        }
        return null;
    }
}
