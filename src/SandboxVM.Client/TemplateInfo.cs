namespace SandboxVM.Client;

/// <summary>A template the server can run code in, and its current state.</summary>
public sealed class TemplateInfo
{
    /// <summary>Template name, used as <see cref="RunRequest.Template"/>.</summary>
    public string Name { get; init => field = value ?? ""; } = "";

    /// <summary>What the template is for.</summary>
    public string Description { get; init => field = value ?? ""; } = "";

    /// <summary>Language of the code it runs, e.g. <c>python</c>, <c>cpp</c>, <c>go</c>.</summary>
    public string Language { get; init => field = value ?? ""; } = "";

    /// <summary>VM backend serving it: <c>firecracker</c>, <c>qemu</c> or <c>process</c>.</summary>
    public string Runtime { get; init => field = value ?? ""; } = "";

    /// <summary><c>vm</c> (own kernel), <c>user-space-kernel</c> (gVisor) or <c>shared-kernel</c> (process sandbox, weakest).</summary>
    public string Isolation { get; init => field = value ?? ""; } = "";

    /// <summary>Acceleration in use, e.g. <c>kvm</c> or <c>tcg</c>; null when not applicable.</summary>
    public string? Accel { get; init; }

    /// <summary>True when runs can be served now.</summary>
    public bool Available { get; init; }

    /// <summary>Why the template is not available, when <see cref="Available"/> is false.</summary>
    public string? UnavailableReason { get; init; }

    /// <summary>True when its image (and snapshot, where supported) has been built.</summary>
    public bool Built { get; init; }

    /// <summary><c>text</c>, or <c>text+images</c> when files in <c>/tmp/outputs</c> come back as artifacts.</summary>
    public string Output { get; init => field = value ?? ""; } = "";

    /// <summary><c>none</c> (no network device) or <c>proxy</c> (filtered egress through the host).</summary>
    public string Network { get; init => field = value ?? ""; } = "";

    /// <summary>How VMs are prepared: <c>pool</c>, <c>cold</c> or <c>singleton</c>.</summary>
    public string Warmup { get; init => field = value ?? ""; } = "";

    /// <summary>Warm pool state; null when the template has no pool.</summary>
    public TemplatePool? Pool { get; init; }

    /// <summary>Time, output and resource limits applied to runs.</summary>
    public TemplateLimits Limits { get; init => field = value ?? new TemplateLimits(); } = new();

    /// <summary>Virtual CPUs per VM.</summary>
    public int Vcpus { get; init; }

    /// <summary>Memory per VM in MiB.</summary>
    public int MemoryMib { get; init; }

    /// <inheritdoc/>
    public override string ToString() =>
        $"{Name} ({Language}, {Runtime}, {(Available ? "available" : "unavailable: " + UnavailableReason)})";
}

/// <summary>State of a template's pool of warm VMs.</summary>
public sealed class TemplatePool
{
    /// <summary>VMs ready to take a run now.</summary>
    public int Ready { get; init; }

    /// <summary>How many ready VMs the server keeps.</summary>
    public int Target { get; init; }
}

/// <summary>Limits a template applies to each run.</summary>
public sealed class TemplateLimits
{
    /// <summary>Default compile time limit in seconds.</summary>
    public double CompileTimeoutS { get; init; }

    /// <summary>Default run time limit in seconds.</summary>
    public double RunTimeoutS { get; init; }

    /// <summary>Largest run time limit a request may ask for, in seconds.</summary>
    public double MaxTimeoutS { get; init; }

    /// <summary>Most bytes of stdout plus stderr kept.</summary>
    public long OutputBytes { get; init; }

    /// <summary>Most processes the program may have at once.</summary>
    public int Processes { get; init; }

    /// <summary>Largest file the program may write, in bytes.</summary>
    public long FileBytes { get; init; }
}
