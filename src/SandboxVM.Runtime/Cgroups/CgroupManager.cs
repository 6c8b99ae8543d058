namespace SandboxVM.Runtime.Cgroups;

/// <summary>Which cgroup hierarchy this host has.</summary>
public enum CgroupVersion
{
    None,
    V1,
    V2,
}

/// <summary>Creates sandbox cgroups on either hierarchy and sweeps those left by a dead server.</summary>
public sealed class CgroupManager
{
    private readonly string _root;

    public CgroupVersion Version { get; }

    public CgroupManager(string root = "/sys/fs/cgroup")
    {
        _root = root;
        Version = File.Exists(Path.Combine(root, "cgroup.controllers")) ? CgroupVersion.V2
            : Directory.Exists(Path.Combine(root, "memory")) ? CgroupVersion.V1
            : CgroupVersion.None;
    }

    /// <summary>
    /// Whether <paramref name="runtime"/> will put its sandboxes in cgroups: <see cref="IsUsable"/>, or an
    /// error naming what was found when the runtime requires them (production) and they are not usable.
    /// </summary>
    public bool UsableFor(string runtime, bool required) =>
        IsUsable || (required
            ? throw new InvalidOperationException(
                $"the {runtime} runtime needs writable cgroups (found {Version}); run as root or set RequireCgroups=false for development")
            : false);

    /// <summary>True when this process can create cgroups (root, writable hierarchy).</summary>
    public bool IsUsable
    {
        get
        {
            if (Version == CgroupVersion.None)
            {
                return false;
            }
            try
            {
                EnsureParents();
                return true;
            }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException)
            {
                return false;
            }
        }
    }

    public Cgroup Create(string name, CgroupLimits limits) => Version switch
    {
        CgroupVersion.V1 => CgroupV1.Create(_root, name, limits),
        CgroupVersion.V2 => CgroupV2.Create(_root, name, limits),
        _ => throw new InvalidOperationException("this host has no usable cgroup hierarchy"),
    };

    /// <summary>
    /// Kills and removes the sandbox cgroups under our parent named <c>PREFIX-OWNERPID-...</c> whose owner
    /// process is gone (a server that died). Groups of live servers, and of other runtimes, are left alone.
    /// </summary>
    public async Task<int> SweepAsync(string prefix, CancellationToken cancellationToken = default)
    {
        var names = new HashSet<string>();
        foreach (string parent in ParentDirectories())
        {
            if (Directory.Exists(parent))
            {
                foreach (string d in Directory.GetDirectories(parent))
                {
                    string name = Path.GetFileName(d);
                    if (IsLeftover(name, prefix))
                    {
                        names.Add(name);
                    }
                }
            }
        }
        foreach (string name in names)
        {
            Cgroup group = Version == CgroupVersion.V1 ? CgroupV1.Open(_root, name) : CgroupV2.Open(_root, name);
            await group.DestroyAsync(cancellationToken);
        }
        return names.Count;
    }

    /// <summary>The existing group <paramref name="name"/> under our parent (to end a dead server's sandbox), or null when there is none.</summary>
    public Cgroup? OpenExisting(string name) => Version switch
    {
        CgroupVersion.V1 when CgroupV1.Controllers.Any(c => Directory.Exists(Path.Combine(_root, c, Cgroup.ParentName, name))) => CgroupV1.Open(_root, name),
        CgroupVersion.V2 when Directory.Exists(Path.Combine(_root, Cgroup.ParentName, name)) => CgroupV2.Open(_root, name),
        _ => null,
    };

    /// <summary>Name for a new group owned by this process: the sweep of a later server recognises it.</summary>
    public static string OwnedName(string prefix, string id) => $"{prefix}-{Environment.ProcessId}-{id}";

    private static bool IsLeftover(string name, string prefix)
    {
        var parts = name.Split('-');
        if (parts.Length < 3 || parts[0] != prefix || !int.TryParse(parts[1], out int owner))
        {
            return false;
        }
        return owner != Environment.ProcessId && !HostProcs.IsAlive(owner);
    }

    private IEnumerable<string> ParentDirectories() => Version switch
    {
        CgroupVersion.V1 => CgroupV1.Controllers.Select(c => Path.Combine(_root, c, Cgroup.ParentName)),
        CgroupVersion.V2 => [Path.Combine(_root, Cgroup.ParentName)],
        _ => [],
    };

    private void EnsureParents()
    {
        if (Version == CgroupVersion.V2)
        {
            CgroupV2.EnsureParent(_root);
            return;
        }
        foreach (string dir in ParentDirectories())
        {
            Directory.CreateDirectory(dir);
        }
    }
}
