using System.Collections.Concurrent;
using System.Diagnostics;
using System.Security.Cryptography;
using System.Text.Json;
using System.Text.RegularExpressions;
using Microsoft.Extensions.Logging;

namespace SandboxVM.Images;

/// <summary>
/// Builds template images in content-hashed phases under <see cref="ImageBuilderOptions.CacheRoot"/>:
/// <c>base/KEY/rootfs</c> (Debian package set plus build steps), <c>rootfs/KEY/rootfs</c> (base plus
/// the agent, hard-linked) and <c>ext4/KEY.img</c>. Each phase is built into <c>KEY.tmp-RANDOM</c> and
/// renamed into place, so a directory named by its bare key is always complete; an unchanged input is
/// never rebuilt. Safe for concurrent callers in this and other processes (per-key lock).
/// </summary>
public sealed partial class ImageBuilder
{
    private readonly ImageBuilderOptions _options;
    private readonly ILogger<ImageBuilder> _logger;
    private readonly ConcurrentDictionary<string, (long Length, DateTime WriteTime, string Hash)> _agentHashes = new(StringComparer.Ordinal);

    public ImageBuilder(ImageBuilderOptions options, ILogger<ImageBuilder> logger)
    {
        ArgumentNullException.ThrowIfNull(options);
        ArgumentNullException.ThrowIfNull(logger);
        ArgumentException.ThrowIfNullOrWhiteSpace(options.CacheRoot);
        _options = options;
        _logger = logger;
        CacheRoot = Path.GetFullPath(options.CacheRoot);
        Cache = new ImageCache(CacheRoot);
        _phases = new CachePhase(Path.Combine(CacheRoot, ImageCache.LocksDir), TreeOps.DeleteAsync, logger);
    }

    private readonly CachePhase _phases;

    public string CacheRoot { get; }

    /// <summary>The cache this builder fills: listing, last use, garbage collection.</summary>
    public ImageCache Cache { get; }

    [GeneratedRegex("^[a-z0-9][a-z0-9+.-]+(:[a-z0-9-]+)?$")]
    private static partial Regex PackageRegex();

    [GeneratedRegex("^[a-z][a-z0-9.-]*$")]
    private static partial Regex SuiteRegex();

    /// <summary>Returns the rootfs directory for <paramref name="spec"/>, building whatever phases are missing.</summary>
    /// <param name="spec">What to build.</param>
    /// <param name="progress">Receives phase changes and the output lines of mmdebstrap and the build steps.</param>
    /// <param name="cancellationToken">Kills the running tool; the half-built directory is removed.</param>
    /// <exception cref="NotSupportedException">The source type is not one the builder knows.</exception>
    /// <exception cref="ExternalCommandException">mmdebstrap, skopeo, umoci, a build step or another tool failed.</exception>
    /// <exception cref="InvalidDataException">An OCI layout is broken, or the image lacks what a sandbox needs (<see cref="RequiredFiles"/>).</exception>
    public async Task<BuiltImage> BuildRootfsAsync(ImageSpec spec, IProgress<string>? progress, CancellationToken cancellationToken)
    {
        var stopwatch = Stopwatch.StartNew();
        Validate(spec);
        var baseKey = ImageKeys.Base(spec);
        var agentHash = await AgentHashAsync(spec.AgentPath, cancellationToken).ConfigureAwait(false);
        var filesHash = spec.FilesDir is null ? null : ImageKeys.HashTree(spec.FilesDir);
        var rootfsKey = ImageKeys.Rootfs(baseKey, agentHash, filesHash);
        var rootfsTree = Path.Combine(PhaseDir("rootfs"), rootfsKey, "rootfs");

        if (Directory.Exists(rootfsTree))
        {
            // The base counts as used with every rootfs made from it: the next agent change needs it.
            Cache.MarkUsed("rootfs", rootfsKey);
            Cache.MarkUsed("base", baseKey);
            LogCached(spec.Name, "rootfs", rootfsKey);
            progress?.Report($"[rootfs] {spec.Name}: cached ({Short(rootfsKey)})");
            return new BuiltImage(rootfsTree, rootfsKey, true, stopwatch.Elapsed);
        }

        var builtBase = await EnsurePhaseAsync(spec.Name, "base", baseKey, Path.Combine(PhaseDir("base"), baseKey), progress,
            tmp => BuildBaseAsync(spec, baseKey, tmp, progress, cancellationToken), cancellationToken).ConfigureAwait(false);
        var baseTree = Path.Combine(PhaseDir("base"), baseKey, "rootfs");
        Cache.MarkUsed("base", baseKey);

        var builtRootfs = await EnsurePhaseAsync(spec.Name, "rootfs", rootfsKey, Path.Combine(PhaseDir("rootfs"), rootfsKey), progress,
            tmp => BuildRootfsTreeAsync(spec, baseKey, baseTree, agentHash, filesHash, rootfsKey, tmp, cancellationToken), cancellationToken).ConfigureAwait(false);

        Cache.MarkUsed("rootfs", rootfsKey);
        return new BuiltImage(rootfsTree, rootfsKey, !builtBase && !builtRootfs, stopwatch.Elapsed);
    }

