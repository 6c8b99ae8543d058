using SandboxVM.Runtime.Cgroups;

namespace SandboxVM.Runtime.Qemu;

// The leftover sweep: what a dead server left behind.
public sealed partial class QemuRuntime
{
    internal static bool OwnerAlive(string runDir) => HostProcs.ReadPid(Path.Combine(runDir, OwnerFileName)) is int owner && HostProcs.IsAlive(owner);

    /// <summary>
    /// Ends what a dead server left: QEMU processes (only those whose command line names their run
    /// directory, so a recycled pid is never killed), their cgroups and run directories, and unfinished
    /// snapshot builds nobody holds the lock of. VMs of a server that is still running (this one included) are left alone.
    /// </summary>
    public async Task<int> CleanupLeftoversAsync(CancellationToken cancellationToken)
    {
        int ended = 0;
        // Only run directories are walked, never every qemu-* cgroup: another server (or test) with
        // its own run directory may share the cgroup parent. Each VM's run dir is created before its
        // cgroup and removed after it, so a leftover cgroup always has one.
        if (Directory.Exists(_runRoot))
        {
            foreach (string dir in Directory.GetDirectories(_runRoot, IdPrefix + "*"))
            {
                string id = Path.GetFileName(dir);
                if (_live.ContainsKey(id) || OwnerAlive(dir))
                {
                    // Ours, or another live server's (this process's other runtimes count as live).
                    continue;
                }
                bool killed = false;
                if (HostProcs.ReadPid(Path.Combine(dir, PidFileName)) is int pid && IsOurQemu(pid, dir))
                {
                    HostNative.Kill(pid, HostNative.SIGKILL);
                    await WaitGoneAsync(pid, cancellationToken);
                    QemuLog.LeftoverEnded(_logger, id, pid);
                    killed = true;
                }
                bool hadCgroup = await DestroyCgroupAsync(id, cancellationToken);
                if (killed || hadCgroup)
                {
                    ended++;
                }
                TryDeleteDirectory(dir);
            }
        }
        await _snapshotBuilds.SweepAsync(SnapshotPhase, _options.SnapshotDirectory);
        return ended;
    }

    private static bool IsOurQemu(int pid, string runDir) =>
        HostProcs.CommandLine(pid) is { } cmdline && cmdline.Contains(runDir + "/", StringComparison.Ordinal);

    private async Task WaitGoneAsync(int pid, CancellationToken cancellationToken)
    {
        long start = _time.GetTimestamp();
        // A zombie (our own child, not yet reaped) counts as gone.
        while (HostProcs.IsRunning(pid) && _time.GetElapsedTime(start) < TimeSpan.FromSeconds(5))
        {
            await Task.Delay(TimeSpan.FromMilliseconds(10), _time, cancellationToken);
        }
    }

    private async Task<bool> DestroyCgroupAsync(string id, CancellationToken cancellationToken)
    {
        if (!_useCgroups)
        {
            return false;
        }
        Cgroup? group = OpenCgroup(id);
        if (group is null)
        {
            return false;
        }
        await group.DestroyAsync(cancellationToken);
        return true;
    }

    private Cgroup? OpenCgroup(string name)
    {
        string root = _options.CgroupRoot;
        return _cgroups.Version switch
        {
            CgroupVersion.V1 when CgroupV1.Controllers.Any(c => Directory.Exists(Path.Combine(root, c, Cgroup.ParentName, name)))
                => CgroupV1.Open(root, name),
            CgroupVersion.V2 when Directory.Exists(Path.Combine(root, Cgroup.ParentName, name)) => CgroupV2.Open(root, name),
            _ => null,
        };
    }

}
