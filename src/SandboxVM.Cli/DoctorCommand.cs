using System.CommandLine;
using SandboxVM.Runtime;

namespace SandboxVM.Cli;

internal static class DoctorCommand
{
    public static Command Create()
    {
        var command = new Command("doctor", "Check this host and say which runtime `auto` would pick");
        command.SetAction(_ =>
        {
            var h = HostFacts.Probe();
            Line("/dev/kvm", h.KvmUsable ? "usable" : h.KvmPresent ? "present but not usable (no permission, or QEMU cannot run a guest with it)" : "missing (no hardware virtualization here)");
            Line("firecracker", h.FirecrackerPath ?? "not installed");
            Line("qemu-system-x86_64", h.QemuPath ?? "not installed (apt-get install qemu-system-x86)");
            Line("runsc (gVisor)", h.RunscPath is null ? "not installed (scripts/install-deps.sh: runsc from bookworm-backports)"
                : h.Runsc is { } runsc ? (runsc.Works ? $"works: {runsc.Detail} ({runsc.Version})" : $"does not work here: {runsc.Detail}") : h.RunscPath);
            if (h.QemuPath is { } qemu)
            {
                var v = Runtime.Qemu.QemuVersion.Read(qemu);
                Line("qemu version", v.Text);
                Line("qemu snapshots", v.ReadOnlySnapshotMemory
                    ? "on: clones map the snapshot's RAM read-only, copy-on-write (readonly=on,rom=off)"
                    : $"off, every VM boots cold: QEMU {Runtime.Qemu.QemuVersion.ReadOnlySnapshotMemorySince}+ is needed to map a snapshot's RAM read-only (scripts/install-deps.sh installs 10.0 from bookworm-backports)");
                Line("qemu runs as", h.IsRoot
                    ? "its own unprivileged uid per VM, never root"
                    : "this user (as root each VM's QEMU gets its own uid)");
            }
            Line("bubblewrap", h.BwrapPath ?? "not installed (apt-get install bubblewrap)");
            Line("mmdebstrap", h.MmdebstrapPath ?? "not installed (apt-get install mmdebstrap): templates cannot be built");
            Line("umoci", SandboxVM.Host.HostPath.Find("umoci") ?? "not installed (apt-get install umoci): templates from OCI images cannot be built");
            Line("skopeo", SandboxVM.Host.HostPath.Find("skopeo") ?? "not installed (apt-get install skopeo): templates cannot fetch OCI images from a registry");
            Line("cgroups", h.Cgroups switch
            {
                Runtime.Cgroups.CgroupVersion.V1 => "v1 (memory, pids, cpu controllers)",
                Runtime.Cgroups.CgroupVersion.V2 => "v2 (unified)",
                _ => "none found: memory and process limits cannot be enforced",
            });
            Line("running as root", h.IsRoot ? "yes" : "no (the process runtime needs root for cgroups)");
            try
            {
                var choice = RuntimeSelector.Choose("auto", h);
                Line("auto picks", choice.Runtime + (choice.Accel is null ? "" : $" ({choice.Accel})"));
                Line("because", choice.Reason);
                Line("isolation", (choice.Runtime switch
                {
                    "process" => IsolationLevel.SharedKernel,
                    "gvisor" => IsolationLevel.UserSpaceKernel,
                    _ => IsolationLevel.Vm,
                }).Describe());
                return 0;
            }
            catch (InvalidOperationException e)
            {
                Line("auto picks", "nothing: " + e.Message);
                return 1;
            }
        });
        return command;
    }

    private static void Line(string what, string value) => Console.WriteLine($"{what,-20} {value}");
}
