using SandboxVM.Testing;
using SandboxVM.Runtime.Agent;
using SandboxVM.Runtime.Cgroups;
using SandboxVM.Runtime.Gvisor;

namespace SandboxVM.Runtime.Tests;

[CollectionDefinition(Name, DisableParallelization = true)]
public sealed class GvisorCollection : ICollectionFixture<GvisorFixture>
{
    public const string Name = "gvisor";
}

/// <summary>
/// What the gVisor E2E tests share: a runtime with private run and snapshot directories, and one
/// checkpoint (built on first use). The sandboxes' root is this host's <c>/</c>, read-only, with the
/// published agent (SANDBOXVM_AGENT, else artifacts/agent) as init: no template build needed, and the
/// same bundle, channel, checkpoint and restore as a template's. Teardown ends every sandbox left and
/// removes both directories.
/// </summary>
public sealed class GvisorFixture : IAsyncLifetime
{
    private readonly SemaphoreSlim _snapshotLock = new(1, 1);
    private SnapshotInfo? _snapshot;
    private readonly List<GvisorRuntime> _runtimes = [];

    public GvisorFixture()
    {
        string id = Guid.NewGuid().ToString("N")[..8];
        RunDirectory = Path.Combine("/tmp", "svm-gv-e2e-" + id);
        SnapshotDirectory = Path.Combine(Directory.Exists("/dev/shm") ? "/dev/shm" : Path.GetTempPath(), "svm-gv-e2e-" + id);
        TemplateName = "gv-e2e-" + id;
        AgentDirectory = Path.Combine("/var/tmp", "svm-gv-e2e-" + id);
        string? agent = FindAgent();
        AgentPath = agent is not null && File.Exists(agent) ? AgentStaging.CopyTo(agent, AgentDirectory) : agent;
        SkipReason = FindSkipReason();
    }

    /// <summary>
    /// Where the agent is copied: the sandbox's root is the host's, but its /tmp and home are fresh tmpfs,
    /// so an agent in a checkout under /tmp (a CI clone) would not be there.
    /// </summary>
    public string AgentDirectory { get; }

    public string? SkipReason { get; }
    public string RunDirectory { get; }
    public string SnapshotDirectory { get; }
    public string TemplateName { get; }
    public string? AgentPath { get; }
    public GvisorRuntime Runtime { get; private set; } = null!;

    /// <summary>The spec whose checkpoint <see cref="SnapshotAsync"/> prepares.</summary>
    public VmSpec Spec => new()
    {
        TemplateName = TemplateName,
        RootfsDir = "/",
        MemoryMib = 256,
        Vcpus = 1,
        MaxProcesses = 64,
        WritableBytes = 64L << 20,
        WarmupKey = "write /tmp/warm",
    };

    public GvisorRuntime NewRuntime(string? runDirectory = null, string? runscPath = null)
    {
        var runtime = new GvisorRuntime(new GvisorRuntimeOptions
        {
            RunscPath = runscPath ?? "/usr/bin/runsc",
            RunDirectory = runDirectory ?? RunDirectory,
            SnapshotDirectory = SnapshotDirectory,
            AgentPath = AgentPath!,
            RequireCgroups = false,
        }, new CgroupManager(), new TestLogger<GvisorRuntime>());
        lock (_runtimes)
        {
            _runtimes.Add(runtime);
        }
        return runtime;
    }

    private static string? FindAgent()
    {
        string? env = Environment.GetEnvironmentVariable("SANDBOXVM_AGENT");
        if (!string.IsNullOrEmpty(env))
        {
            return Path.GetFullPath(env);
        }
        for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir is not null; dir = dir.Parent)
        {
            string candidate = Path.Combine(dir.FullName, "artifacts", "agent", "sandboxvm-agent");
            if (File.Exists(candidate))
            {
                return candidate;
            }
        }
        return null;
    }

    private string? FindSkipReason()
    {
        if (!OperatingSystem.IsLinux())
        {
            return "needs Linux";
        }
        if (AgentPath is null || !File.Exists(AgentPath))
        {
            return "the published agent was not found (SANDBOXVM_AGENT, or scripts/build.sh for artifacts/agent/sandboxvm-agent)";
        }
        if (HostPath.Find("runsc") is not { } runsc)
        {
            return "runsc is not installed (scripts/install-deps.sh installs it from bookworm-backports)";
        }
        var status = RunscProbe.Check(runsc, HostFacts.GvisorPlatform, TimeSpan.FromSeconds(30));
        return status.Works ? null : "gVisor cannot run a sandbox here: " + status.Detail;
    }

    public void SkipUnlessAvailable() => Assert.SkipWhen(SkipReason is not null, SkipReason ?? "");

    /// <summary>The fixture's checkpoint; the warm-up leaves /tmp/warm in the sandbox, which every restore must see.</summary>
    public async Task<SnapshotInfo> SnapshotAsync(CancellationToken cancellationToken)
    {
        await _snapshotLock.WaitAsync(cancellationToken);
        try
        {
            return _snapshot ??= await Runtime.PrepareSnapshotAsync(Spec, async (agent, ct) =>
                {
                    await QemuFixture.ShAsync(agent, "echo warmed > /tmp/warm", ct);
                }, cancellationToken)
                ?? throw new InvalidOperationException("the gvisor runtime returned no snapshot");
        }
        finally
        {
            _snapshotLock.Release();
        }
    }

    public ValueTask InitializeAsync()
    {
        if (SkipReason is null)
        {
            Runtime = NewRuntime();
        }
        return ValueTask.CompletedTask;
    }

    public async ValueTask DisposeAsync()
    {
        // Each runtime ends the sandboxes a failed test left running and removes its runsc state.
        foreach (var runtime in _runtimes)
        {
            await runtime.DisposeAsync();
        }
        foreach (string dir in new[] { RunDirectory, SnapshotDirectory, AgentDirectory })
        {
            if (Directory.Exists(dir))
            {
                Directory.Delete(dir, recursive: true);
            }
        }
        _snapshotLock.Dispose();
    }

    public static Task<string> ShAsync(AgentClient agent, string script, CancellationToken cancellationToken) =>
        QemuFixture.ShAsync(agent, script, cancellationToken);
}
