using System.Text;
using SandboxVM.Protocol;
using SandboxVM.Runtime.Agent;
using SandboxVM.Runtime.Cgroups;
using SandboxVM.Runtime.Qemu;

namespace SandboxVM.Runtime.Tests;

[CollectionDefinition(Name, DisableParallelization = true)]
public sealed class QemuCollection : ICollectionFixture<QemuFixture>
{
    public const string Name = "qemu";
}

/// <summary>
/// What the E2E tests share: boot artifacts from SANDBOXVM_KERNEL / SANDBOXVM_INITRD /
/// SANDBOXVM_ROOTFS_IMG, a TCG runtime with private run and snapshot directories, and one snapshot
/// (built on first use). Teardown ends every VM left and removes both directories.
/// </summary>
public sealed class QemuFixture : IAsyncLifetime
{
    private readonly SemaphoreSlim _snapshotLock = new(1, 1);
    private SnapshotInfo? _snapshot;

    public QemuFixture()
    {
        string id = Guid.NewGuid().ToString("N")[..8];
        RunDirectory = Path.Combine("/tmp", "svm-e2e-" + id);
        SnapshotDirectory = Path.Combine(Directory.Exists("/dev/shm") ? "/dev/shm" : Path.GetTempPath(), "svm-e2e-" + id);
        TemplateName = "e2e-" + id;
        SkipReason = FindSkipReason();
    }

    public string? SkipReason { get; }
    public string RunDirectory { get; }
    public string SnapshotDirectory { get; }
    public string TemplateName { get; }
    public QemuRuntime Runtime { get; private set; } = null!;

    public static string? Kernel => Environment.GetEnvironmentVariable("SANDBOXVM_KERNEL");
    public static string? Initrd => Environment.GetEnvironmentVariable("SANDBOXVM_INITRD");
    public static string? RootfsImage => Environment.GetEnvironmentVariable("SANDBOXVM_ROOTFS_IMG");

    /// <summary>The QEMU under test: SANDBOXVM_QEMU (e.g. a newer build unpacked beside the system's), else the system's.</summary>
    public static string QemuPath => Environment.GetEnvironmentVariable("SANDBOXVM_QEMU") is { Length: > 0 } q ? q : "/usr/bin/qemu-system-x86_64";

    /// <summary>Guest RAM of the test VMs.</summary>
    public const int MemoryMib = 512;

    /// <summary>The spec whose snapshot <see cref="SnapshotAsync"/> prepares.</summary>
    public VmSpec Spec => new()
    {
        TemplateName = TemplateName,
        RootfsDir = "/nonexistent",
        RootfsImage = RootfsImage,
        KernelPath = Kernel,
        InitrdPath = Initrd,
        MemoryMib = MemoryMib,
        Vcpus = 1,
        WarmupKey = "write /tmp/warm",
    };

    /// <summary>Always TCG: CI and the target machines have no KVM.</summary>
    public QemuRuntimeOptions Options() => new()
    {
        Accel = "tcg",
        QemuPath = QemuPath,
        RunDirectory = RunDirectory,
        SnapshotDirectory = SnapshotDirectory,
        RequireCgroups = false,
    };

    public QemuRuntime NewRuntime() => new(Options(), new CgroupManager(), new TestLogger<QemuRuntime>());

    private static string? FindSkipReason()
    {
        if (!OperatingSystem.IsLinux())
        {
            return "needs Linux";
        }
        if (!File.Exists(QemuPath))
        {
            return $"{QemuPath} is not installed (apt-get install qemu-system-x86)";
        }
        foreach (var (name, value) in new[] { ("SANDBOXVM_KERNEL", Kernel), ("SANDBOXVM_INITRD", Initrd), ("SANDBOXVM_ROOTFS_IMG", RootfsImage) })
        {
            if (string.IsNullOrEmpty(value))
            {
                return $"{name} is not set (boot artifacts: kernel bzImage, initramfs, ext4 rootfs with the agent)";
            }
            if (!File.Exists(value))
            {
                return $"{name}={value} does not exist";
            }
        }
        return null;
    }

    public void SkipUnlessAvailable() => Assert.SkipWhen(SkipReason is not null, SkipReason ?? "");

    /// <summary>Snapshots need a QEMU that can open their RAM file read-only (see the runtime's README).</summary>
    private void SkipUnlessSnapshots() =>
        Assert.SkipUnless(Runtime.Capabilities.Snapshots, $"{QemuPath} cannot map a snapshot's RAM read-only (needs QEMU 8.2 or later): this runtime boots every VM cold");

