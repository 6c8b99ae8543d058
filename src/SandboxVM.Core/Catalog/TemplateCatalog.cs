using System.Collections.Concurrent;
using Microsoft.Extensions.Logging;
using SandboxVM.Core.Pools;
using SandboxVM.Core.Templates;
using SandboxVM.Images;
using SandboxVM.Images.Boot;
using SandboxVM.Runtime;

namespace SandboxVM.Core.Catalog;

/// <summary>
/// The templates this server offers, whether each is usable, and their built images. Concurrent callers
/// that need the same image share one build; a failed build is retried by the next caller.
/// </summary>
public sealed partial class TemplateCatalog : IVmSpecProvider
{
    private readonly TemplateRegistry _registry;
    private readonly ImageBuilder _builder;
    private readonly SandboxVmOptions _options;
    private readonly ILogger<TemplateCatalog> _logger;
    private readonly BootArtifactsBuilder? _boot;
    private readonly bool _needsDiskImages;
    private readonly ConcurrentDictionary<string, Lazy<Task<BuiltImage>>> _builds = new();
    private readonly ConcurrentDictionary<string, Lazy<Task<VmSpec>>> _specs = new();
    // Per template spec: the cache entries it is made of, marked used with every start (throttled).
    private readonly ConcurrentDictionary<VmSpec, string[]> _specEntries = new();
    private Lazy<Task<BootArtifacts>>? _bootArtifacts;

    /// <summary>
    /// <c>boot</c> builds the guest kernel and initramfs (and makes the catalog build ext4 root disks);
    /// it is null for runtimes that share the host kernel.
    /// </summary>
    public TemplateCatalog(TemplateRegistry registry, ImageBuilder builder, SandboxVmOptions options, ILogger<TemplateCatalog> logger,
        BootArtifactsBuilder? boot = null)
    {
        _registry = registry;
        _builder = builder;
        _options = options;
        _logger = logger;
        _boot = boot;
        _needsDiskImages = boot is not null;
    }

    public IReadOnlyList<TemplateDefinition> All => _registry.All;

    public TemplateDefinition? Find(string name) => _registry.TryGet(name, out var t) ? t : null;

    /// <summary>Why a template cannot run in this build, or null when it can.</summary>
    public static string? UnavailableReason(TemplateDefinition t)
    {
        if (t.Source.Type == TemplateSource.OciLayoutType)
        {
            try
            {
                SandboxVM.Images.OciLayout.ResolveManifest(t.Source.Path!, t.Source.Tag);
            }
            catch (InvalidDataException e)
            {
                // Callers see this: the layout by the path the template gives, not where it is on the host.
                string full = t.Source.Path!;
                string relative = t.FilePath.Length > 0 ? Path.GetRelativePath(Path.GetDirectoryName(Path.GetFullPath(t.FilePath))!, full) : Path.GetFileName(full);
                return e.Message.Replace(full, relative, StringComparison.Ordinal);
            }
        }
        return null;
    }

    public string AgentPath => _options.AgentPath is { Length: > 0 } p && File.Exists(p)
        ? p
        : throw new InvalidOperationException(
            $"the guest agent binary was not found at '{_options.AgentPath}'; publish it (scripts/build.sh) or set SandboxVM:AgentPath");

    /// <summary>The built rootfs directory, or null when it has not been built for the current inputs.</summary>
    public string? TryGetBuilt(TemplateDefinition t)
    {
        if (_options.AgentPath is not { Length: > 0 } agent || !File.Exists(agent))
        {
            return null;
        }
        return _builder.TryGetBuilt(t.ToImageSpec(agent));
    }

    /// <summary>Builds the template's image if needed and returns it.</summary>
    public async Task<BuiltImage> EnsureBuiltAsync(TemplateDefinition t, IProgress<string>? progress, CancellationToken cancellationToken)
    {
        var spec = t.ToImageSpec(AgentPath);
        // Keyed by template and agent hash, so a new agent or changed template starts a new build.
        string key = t.Name + "/" + t.ContentHash + "/" + File.GetLastWriteTimeUtc(spec.AgentPath).Ticks;
        var lazy = _builds.GetOrAdd(key, _ => new Lazy<Task<BuiltImage>>(() => BuildAsync(spec, progress)));
        try
        {
            return await lazy.Value.WaitAsync(cancellationToken);
        }
        catch (Exception e) when (e is not OperationCanceledException)
        {
            _builds.TryRemove(new KeyValuePair<string, Lazy<Task<BuiltImage>>>(key, lazy));
            throw;
        }
    }

    /// <summary>
    /// What the runtime needs to start a sandbox of <paramref name="t"/>: its rootfs, and for VM runtimes
    /// its ext4 root disk, kernel and initramfs, building whatever is missing. Computed once per template.
    /// </summary>
    public async Task<VmSpec> GetSpecAsync(TemplateDefinition t, CancellationToken cancellationToken)
    {
        var lazy = _specs.GetOrAdd(t.Name + "/" + t.ContentHash, _ => new Lazy<Task<VmSpec>>(() => BuildSpecAsync(t, null)));
        try
        {
            var spec = await lazy.Value.WaitAsync(cancellationToken);
            // A long-running server builds once and starts VMs for weeks: each start is a use of its images.
            if (_specEntries.TryGetValue(spec, out var paths))
            {
                _builder.Cache.MarkUsed(paths);
            }
            return spec;
        }
        catch (Exception e) when (e is not OperationCanceledException)
        {
            _specs.TryRemove(new KeyValuePair<string, Lazy<Task<VmSpec>>>(t.Name + "/" + t.ContentHash, lazy));
            throw new TemplateImageException(t.Name, e);
        }
    }

