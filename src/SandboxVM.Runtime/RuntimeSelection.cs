using SandboxVM.Runtime.Cgroups;

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
    public static HostFacts Probe()
    {
        bool kvm = File.Exists("/dev/kvm");
        string? qemu = FindOnPath("qemu-system-x86_64");
        return new HostFacts(
            KvmPresent: kvm,
            // The ioctl check is cheap; the guest run settles cases where the kernel says yes but QEMU cannot.
            KvmUsable: kvm && Native.KvmCanCreateVm() && (qemu is null || KvmProbe.QemuCanUseKvm(qemu, TimeSpan.FromSeconds(5))),
            FirecrackerPath: FindOnPath("firecracker"),
            QemuPath: qemu,
            BwrapPath: FindOnPath("bwrap"),
            MmdebstrapPath: FindOnPath("mmdebstrap"),
            Cgroups: new CgroupManager().Version,
            IsRoot: Environment.UserName == "root");
    }

    public static string? FindOnPath(string name)
    {
        var dirs = (Environment.GetEnvironmentVariable("PATH") ?? "").Split(':', StringSplitOptions.RemoveEmptyEntries)
            .Concat(["/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin", "/sbin", "/bin"]);
        return dirs.Select(d => Path.Combine(d, name)).FirstOrDefault(File.Exists);
    }
}

/// <summary>The runtime a server will use and why.</summary>
public sealed record RuntimeChoice(string Runtime, string? Accel, string Reason);

/// <summary>
/// Picks a runtime. `auto` prefers firecracker (KVM and a firecracker binary), then qemu with KVM,
/// then qemu with TCG; runtimes this build does not implement yet are passed over with the reason.
/// </summary>
public static class RuntimeSelector
{
    /// <summary>Runtimes implemented in this build.</summary>
    public static IReadOnlySet<string> Implemented { get; } = new HashSet<string> { "process", "qemu" };

    /// <param name="requested">auto, firecracker, qemu or process.</param>
    /// <param name="host">What this host offers.</param>
    /// <param name="accel">auto, kvm or tcg: forces the acceleration of a VM runtime (tcg proves the no-KVM path on a KVM host).</param>
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
            case "firecracker":
                throw new InvalidOperationException("runtime 'firecracker' is not implemented in this build yet");
            case "auto":
                break;
            default:
                throw new ArgumentException($"unknown runtime '{requested}' (expected auto, firecracker, qemu or process)", nameof(requested));
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
        string qemuAccel = kvm ? "kvm" : "tcg";
        if (host.QemuPath is not null)
        {
            if (Implemented.Contains("qemu"))
            {
                return new RuntimeChoice("qemu", qemuAccel, string.Join("; ", notes.Append($"qemu with {qemuAccel}")));
            }
            notes.Add($"qemu ({qemuAccel}) is installed but the qemu runtime is not implemented yet");
        }
        else
        {
            notes.Add("qemu-system-x86_64 is not installed");
        }
        if (host.BwrapPath is not null)
        {
            return new RuntimeChoice("process", null, string.Join("; ", notes.Append("falling back to process (bubblewrap, shared kernel)")));
        }
        throw new InvalidOperationException("no runtime is usable: " + string.Join("; ", notes.Append("bubblewrap is not installed")));
    }
}