    /// <summary>The fixture's snapshot (the test is skipped where the runtime has none); the warm-up leaves /tmp/warm in the guest, which every clone must see.</summary>
    public async Task<SnapshotInfo> SnapshotAsync(CancellationToken cancellationToken)
    {
        SkipUnlessSnapshots();
        await _snapshotLock.WaitAsync(cancellationToken);
        try
        {
            return _snapshot ??= await Runtime.PrepareSnapshotAsync(Spec, async (agent, ct) =>
                {
                    await ShAsync(agent, "echo warmed > /tmp/warm", ct);
                }, cancellationToken)
                ?? throw new InvalidOperationException("the qemu runtime returned no snapshot");
        }
        finally
        {
            _snapshotLock.Release();
        }
    }

    /// <summary>
    /// For tests that only want fast starts: prepares the fixture's snapshot where the runtime has
    /// snapshots (starts restore), and nothing where it has none (starts boot, see <see cref="StartSource"/>).
    /// </summary>
    public async Task PrepareIfSnapshotsAsync(CancellationToken cancellationToken)
    {
        if (Runtime.Capabilities.Snapshots)
        {
            await SnapshotAsync(cancellationToken);
        }
    }

    /// <summary>How a start of <see cref="Spec"/> comes up after <see cref="PrepareIfSnapshotsAsync"/>.</summary>
    public VmSource StartSource => Runtime.Capabilities.Snapshots ? VmSource.Restore : VmSource.Boot;

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
        if (SkipReason is null)
        {
            // A fresh instance sees every VM as a leftover, including any a failed test left running.
            await NewRuntime().CleanupLeftoversAsync(CancellationToken.None);
        }
        foreach (string dir in new[] { RunDirectory, SnapshotDirectory })
        {
            if (Directory.Exists(dir))
            {
                Directory.Delete(dir, recursive: true);
            }
        }
        _snapshotLock.Dispose();
    }

    /// <summary>Runs a shell script in the guest; returns stdout and fails the test on a non-zero exit.</summary>
    public static async Task<string> ShAsync(AgentClient agent, string script, CancellationToken cancellationToken)
    {
        var output = new CollectingObserver();
        ExecResult result = await agent.ExecAsync(new ExecRequest { Run = ["sh", "-c", script], RunTimeoutMs = 60_000 }, output, cancellationToken);
        Assert.True(result.Run is { Reason: TerminationReason.Exited, ExitCode: 0 },
            $"`{script}` ended {result.Run?.Reason} {result.Run?.ExitCode}: {output.Stderr}");
        return output.Stdout.Trim();
    }
}

internal sealed class CollectingObserver : IExecObserver
{
    private readonly StringBuilder _stdout = new();
    private readonly StringBuilder _stderr = new();

    public string Stdout
    {
        get
        {
            lock (_stdout)
            {
                return _stdout.ToString();
            }
        }
    }

    public string Stderr
    {
        get
        {
            lock (_stderr)
            {
                return _stderr.ToString();
            }
        }
    }

    public void OnStdout(ReadOnlySpan<byte> data)
    {
        lock (_stdout)
        {
            _stdout.Append(Encoding.UTF8.GetString(data));
        }
    }

    public void OnStderr(ReadOnlySpan<byte> data)
    {
        lock (_stderr)
        {
            _stderr.Append(Encoding.UTF8.GetString(data));
        }
    }

    public void OnEvent(ExecEvent e)
    {
    }
}

/// <summary>Stdout lines "NAME seconds.micros", each with the host's monotonic time of its arrival.</summary>
internal sealed class StampedLines : IExecObserver
{
    private readonly StringBuilder _pending = new();
    private readonly Dictionary<string, (double Guest, long HostTicks)> _stamps = [];

    public void OnStdout(ReadOnlySpan<byte> data)
    {
        long now = System.Diagnostics.Stopwatch.GetTimestamp();
        lock (_stamps)
        {
            _pending.Append(Encoding.UTF8.GetString(data));
            string text = _pending.ToString();
            int nl;
            while ((nl = text.IndexOf('\n', StringComparison.Ordinal)) >= 0)
            {
                string[] parts = text[..nl].Trim().Split(' ');
                if (parts.Length == 2 && double.TryParse(parts[1], System.Globalization.NumberStyles.Float, System.Globalization.CultureInfo.InvariantCulture, out double v))
                {
                    _stamps[parts[0]] = (v, now);
                }
                text = text[(nl + 1)..];
            }
            _pending.Clear().Append(text);
        }
    }

    public void OnStderr(ReadOnlySpan<byte> data)
    {
    }

    public void OnEvent(ExecEvent e)
    {
    }

    /// <summary>Seconds between two stamps by the guest's clock and by the host's.</summary>
    public (double Guest, double Host) Elapsed(string from, string to)
    {
        lock (_stamps)
        {
            Assert.True(_stamps.ContainsKey(from) && _stamps.ContainsKey(to), $"missing stamps: have {string.Join(", ", _stamps.Keys)}");
            var (g1, h1) = _stamps[from];
            var (g2, h2) = _stamps[to];
            return (g2 - g1, System.Diagnostics.Stopwatch.GetElapsedTime(h1, h2).TotalSeconds);
        }
    }
}