    /// <summary>Returns the path of an ext4 image of <paramref name="image"/> of <paramref name="diskMib"/> MiB,
    /// making it with <c>mkfs.ext4 -d</c> unless it exists.</summary>
    /// <exception cref="ExternalCommandException">mkfs.ext4 failed, e.g. the tree does not fit.</exception>
    public async Task<string> BuildExt4Async(BuiltImage image, int diskMib, IProgress<string>? progress, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(image);
        ArgumentOutOfRangeException.ThrowIfLessThan(diskMib, 1);
        if (!Directory.Exists(image.RootfsDir))
            throw new DirectoryNotFoundException($"Rootfs directory {image.RootfsDir} does not exist.");

        var key = ImageKeys.Ext4(image.Key, diskMib);
        var path = Ext4Path(key);
        Cache.MarkUsed("rootfs", image.Key);
        await EnsurePhaseAsync($"rootfs {Short(image.Key)}", "ext4", key, path, progress, async tmp =>
        {
            var mkfs = HostPath.Find("mkfs.ext4") ?? throw new InvalidOperationException("mkfs.ext4 not found in PATH (install e2fsprogs).");
            progress?.Report($"[ext4] mkfs.ext4 {diskMib} MiB from {image.RootfsDir}");
            await HostProcess.OutputAsync(mkfs,
                ["-F", "-q", "-L", "root", "-d", image.RootfsDir, tmp, $"{diskMib}M"],
                line => progress?.Report(line), null, cancellationToken).ConfigureAwait(false);
        }, cancellationToken).ConfigureAwait(false);
        Cache.MarkUsed("ext4", key);
        return path;
    }

    /// <summary>
    /// Ids (<c>PHASE/KEY</c>, see <see cref="CacheEntry.Id"/>) of the cache entries <paramref name="spec"/> needs:
    /// base, and with the agent file present rootfs and (given <paramref name="diskMib"/>) ext4. Never builds.
    /// </summary>
    public IReadOnlyList<string> EntryIds(ImageSpec spec, int? diskMib)
    {
        ArgumentNullException.ThrowIfNull(spec);
        var baseKey = ImageKeys.Base(spec);
        var ids = new List<string> { "base/" + baseKey };
        if (File.Exists(spec.AgentPath))
        {
            var rootfsKey = ImageKeys.Rootfs(baseKey, AgentHash(spec.AgentPath), spec.FilesDir is null ? null : ImageKeys.HashTree(spec.FilesDir));
            ids.Add("rootfs/" + rootfsKey);
            if (diskMib is { } mib)
                ids.Add("ext4/" + ImageKeys.Ext4(rootfsKey, mib));
        }
        return ids;
    }

    /// <summary>True when the rootfs for <paramref name="spec"/> is in the cache. Never builds.</summary>
    public bool IsBuilt(ImageSpec spec) => TryGetBuilt(spec) is not null;

    /// <summary>The cached rootfs directory for <paramref name="spec"/>, or null when it is not built
    /// (or the agent file is missing). Never builds.</summary>
    public string? TryGetBuilt(ImageSpec spec)
    {
        ArgumentNullException.ThrowIfNull(spec);
        if (!File.Exists(spec.AgentPath))
            return null;
        string baseKey;
        try
        {
            baseKey = ImageKeys.Base(spec);
        }
        catch (InvalidDataException)
        {
            return null;  // an OCI layout that is gone or broken: nothing built for it
        }
        var key = ImageKeys.Rootfs(baseKey, AgentHash(spec.AgentPath), spec.FilesDir is null ? null : ImageKeys.HashTree(spec.FilesDir));
        var tree = Path.Combine(PhaseDir("rootfs"), key, "rootfs");
        return Directory.Exists(tree) ? tree : null;
    }

