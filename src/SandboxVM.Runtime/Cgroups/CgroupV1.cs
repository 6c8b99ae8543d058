namespace SandboxVM.Runtime.Cgroups;

internal sealed class CgroupV1 : Cgroup
{
    internal static readonly string[] Controllers = ["memory", "pids", "cpu", "freezer"];

    private readonly string _root;

    private CgroupV1(string root, string name) : base(name) => _root = root;

    private string Dir(string controller) => Path.Combine(_root, controller, ParentName, Name);

    public override IReadOnlyList<string> ProcsFiles =>
        Controllers.Select(c => Path.Combine(Dir(c), "cgroup.procs")).Where(File.Exists).ToList();

    internal static CgroupV1 Open(string root, string name) => new(root, name);

    internal static CgroupV1 Create(string root, string name, CgroupLimits limits)
    {
        var group = new CgroupV1(root, name);
        foreach (string controller in Controllers)
        {
            if (Directory.Exists(Path.Combine(root, controller)))
            {
                Directory.CreateDirectory(group.Dir(controller));
            }
        }
        string memory = group.Dir("memory");
        File.WriteAllText(Path.Combine(memory, "memory.limit_in_bytes"), limits.MemoryBytes.ToString());
        // With swap accounting the same cap covers swap, so a sandbox cannot page its way past the limit.
        string memsw = Path.Combine(memory, "memory.memsw.limit_in_bytes");
        if (File.Exists(memsw))
        {
            File.WriteAllText(memsw, limits.MemoryBytes.ToString());
        }
        string pids = group.Dir("pids");
        if (Directory.Exists(pids))
        {
            File.WriteAllText(Path.Combine(pids, "pids.max"), limits.Pids.ToString());
        }
        string cpu = group.Dir("cpu");
        if (Directory.Exists(cpu))
        {
            File.WriteAllText(Path.Combine(cpu, "cpu.cfs_period_us"), "100000");
            File.WriteAllText(Path.Combine(cpu, "cpu.cfs_quota_us"), ((long)(limits.Cpus * 100000)).ToString());
        }
        return group;
    }

    public override bool CanFreeze => Directory.Exists(Dir("freezer"));

    protected override void WriteFreezer(bool frozen)
    {
        string state = Path.Combine(Dir("freezer"), "freezer.state");
        if (File.Exists(state))
        {
            File.WriteAllText(state, frozen ? "FROZEN" : "THAWED");
        }
    }

    protected override bool ReadFrozen() => ReadText(Path.Combine(Dir("freezer"), "freezer.state")) == "FROZEN";

    public override long OomKillCount() => ReadKeyedValue(Path.Combine(Dir("memory"), "memory.oom_control"), "oom_kill");

    public override long? PeakMemoryBytes() => ReadLong(Path.Combine(Dir("memory"), "memory.max_usage_in_bytes"));

    public override IReadOnlyList<int> Pids()
    {
        // The memory and pids groups hold the same processes; take the union in case one join failed.
        return Controllers.SelectMany(c => ReadPids(Path.Combine(Dir(c), "cgroup.procs"))).Distinct().ToList();
    }

    protected override void RemoveDirectories()
    {
        foreach (string controller in Controllers)
        {
            TryRemoveDir(Dir(controller));
        }
    }
}
