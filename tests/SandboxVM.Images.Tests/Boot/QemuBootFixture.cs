using System.Diagnostics;
using Microsoft.Extensions.Logging.Abstractions;
using SandboxVM.Images.Boot;

namespace SandboxVM.Images.Tests.Boot;

/// <summary>
/// Builds the boot artifacts and a root disk once for the boot tests. The cache is a temp directory
/// unless SANDBOXVM_TEST_BOOT_CACHE names one to reuse between runs. The root disk comes from a
/// template rootfs already in the default image cache that holds the real (NativeAOT) agent, or
/// SANDBOXVM_TEST_ROOTFS; failing both, a minbase rootfs is built with the agent from
/// SANDBOXVM_AGENT_BINARY or artifacts/agent/sandboxvm-agent (root and mmdebstrap needed).
/// </summary>
public sealed class QemuBootFixture : IAsyncLifetime
{
    private string? _tempCache;

    public string? SkipReason { get; private set; }

    public BootArtifacts Artifacts { get; private set; } = null!;

    public string RootDisk { get; private set; } = "";

    public string RootfsSource { get; private set; } = "";

    public TimeSpan BuildTime { get; private set; }

    public string CacheRoot { get; private set; } = "";

    public List<string> Progress { get; } = [];

    public async ValueTask InitializeAsync()
    {
        if (!TestCache.HasTool("qemu-system-x86_64"))
        {
            SkipReason = "qemu-system-x86_64 is not installed (apt-get install qemu-system-x86)";
            return;
        }

        if (!TestCache.HasTool("apt-get") || !TestCache.HasTool("dpkg-deb"))
        {
            SkipReason = "needs apt-get and dpkg-deb (a Debian host) to fetch the kernel and busybox";
            return;
        }

        var ct = TestContext.Current.CancellationToken;
        CacheRoot = Environment.GetEnvironmentVariable("SANDBOXVM_TEST_BOOT_CACHE") is { Length: > 0 } shared
            ? shared
            : _tempCache = Directory.CreateTempSubdirectory("sbvm-boot-cache-").FullName;
        var options = new ImageBuilderOptions { CacheRoot = CacheRoot };
        var progress = new Collect(Progress);

        var stopwatch = Stopwatch.StartNew();
        Artifacts = await new BootArtifactsBuilder(options, NullLogger<BootArtifactsBuilder>.Instance).BuildAsync(progress, ct);
        BuildTime = stopwatch.Elapsed;

        var images = new ImageBuilder(options, NullLogger<ImageBuilder>.Instance);
        BuiltImage? image = FindRootfs();
        if (image is null)
        {
            var agent = FindAgentBinary();
            if (agent is null || !Environment.IsPrivilegedProcess || !TestCache.HasTool("mmdebstrap"))
            {
                SkipReason = "no cached template rootfs with the real agent, and cannot build one (needs root, mmdebstrap and a published agent: SANDBOXVM_AGENT_BINARY)";
                return;
            }

            image = await images.BuildRootfsAsync(new ImageSpec("boot-test", "debian", "bookworm", [], [], agent), progress, ct);
        }

        RootfsSource = image.RootfsDir;
        RootDisk = await images.BuildExt4Async(image, 1536, progress, ct);
    }

    public async ValueTask DisposeAsync()
    {
        if (_tempCache is not null)
        {
            using var rm = Process.Start("rm", ["-rf", "--one-file-system", "--", _tempCache]);
            await rm.WaitForExitAsync(CancellationToken.None);
        }
    }

    /// <summary>A template rootfs in the default cache whose agent is the real binary (not a placeholder).</summary>
    private static BuiltImage? FindRootfs()
    {
        if (Environment.GetEnvironmentVariable("SANDBOXVM_TEST_ROOTFS") is { Length: > 0 } given)
            return new BuiltImage(given, "test-rootfs-" + Path.GetFileName(Path.GetDirectoryName(Path.GetFullPath(given))), true, TimeSpan.Zero);
        var rootfsPhase = Path.Combine(ImageBuilderOptions.DefaultCacheRoot, "rootfs");
        if (!Directory.Exists(rootfsPhase))
            return null;
        var candidates = Directory.GetDirectories(rootfsPhase)
            .Where(d => !Path.GetFileName(d).Contains(".tmp-", StringComparison.Ordinal))
            .Select(d => (Dir: Path.Combine(d, "rootfs"), Key: Path.GetFileName(d)))
            .Where(c => IsRealAgent(Path.Combine(c.Dir, ImageLayout.AgentPath.TrimStart('/'))))
            .OrderByDescending(c => Directory.GetLastWriteTimeUtc(Path.GetDirectoryName(c.Dir)!))
            .ToList();
        return candidates.Count == 0 ? null : new BuiltImage(candidates[0].Dir, candidates[0].Key, true, TimeSpan.Zero);
    }

    private static bool IsRealAgent(string path)
    {
        var info = new FileInfo(path);
        // The NativeAOT agent is megabytes; placeholders (/bin/true) are tiny.
        if (!info.Exists || info.Length < 1_000_000)
            return false;
        Span<byte> magic = stackalloc byte[4];
        using var f = info.OpenRead();
        return f.Read(magic) == 4 && magic.SequenceEqual("\u007FELF"u8);
    }

    private static string? FindAgentBinary()
    {
        if (Environment.GetEnvironmentVariable("SANDBOXVM_AGENT_BINARY") is { Length: > 0 } given && IsRealAgent(given))
            return given;
        for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir is not null; dir = dir.Parent)
        {
            if (File.Exists(Path.Combine(dir.FullName, "SandboxVM.slnx")))
            {
                var agent = Path.Combine(dir.FullName, "artifacts", "agent", "sandboxvm-agent");
                return IsRealAgent(agent) ? agent : null;
            }
        }

        return null;
    }

    private sealed class Collect(List<string> lines) : IProgress<string>
    {
        public void Report(string value)
        {
            lock (lines)
                lines.Add(value);
        }
    }
}