    /// <summary>The cached ext4 image of <paramref name="image"/> at <paramref name="diskMib"/>, or null. Never builds.</summary>
    public string? TryGetBuiltExt4(BuiltImage image, int diskMib)
    {
        ArgumentNullException.ThrowIfNull(image);
        var path = Ext4Path(ImageKeys.Ext4(image.Key, diskMib));
        return File.Exists(path) ? path : null;
    }

    private string PhaseDir(string phase) => Path.Combine(CacheRoot, phase);

    private string Ext4Path(string key) => Path.Combine(PhaseDir("ext4"), key + ".img");

    private static string Short(string key) => key[..12];

    /// <summary>Builds a phase into a temp path and renames it into place under its key's lock (<see cref="CachePhase"/>).</summary>
    private Task<bool> EnsurePhaseAsync(string template, string phase, string key, string finalPath, IProgress<string>? progress,
        Func<string, Task> build, CancellationToken cancellationToken) =>
        _phases.EnsureAsync(new CacheBuild(phase, key, finalPath, template, build), progress, cancellationToken);

    /// <summary>base + agent: a hard-link copy of the base tree with the agent file replaced.</summary>
    private async Task BuildRootfsTreeAsync(ImageSpec spec, string baseKey, string baseTree, string agentHash, string? filesHash, string rootfsKey, string tmp,
        CancellationToken cancellationToken)
    {
        if (OperatingSystem.IsWindows())
            throw new PlatformNotSupportedException("Images are built on Linux only.");
        Directory.CreateDirectory(tmp);
        var tree = Path.Combine(tmp, "rootfs");
        // Hard links make this cheap (no data copied); the tree is only ever mounted read-only.
        await HostProcess.OutputAsync("cp", ["-a", "-l", "--", baseTree, tree], null, null, cancellationToken).ConfigureAwait(false);

        TreeOps.EnsureRealDirectories(tree, "opt", "opt/sandboxvm", "opt/sandboxvm/bin");
        var agent = Path.Combine(tree, ImageLayout.AgentPath.TrimStart('/'));
        // Unlink first: writing into the existing name would modify the base's inode through the hard link.
        File.Delete(agent);
        File.Copy(spec.AgentPath, agent);
        File.SetUnixFileMode(agent, UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute
            | UnixFileMode.GroupRead | UnixFileMode.GroupExecute | UnixFileMode.OtherRead | UnixFileMode.OtherExecute);

        if (spec.FilesDir is not null)
            CopyTemplateFiles(spec.FilesDir, tree);

        await WriteManifestAsync(Path.Combine(tmp, "image.json"), w =>
        {
            w.WriteString("phase", "rootfs");
            w.WriteString("key", rootfsKey);
            w.WriteString("name", spec.Name);
            w.WriteString("base_key", baseKey);
            w.WriteString("agent_source", Path.GetFullPath(spec.AgentPath));
            w.WriteString("agent_sha256", agentHash);
            if (filesHash is not null)
            {
                w.WriteString("files_source", Path.GetFullPath(spec.FilesDir!));
                w.WriteString("files_sha256", filesHash);
            }
        }, cancellationToken).ConfigureAwait(false);
    }