    private async Task<VmSpec> BuildSpecAsync(TemplateDefinition t, IProgress<string>? progress)
    {
        var image = await EnsureBuiltAsync(t, progress, CancellationToken.None);
        var spec = new VmSpec
        {
            TemplateName = t.Name,
            RootfsDir = image.RootfsDir,
            Vcpus = t.Vcpus,
            MemoryMib = t.MemoryMib,
            MaxProcesses = t.Limits.Processes,
            WritableBytes = t.Limits.FileBytes,
            WarmupKey = WarmupKey(t),
        };
        if (!_needsDiskImages)
        {
            _specEntries[spec] = [image.RootfsDir, Path.Combine(_builder.CacheRoot, "base", ImageKeys.Base(t.ToImageSpec(AgentPath)))];
            return spec;
        }
        string disk = await _builder.BuildExt4Async(image, t.DiskMib, progress, CancellationToken.None);
        _bootArtifacts ??= new Lazy<Task<BootArtifacts>>(() => _boot!.BuildAsync(progress, CancellationToken.None));
        var boot = await _bootArtifacts.Value;
        var vmSpec = spec with
        {
            RootfsImage = disk,
            // The uncompressed kernel boots faster (no in-guest decompression, which is slow under TCG).
            KernelPath = boot.VmlinuxPath ?? boot.KernelPath,
            InitrdPath = boot.InitrdPath,
            KernelArgs = $"sandboxvm.tmp_size={t.Limits.FileBytes >> 20}M sandboxvm.home_size={t.Limits.FileBytes >> 20}M",
        };
        _specEntries[vmSpec] = [image.RootfsDir, Path.Combine(_builder.CacheRoot, "base", ImageKeys.Base(t.ToImageSpec(AgentPath))),
            disk, boot.KernelPath, boot.InitrdPath];
        return vmSpec;
    }

    /// <summary>
    /// What the image cache must keep for the current templates (every available one, whether built or
    /// not): ids (<c>PHASE/KEY</c>) of their base, rootfs and ext4 entries and of the current boot
    /// artifacts, computed without building anything. Phases whose current keys cannot be told (no agent
    /// binary: rootfs and ext4; apt does not know the kernel: the boot phases) come back in KeepPhases.
    /// </summary>
    public async Task<(IReadOnlySet<string> Needed, IReadOnlySet<string> KeepPhases)> CacheNeedsAsync(CancellationToken cancellationToken)
    {
        var needed = new HashSet<string>(StringComparer.Ordinal);
        var keepPhases = new HashSet<string>(StringComparer.Ordinal);
        string agent = _options.AgentPath ?? "";
        if (!File.Exists(agent))
        {
            keepPhases.UnionWith(["rootfs", "ext4"]);
        }
        foreach (var t in All.Where(t => UnavailableReason(t) is null))
        {
            needed.UnionWith(_builder.EntryIds(t.ToImageSpec(agent), t.DiskMib));
        }
        if (_boot is null || await _boot.CurrentEntryIdsAsync(cancellationToken) is not { } boot)
        {
            keepPhases.UnionWith(["boot-kernel", "boot-initrd"]);
        }
        else
        {
            needed.UnionWith(boot);
        }
        return (needed, keepPhases);
    }

    /// <summary>Everything the warm-up depends on: a changed script or recipe means a new snapshot.</summary>
    private static string WarmupKey(TemplateDefinition t)
    {
        string text = string.Join("\n", [Runs.Warmup.Version, t.Warmup.Script ?? "", t.Language.SourceFile, .. t.Language.Run, .. t.Language.Compile ?? [],
            .. t.Language.Env.OrderBy(e => e.Key, StringComparer.Ordinal).Select(e => e.Key + "=" + e.Value),
            .. t.Language.ForkServer?.Preload ?? []]);
        return Convert.ToHexStringLower(System.Security.Cryptography.SHA256.HashData(System.Text.Encoding.UTF8.GetBytes(text)))[..16];
    }

    private async Task<BuiltImage> BuildAsync(ImageSpec spec, IProgress<string>? progress)
    {
        // Not tied to any one caller's cancellation: others may be waiting on the same build.
        var image = await _builder.BuildRootfsAsync(spec, progress, CancellationToken.None);
        LogBuilt(_logger, spec.Name, image.WasCached, (long)image.Elapsed.TotalMilliseconds);
        return image;
    }

    [LoggerMessage(Level = LogLevel.Information, Message = "template {Name} image ready (cached: {Cached}, {Ms} ms)")]
    private static partial void LogBuilt(ILogger logger, string name, bool cached, long ms);
}

/// <summary>
/// The image of a template could not be built or found. <see cref="Exception.Message"/> keeps the whole
/// story (command lines, cache paths) for the log; <see cref="Reason"/> is what a caller is told.
/// </summary>
public sealed class TemplateImageException(string template, Exception inner)
    : Exception($"the image of template {template} could not be built: {inner.Message}", inner)
{
    public string Reason { get; } = $"the image of template {template} could not be built (the server log has why)";
}
