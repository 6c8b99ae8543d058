namespace SandboxVM.Server;

// Bodies of the HTTP API (docs/API.md) that are not Core's run types: written with the server's JSON
// options (snake_case), checked against tests/contract/*.json by ContractTests.

/// <summary>FileInfo: a file or directory in a sandbox.</summary>
internal sealed record FileInfoDto(string Path, string Name, string Kind, long Size, DateTime Mtime);

/// <summary>An artifact without its bytes: the <c>artifact</c> stream event and <c>GET .../artifacts</c>.</summary>
internal sealed record ArtifactInfoDto(string Path, string Mime, long Size, string Sha256);

/// <summary>Data of the <c>stdout</c> and <c>stderr</c> stream events.</summary>
internal sealed record StreamText(string Text);

/// <summary>Body of <c>POST /v1/run</c> and <c>POST /v1/sandboxes/{id}/run</c>; read into Core's <see cref="Core.Runs.RunRequest"/>.</summary>
internal sealed class RunRequestBody
{
    public string? Template { get; set; }
    public string? Code { get; set; }
    public string? Stdin { get; set; }
    public Dictionary<string, string>? Env { get; set; }
    public double? TimeoutS { get; set; }
    public double? CompileTimeoutS { get; set; }

    public Core.Runs.RunRequest ToCore() => new()
    {
        Template = Template,
        Code = Code,
        Stdin = Stdin,
        Env = Env,
        TimeoutS = TimeoutS,
        CompileTimeoutS = CompileTimeoutS,
    };
}

/// <summary>Body of <c>POST /v1/sandboxes</c>; read into Core's <see cref="Core.Sessions.CreateSandboxRequest"/>.</summary>
internal sealed class CreateSandboxBody
{
    public string? Template { get; set; }
    public double? TimeoutS { get; set; }
    public double? IdleTimeoutS { get; set; }
    public Dictionary<string, string>? Metadata { get; set; }
    public bool? KeepRunning { get; set; }
    public string? OnIdle { get; set; }
    public bool? AutoResume { get; set; }
    public string? FromSnapshot { get; set; }

    public Core.Sessions.CreateSandboxRequest ToCore() => new()
    {
        Template = Template, TimeoutS = TimeoutS, IdleTimeoutS = IdleTimeoutS, Metadata = Metadata, KeepRunning = KeepRunning, OnIdle = OnIdle, AutoResume = AutoResume,
        FromSnapshot = FromSnapshot,
    };
}

/// <summary>Body of <c>POST /v1/sandboxes/{id}/fork</c>.</summary>
internal sealed class ForkBody
{
    public int? Count { get; set; }
}

/// <summary>RunResult on the wire (the answer of a run, the <c>result</c> stream event), written from Core's result.</summary>
internal sealed class RunResultBody
{
    public string Stdout { get; set; } = "";
    public string Stderr { get; set; } = "";
    public string Output { get; set; } = "";
    public int? ExitCode { get; set; }
    public Core.Runs.RunStatus Status { get; set; }
    public bool Truncated { get; set; }
    public string? Error { get; set; }
    public string? Result { get; set; }
    public bool BuildCached { get; set; }
    public bool StateReset { get; set; }
    public List<ArtifactBody> Artifacts { get; set; } = [];
    public RunMetricsBody Metrics { get; set; } = new();

    public static RunResultBody From(Core.Runs.RunResult r) => new()
    {
        Stdout = r.Stdout,
        Stderr = r.Stderr,
        Output = r.Output,
        ExitCode = r.ExitCode,
        Status = r.Status,
        Truncated = r.Truncated,
        Error = r.Error,
        Result = r.Result,
        BuildCached = r.BuildCached,
        StateReset = r.StateReset,
        Artifacts = [.. r.Artifacts.Select(a => new ArtifactBody { Path = a.Path, Mime = a.Mime, Size = a.Size, Sha256 = a.Sha256, ContentBase64 = a.ContentBase64 })],
        Metrics = RunMetricsBody.From(r.Metrics),
    };
}

/// <summary>An artifact of a RunResult, its bytes inline when within the caps.</summary>
internal sealed class ArtifactBody
{
    public string Path { get; set; } = "";
    public string Mime { get; set; } = "";
    public long Size { get; set; }
    public string Sha256 { get; set; } = "";
    public string? ContentBase64 { get; set; }
}

/// <summary>RunMetrics on the wire (runs and the tools' answers).</summary>
internal sealed class RunMetricsBody
{
    public double QueueMs { get; set; }
    public double StartupMs { get; set; }
    public double CompileMs { get; set; }
    public double RunMs { get; set; }
    public double HostMs { get; set; }
    public double TotalMs { get; set; }
    public string VmSource { get; set; } = "";

    public static RunMetricsBody From(Core.Runs.RunMetrics m) => new()
    {
        QueueMs = m.QueueMs,
        StartupMs = m.StartupMs,
        CompileMs = m.CompileMs,
        RunMs = m.RunMs,
        HostMs = m.HostMs,
        TotalMs = m.TotalMs,
        VmSource = m.VmSource,
    };
}