    /// <summary>
    /// Copies the template's files tree over the rootfs: parent directories created (0755, root), each file
    /// unlinked first (it may be a hard link into the base) and written 0644, or 0755 when executable.
    /// </summary>
    [System.Runtime.Versioning.UnsupportedOSPlatform("windows")]
    private static void CopyTemplateFiles(string filesDir, string tree)
    {
        var root = Path.GetFullPath(tree);
        foreach (var (relative, full) in ImageKeys.TreeFiles(filesDir))
        {
            var target = Path.GetFullPath(Path.Combine(root, relative));
            if (!target.StartsWith(root + Path.DirectorySeparatorChar, StringComparison.Ordinal))
                throw new InvalidDataException($"template file {relative} is outside the rootfs");
            var parent = Path.GetDirectoryName(target)!;
            if (File.Exists(parent) || new DirectoryInfo(parent).LinkTarget is not null)
                throw new InvalidDataException($"template file {relative}: {Path.GetRelativePath(root, parent)} in the rootfs is not a plain directory");
            Directory.CreateDirectory(parent, UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute
                | UnixFileMode.GroupRead | UnixFileMode.GroupExecute | UnixFileMode.OtherRead | UnixFileMode.OtherExecute);
            if (File.Exists(target) || new FileInfo(target).LinkTarget is not null)
                File.Delete(target);
            File.Copy(full, target);
            var mode = UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.GroupRead | UnixFileMode.OtherRead;
            if (ImageKeys.IsExecutable(full))
                mode |= UnixFileMode.UserExecute | UnixFileMode.GroupExecute | UnixFileMode.OtherExecute;
            File.SetUnixFileMode(target, mode);
        }
    }

    private static Task WriteManifestAsync(string path, Action<Utf8JsonWriter> fields, CancellationToken cancellationToken) =>
        PhaseManifest.WriteAsync(path, ImageKeys.BuilderVersion, fields, null, cancellationToken);

    private static void Validate(ImageSpec spec)
    {
        ArgumentNullException.ThrowIfNull(spec);
        ArgumentNullException.ThrowIfNull(spec.Packages);
        ArgumentNullException.ThrowIfNull(spec.BuildSteps);
        ArgumentException.ThrowIfNullOrWhiteSpace(spec.AgentPath);
        switch (spec.SourceType)
        {
            case "debian" when spec.Oci is null:
                if (!SuiteRegex().IsMatch(spec.Suite))
                    throw new ArgumentException($"'{spec.Suite}' is not a Debian suite name.", nameof(spec));
                foreach (var p in spec.Packages)
                {
                    // Also keeps a package from being read as an mmdebstrap option or splitting --include.
                    if (!PackageRegex().IsMatch(p))
                        throw new ArgumentException($"'{p}' is not a Debian package name.", nameof(spec));
                }
                break;
            case "oci" when spec.Oci is { Reference: { Length: > 0 } reference, LayoutPath: null }:
                // Also keeps a reference from being read as a skopeo option.
                if (reference.StartsWith('-') || reference.Any(char.IsWhiteSpace) || reference.Contains("://", StringComparison.Ordinal))
                    throw new ArgumentException($"'{reference}' is not an image reference (HOST[:PORT]/REPOSITORY[:TAG|@DIGEST], no scheme).", nameof(spec));
                break;
            case "oci-layout" when spec.Oci is { Reference: null, LayoutPath: { } layout } && Path.IsPathFullyQualified(layout):
                break;
            default:
                throw new NotSupportedException($"Template '{spec.Name}': source type '{spec.SourceType}' with {(spec.Oci is null ? "no" : "this")} OCI source is not something the image builder can build (debian; oci with a reference; oci-layout with an absolute path).");
        }

        if (!File.Exists(spec.AgentPath))
            throw new FileNotFoundException($"Agent binary {spec.AgentPath} does not exist.", spec.AgentPath);
    }

    private async Task<string> AgentHashAsync(string path, CancellationToken cancellationToken)
    {
        var info = new FileInfo(path);
        var full = info.FullName;
        if (_agentHashes.TryGetValue(full, out var cached) && cached.Length == info.Length && cached.WriteTime == info.LastWriteTimeUtc)
            return cached.Hash;
        var hash = await ImageKeys.HashFileAsync(full, cancellationToken).ConfigureAwait(false);
        _agentHashes[full] = (info.Length, info.LastWriteTimeUtc, hash);
        return hash;
    }

    private string AgentHash(string path)
    {
        var info = new FileInfo(path);
        var full = info.FullName;
        if (_agentHashes.TryGetValue(full, out var cached) && cached.Length == info.Length && cached.WriteTime == info.LastWriteTimeUtc)
            return cached.Hash;
        using var stream = File.OpenRead(full);
        var hash = Convert.ToHexStringLower(SHA256.HashData(stream));
        _agentHashes[full] = (info.Length, info.LastWriteTimeUtc, hash);
        return hash;
    }
}
