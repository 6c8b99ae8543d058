using System.Diagnostics;
using System.Globalization;
using SandboxVM.Runtime.Cgroups;
using SandboxVM.Runtime.Process;

namespace SandboxVM.Runtime.Qemu;

// Launch: run directory, uid (HostUidPool), cgroup and the QEMU command line behind the cgroup launcher.
public sealed partial class QemuRuntime
{
    /// <summary>Starts QEMU in its run directory and cgroup and connects QMP, console and agent.</summary>
    private async Task<QemuVm> LaunchAsync(VmSpec spec, VmSource source, GuestMemoryKind memory, string? memoryFile, bool incoming, CancellationToken cancellationToken)
    {
        string id = IdPrefix + Guid.NewGuid().ToString("N")[..12];
        string runDir = Path.Combine(_runRoot, id);
        string sockets = Path.Combine(runDir, SocketDirName);
        int? uid = _policy.DropPrivileges ? AllocateUid(spec.TemplateName) : null;
        Cgroup? cgroup = null;
        System.Diagnostics.Process? process = null;
        QemuVm? vm = null;
        try
        {
            // The run dir (pid file) stays the server's; QEMU may only write its socket dir, which no other VM's uid can enter.
            Directory.CreateDirectory(sockets);
            await File.WriteAllTextAsync(Path.Combine(runDir, OwnerFileName), Environment.ProcessId.ToString(CultureInfo.InvariantCulture), CancellationToken.None);
            if (memoryFile is not null)
            {
                // Which snapshot (or build) this VM maps: a server removing stale snapshots leaves it alone.
                await File.WriteAllTextAsync(Path.Combine(runDir, SnapshotStore.RunDirMemoryFileName), Path.GetFullPath(memoryFile), CancellationToken.None);
            }
            if (uid is { } u)
            {
                HostNative.Chown(sockets, u, _options.SandboxGid);
                SetMode(sockets, UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute);
                if (memory == GuestMemoryKind.SharedFile)
                {
                    // The template VM's RAM becomes the snapshot: only its own QEMU may write it while it
                    // is built, not every VM's group; Seal hands it back to the server read-only.
                    HostNative.Chown(memoryFile!, u, _options.SandboxGid);
                    SetMode(memoryFile!, UnixFileMode.UserRead | UnixFileMode.UserWrite);
                }
            }
            if (_useCgroups)
            {
                long overhead = _options.MemoryOverheadMib + (Accel == QemuAccel.Tcg ? _options.TcgTranslationBufferMib : 0);
                cgroup = _cgroups.Create(id, new CgroupLimits((spec.MemoryMib + overhead) << 20, _options.PidsLimit, spec.Vcpus + 1));
            }
            var launch = new QemuLaunchSpec
            {
                Name = id,
                Accel = Accel,
                MemoryMib = spec.MemoryMib,
                Vcpus = spec.Vcpus,
                KernelPath = spec.KernelPath!,
                InitrdPath = spec.InitrdPath!,
                RootfsImage = spec.RootfsImage!,
                KernelCmdline = KernelCmdline(spec),
                Memory = memory,
                MemoryFile = memoryFile,
                AgentSocket = Path.Combine(sockets, AgentSocketName),
                QmpSocket = Path.Combine(sockets, QmpSocketName),
                ConsoleSocket = Path.Combine(sockets, ConsoleSocketName),
                Incoming = incoming,
                Seccomp = _options.Seccomp,
                TcgTranslationBufferMib = _options.TcgTranslationBufferMib,
                Firmware = Firmware,
            };
            process = HostProcess.Start(BuildStartInfo(QemuCommandLine.Build(launch), Path.Combine(runDir, PidFileName), cgroup, uid));
            // process.StandardInput stays open as long as the VM: its end of file is the launch chain's
            // sign that this server is gone (CgroupLauncher, endWithServer).
            vm = new QemuVm(id, spec.TemplateName, source, process, cgroup, runDir, () => Release(id, uid), _options.QuitTimeout, _logger, _time);
            _live[id] = vm;
            await vm.ConnectQmpAsync(_qmpTimeout, cancellationToken);
            await vm.ConnectConsoleAsync(cancellationToken);
            await vm.ConnectAgentAsync(cancellationToken);
            return vm;
        }
        catch (Exception e)
        {
            if (vm is not null)
            {
                await vm.DisposeAsync();
            }
            else
            {
                if (process is not null)
                {
                    HostNative.Kill(process.Id, HostNative.SIGKILL);
                    process.Dispose();
                }
                if (cgroup is not null)
                {
                    await cgroup.DestroyAsync(CancellationToken.None);
                }
                TryDeleteDirectory(runDir);
                Release(id, uid);
            }
            if (e is OperationCanceledException && cancellationToken.IsCancellationRequested)
            {
                throw;
            }
            throw new SandboxStartException($"qemu for {spec.TemplateName} did not start: {e.Message}. {vm?.Diagnostics}", e);
        }
    }

    private ProcessStartInfo BuildStartInfo(IReadOnlyList<string> qemuArgs, string pidFile, Cgroup? cgroup, int? uid)
    {
        var psi = CgroupLauncher.StartInfo(cgroup, pidFile, endWithServer: true);
        var a = psi.ArgumentList;
        if (uid is { } u)
        {
            a.Add(_options.SetprivPath);
            a.Add($"--reuid={u}");
            a.Add($"--regid={_options.SandboxGid}");
            a.Add(_policy.KvmGroup is { } g ? $"--groups={g}" : "--clear-groups");
            a.Add("--no-new-privs");
            a.Add("--");
        }
        a.Add(_options.QemuPath);
        foreach (string arg in qemuArgs)
        {
            a.Add(arg);
        }
        return psi;
    }

    internal string KernelCmdline(VmSpec spec)
    {
        var parts = new List<string> { _options.KernelArgs };
        if (_policy.TscKhz is { } khz)
        {
            // The rate, and tsc=reliable: without it the clocksource watchdog compares the TSC with
            // jiffies, whose ticks arrive late or bunched under TCG, calls the TSC unstable and switches
            // the guest to jiffies, whose rate then follows the host's load (measured 0.80-0.97 of real
            // time; a snapshot taken after the switch hands the jiffies clock to every clone). The TCG
            // guest TSC is the host's, so it is as stable as the host's (constant_tsc, HostTsc checks it).
            parts.Add($"tsc_early_khz={khz.ToString(CultureInfo.InvariantCulture)} tsc=reliable");
        }
        if (!string.IsNullOrWhiteSpace(spec.KernelArgs))
        {
            parts.Add(spec.KernelArgs);
        }
        return string.Join(' ', parts.Where(p => p.Length > 0));
    }

    private int AllocateUid(string template)
    {
        try
        {
            return HostUidPool.Allocate(_options.UidBase, _options.UidCount);
        }
        catch (InvalidOperationException e)
        {
            // Never a shared uid, never root: no VM starts without a uid of its own.
            throw new SandboxStartException(
                $"qemu for {template} did not start: {e.Message} ({_options.UidBase}..{_options.UidBase + _options.UidCount - 1})");
        }
    }

    private void Release(string id, int? uid)
    {
        _live.TryRemove(id, out _);
        if (uid is { } u)
        {
            HostUidPool.Release(u);
        }
    }

}
