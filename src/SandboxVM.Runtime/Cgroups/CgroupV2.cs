namespace SandboxVM.Runtime.Cgroups;

internal sealed class CgroupV2 : Cgroup
{
    private readonly string _dir;

    private CgroupV2(string root, string name) : base(name) => _dir = Path.Combine(root, ParentName, name);

    public override IReadOnlyList<string> ProcsFiles => [Path.Combine(_dir, "cgroup.procs")];

    internal static CgroupV2 Open(string root, string name) => new(root, name);

    internal static void EnsureParent(string root)
    {
        string parent = Path.Combine(root, ParentName);
        Directory.CreateDirectory(parent);
        // Controllers must be enabled on every level above the sandbox groups.
        foreach (string dir in new[] { root, parent })
        {
            string control = Path.Combine(dir, "cgroup.subtree_control");
            string enabled = File.ReadAllText(control);
            foreach (string c in new[] { "memory", "pids", "cpu" })
            {
                if (!enabled.Split(' ', StringSplitOptions.TrimEntries).Contains(c))
                {
                    File.WriteAllText(control, "+" + c);
                }
            }
        }
    }

    internal static CgroupV2 Create(string root, string name, CgroupLimits limits)
    {
        EnsureParent(root);
        var group = new CgroupV2(root, name);
        Directory.CreateDirectory(group._dir);
        File.WriteAllText(Path.Combine(group._dir, "memory.max"), limits.MemoryBytes.ToString());
        string swap = Path.Combine(group._dir, "memory.swap.max");
        if (File.Exists(swap))
        {
            File.WriteAllText(swap, "0");
        }
        File.WriteAllText(Path.Combine(group._dir, "pids.max"), limits.Pids.ToString());
        File.WriteAllText(Path.Combine(group._dir, "cpu.max"), $"{(long)(limits.Cpus * 100000)} 100000");
        return group;
    }

    public override bool CanFreeze => File.Exists(Path.Combine(_dir, "cgroup.freeze"));

    protected override void WriteFreezer(bool frozen)
    {
        string freeze = Path.Combine(_dir, "cgroup.freeze");
        if (File.Exists(freeze))
        {
            File.WriteAllText(freeze, frozen ? "1" : "0");
        }
    }

    protected override bool ReadFrozen() => ReadKeyedValue(Path.Combine(_dir, "cgroup.events"), "frozen") == 1;

    public override long OomKillCount() => ReadKeyedValue(Path.Combine(_dir, "memory.events"), "oom_kill");

    public override long? PeakMemoryBytes() => ReadLong(Path.Combine(_dir, "memory.peak"));

    public override IReadOnlyList<int> Pids() => ReadPids(Path.Combine(_dir, "cgroup.procs"));

    protected override void KillAll(IReadOnlyList<int> pids)
    {
        // cgroup.kill (5.14+) kills the group atomically, including processes forked meanwhile.
        string kill = Path.Combine(_dir, "cgroup.kill");
        if (File.Exists(kill))
        {
            File.WriteAllText(kill, "1");
            return;
        }
        base.KillAll(pids);
    }

    protected override void RemoveDirectories() => TryRemoveDir(_dir);
}
