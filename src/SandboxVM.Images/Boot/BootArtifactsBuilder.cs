using System.Diagnostics;
using System.IO.Compression;
using System.Security.Cryptography;
using System.Text;
using System.Text.Encodings.Web;
using System.Text.Json;
using Microsoft.Extensions.Logging;

namespace SandboxVM.Images.Boot;

/// <summary>
/// Builds what a VM boots from, content-hashed in the image cache like the rootfs phases:
/// <c>boot/kernel/KEY/</c> (Debian's cloud kernel, unpacked from its package, never installed: bzImage,
/// ELF vmlinux, the virtio/vsock/overlay modules) and <c>boot/initrd/KEY/initrd.gz</c> (busybox-static,
/// those modules and the <see cref="InitScript"/>). Each phase is built into <c>KEY.tmp-RANDOM</c> and
/// renamed into place under a per-key lock, so a directory named by its bare key is always complete
/// and concurrent callers (in this or other processes) build it once.
/// </summary>
public sealed partial class BootArtifactsBuilder
{
    /// <summary>Debian metapackage whose dependency is the kernel to use.</summary>
    public const string KernelMetapackage = "linux-image-cloud-amd64";

    public const string BusyboxPackage = "busybox-static";

    /// <summary><see cref="KernelCommandLine.Default"/>; under TCG use <see cref="KernelCommandLine.For"/>.</summary>
    public const string DefaultKernelCommandLine = KernelCommandLine.Default;

    /// <summary>
    /// Modules the guest needs, in preferred load order; those built into the kernel are skipped and
    /// dependencies (virtio_ring, virtio, vsock, ...) are added from <c>modinfo</c>. virtio_mmio finds
    /// microvm's devices through ACPI; ext4 and crc32c (its checksums, a run-time crypto lookup that
    /// no dependency list names) matter only for kernels where they are modular.
    /// </summary>
    public static readonly IReadOnlyList<string> RequestedModules =
    [
        "virtio_mmio",
        "virtio_blk",
        "virtio_console",
        "virtio_rng",
        "vmw_vsock_virtio_transport",
        "overlay",
        "ext4",
        "crc32c_generic",
    ];

    private readonly ILogger<BootArtifactsBuilder> _logger;
    private readonly SemaphoreSlim _resolveLock = new(1, 1);
    private (string Fingerprint, DebianPackage Kernel, DebianPackage Busybox)? _resolved;

    public BootArtifactsBuilder(ImageBuilderOptions options, ILogger<BootArtifactsBuilder> logger)
    {
        ArgumentNullException.ThrowIfNull(options);
        ArgumentNullException.ThrowIfNull(logger);
        ArgumentException.ThrowIfNullOrWhiteSpace(options.CacheRoot);
        _logger = logger;
        CacheRoot = Path.GetFullPath(options.CacheRoot);
        _cache = new ImageCache(CacheRoot);
        _phases = new CachePhase(Path.Combine(CacheRoot, ImageCache.LocksDir), TreeOps.DeleteAsync, logger);
    }

    private readonly ImageCache _cache;
    private readonly CachePhase _phases;

    public string CacheRoot { get; }

    /// <summary>Returns the boot artifacts for the current candidate of <see cref="KernelMetapackage"/> and
    /// <see cref="BusyboxPackage"/> in the host's apt lists, building whatever is missing.</summary>
    /// <param name="progress">Receives phase changes and tool output.</param>
    /// <param name="cancellationToken">Kills the running tool; the half-built directory is removed.</param>
    /// <exception cref="ExternalCommandException">apt, dpkg-deb or modinfo failed (e.g. no network to the mirror).</exception>
    /// <exception cref="InvalidOperationException">A tool is missing or the kernel lacks a needed module.</exception>
    public async Task<BootArtifacts> BuildAsync(IProgress<string>? progress, CancellationToken cancellationToken)
    {
        var stopwatch = Stopwatch.StartNew();
        if (OperatingSystem.IsWindows())
            throw new PlatformNotSupportedException("Boot artifacts are built on Linux only.");
        void OnLine(string line) => progress?.Report(line);

        var (kernelPackage, busybox) = await ResolvePackagesAsync(OnLine, allowUpdate: true, cancellationToken).ConfigureAwait(false);
        var kernelKey = BootKeys.Kernel(kernelPackage, RequestedModules);
        var kernelDir = Path.Combine(CacheRoot, "boot", "kernel", kernelKey);
        _cache.MarkUsed("boot-kernel", kernelKey);
        var builtKernel = await _phases.EnsureAsync(new CacheBuild("boot-kernel", kernelKey, kernelDir, kernelPackage.ToString(),
            tmp => BuildKernelAsync(kernelPackage, kernelKey, tmp, OnLine, cancellationToken)), progress, cancellationToken).ConfigureAwait(false);
        var kernel = await KernelManifest.ReadAsync(kernelDir, cancellationToken).ConfigureAwait(false);

        var script = InitScript.Render(kernel.LoadOrder);
        var initrdKey = BootKeys.Initrd(kernel.LoadOrder.Select(m => (m, kernel.ModuleHashes[m])), busybox, script);
        var initrdDir = Path.Combine(CacheRoot, "boot", "initrd", initrdKey);
        var builtInitrd = await _phases.EnsureAsync(new CacheBuild("boot-initrd", initrdKey, initrdDir, $"{busybox}, {kernel.LoadOrder.Count} modules",
            tmp => BuildInitrdAsync(kernelDir, kernel, busybox, script, initrdKey, kernelKey, tmp, OnLine, cancellationToken)), progress, cancellationToken).ConfigureAwait(false);

        _cache.MarkUsed("boot-initrd", initrdKey);
        var vmlinux = Path.Combine(kernelDir, "vmlinux");
        var artifacts = new BootArtifacts(
            Path.Combine(kernelDir, "vmlinuz"),
            File.Exists(vmlinux) ? vmlinux : null,
            Path.Combine(initrdDir, "initrd.gz"),
            kernel.Release,
            BootKeys.Combined(kernelKey, initrdKey))
        {
            KernelPackage = kernelPackage,
            BusyboxPackage = busybox,
            Modules = kernel.LoadOrder,
            WasCached = !builtKernel && !builtInitrd,
        };
        LogReady(artifacts.KernelVersion, artifacts.Key, stopwatch.Elapsed.TotalSeconds);
        return artifacts;
    }

    private static string Short(string key) => key[..12];

    /// <summary>
    /// Ids (<c>boot-kernel/KEY</c>, <c>boot-initrd/KEY</c>) of the cache entries <see cref="BuildAsync"/> would
    /// use now, from the host's apt lists as they are (no <c>apt-get update</c>) and the cached kernel's
    /// manifest. Null when they cannot be told (apt does not know the packages): keep every boot entry then.
    /// Never builds or downloads.
    /// </summary>
    public async Task<IReadOnlyList<string>?> CurrentEntryIdsAsync(CancellationToken cancellationToken)
    {
        (DebianPackage Kernel, DebianPackage Busybox) packages;
        try
        {
            packages = await ResolvePackagesAsync(_ => { }, allowUpdate: false, cancellationToken).ConfigureAwait(false);
        }
        catch (Exception e) when (e is ExternalCommandException or InvalidOperationException or IOException or KeyNotFoundException)
        {
            return null;
        }
        var kernelKey = BootKeys.Kernel(packages.Kernel, RequestedModules);
        var ids = new List<string> { "boot-kernel/" + kernelKey };
        var kernelDir = Path.Combine(CacheRoot, "boot", "kernel", kernelKey);
        if (File.Exists(Path.Combine(kernelDir, KernelManifest.FileName)))
        {
            var kernel = await KernelManifest.ReadAsync(kernelDir, cancellationToken).ConfigureAwait(false);
            var script = InitScript.Render(kernel.LoadOrder);
            ids.Add("boot-initrd/" + BootKeys.Initrd(kernel.LoadOrder.Select(m => (m, kernel.ModuleHashes[m])), packages.Busybox, script));
        }
        return ids;
    }

    /// <summary>Candidate kernel and busybox packages in the host's apt lists; reused while the lists are unchanged.</summary>
    private async Task<(DebianPackage Kernel, DebianPackage Busybox)> ResolvePackagesAsync(Action<string> onLine, bool allowUpdate, CancellationToken cancellationToken)
    {
        await _resolveLock.WaitAsync(cancellationToken).ConfigureAwait(false);
        try
        {
            var fingerprint = DebianPackages.ListsFingerprint();
            if (_resolved is { } r && r.Fingerprint == fingerprint)
                return (r.Kernel, r.Busybox);
            var stanzas = await DebianPackages.ShowAsync([KernelMetapackage, BusyboxPackage], onLine, cancellationToken, allowUpdate).ConfigureAwait(false);
            var kernel = await DebianPackages.DependencyOfAsync(stanzas[KernelMetapackage], "linux-image-", onLine, cancellationToken, allowUpdate).ConfigureAwait(false);
            var busybox = new DebianPackage(BusyboxPackage, stanzas[BusyboxPackage]["Version"]);
            // Taken after apt-cache: an apt-get update it triggered has changed the lists.
            _resolved = (DebianPackages.ListsFingerprint(), kernel, busybox);
            LogResolved(kernel.ToString(), busybox.ToString());
            return (kernel, busybox);
        }
        finally
        {
            _resolveLock.Release();
        }
    }

    /// <summary>Downloads and unpacks the kernel package; keeps bzImage, config, the module closure and (when
    /// the host has the decompressor) the ELF vmlinux.</summary>
    private async Task BuildKernelAsync(DebianPackage package, string key, string tmp, Action<string> onLine, CancellationToken cancellationToken)
    {
        Directory.CreateDirectory(tmp);
        var work = Path.Combine(tmp, ".work");
        var unpacked = Path.Combine(work, "root");
        onLine($"[boot-kernel] downloading {package}");
        await DebianPackages.DownloadAndUnpackAsync(package, work, unpacked, onLine, cancellationToken).ConfigureAwait(false);

        var modulesRoot = Path.Combine(unpacked, "lib", "modules");
        var releases = Directory.Exists(modulesRoot) ? Directory.GetDirectories(modulesRoot) : [];
        if (releases.Length != 1)
            throw new InvalidOperationException($"{package} has {releases.Length} module trees under /lib/modules; expected one.");
        var release = Path.GetFileName(releases[0]);
        var vmlinuz = Path.Combine(unpacked, "boot", "vmlinuz-" + release);
        if (!File.Exists(vmlinuz))
            throw new InvalidOperationException($"{package} has no /boot/vmlinuz-{release}.");
        File.Copy(vmlinuz, Path.Combine(tmp, "vmlinuz"));
        var config = Path.Combine(unpacked, "boot", "config-" + release);
        if (File.Exists(config))
            File.Copy(config, Path.Combine(tmp, "config"));

        var modules = await CollectModulesAsync(releases[0], Path.Combine(tmp, "modules"), work, onLine, cancellationToken).ConfigureAwait(false);

        string? vmlinuxCompression = null;
        string? vmlinuxError = null;
        try
        {
            vmlinuxCompression = await BzImage.ExtractVmlinuxAsync(Path.Combine(tmp, "vmlinuz"), Path.Combine(tmp, "vmlinux"), work, cancellationToken).ConfigureAwait(false);
        }
        catch (Exception e) when (e is ExternalCommandException or InvalidDataException)
        {
            // Optional: QEMU boots the bzImage; only Firecracker (and PVH boot) need the ELF.
            vmlinuxError = e.Message;
            LogNoVmlinux(e, package.ToString());
            onLine($"[boot-kernel] no vmlinux: {e.Message}");
            File.Delete(Path.Combine(tmp, "vmlinux"));
        }

        await TreeOps.DeleteAsync(work).ConfigureAwait(false);
        var manifest = new KernelManifest(release, modules.LoadOrder, modules.Hashes);
        await WriteManifestAsync(Path.Combine(tmp, KernelManifest.FileName), w =>
        {
            w.WriteString("phase", "boot-kernel");
            w.WriteString("key", key);
            w.WriteString("metapackage", KernelMetapackage);
            w.WriteString("package", package.Name);
            w.WriteString("package_version", package.Version);
            manifest.Write(w);
            w.WriteStartArray("modules_requested");
            foreach (var m in RequestedModules)
                w.WriteStringValue(m);
            w.WriteEndArray();
            w.WriteStartArray("modules_builtin");
            foreach (var m in modules.Builtin)
                w.WriteStringValue(m);
            w.WriteEndArray();
            if (vmlinuxCompression is not null)
                w.WriteString("vmlinux_from", vmlinuxCompression);
            if (vmlinuxError is not null)
                w.WriteString("vmlinux_error", vmlinuxError);
        }, cancellationToken).ConfigureAwait(false);
    }

    private sealed record ModuleSet(IReadOnlyList<string> LoadOrder, IReadOnlyDictionary<string, string> Hashes, IReadOnlyList<string> Builtin);

    /// <summary>Copies (decompressing) the requested modules and their dependency closure into
    /// <paramref name="outputDir"/> as <c>NAME.ko</c> and computes the load order.</summary>
    private static async Task<ModuleSet> CollectModulesAsync(string releaseDir, string outputDir, string work, Action<string> onLine, CancellationToken cancellationToken)
    {
        var builtin = new HashSet<string>(StringComparer.Ordinal);
        var builtinFile = Path.Combine(releaseDir, "modules.builtin");
        if (File.Exists(builtinFile))
        {
            foreach (var line in await File.ReadAllLinesAsync(builtinFile, cancellationToken).ConfigureAwait(false))
            {
                if (ModuleOrder.NameOfFile(Path.GetFileName(line.Trim())) is { } name)
                    builtin.Add(name);
            }
        }

        var files = new Dictionary<string, string>(StringComparer.Ordinal);
        foreach (var path in Directory.EnumerateFiles(releaseDir, "*.ko*", SearchOption.AllDirectories).Order(StringComparer.Ordinal))
        {
            if (ModuleOrder.NameOfFile(Path.GetFileName(path)) is { } name)
                files.TryAdd(name, path);
        }

        var modinfo = DebianPackages.FindTool("modinfo", "kmod");
        Directory.CreateDirectory(outputDir);
        var dependencies = new Dictionary<string, IReadOnlyList<string>>(StringComparer.Ordinal);
        var hashes = new Dictionary<string, string>(StringComparer.Ordinal);
        var builtinRequested = new List<string>();
        var loadable = new List<string>();
        var queue = new Queue<string>();
        foreach (var name in RequestedModules.Select(ModuleOrder.Normalize))
        {
            if (files.ContainsKey(name))
            {
                loadable.Add(name);
                queue.Enqueue(name);
            }
            else if (builtin.Contains(name))
            {
                builtinRequested.Add(name);
            }
            else
            {
                throw new InvalidOperationException($"Kernel {Path.GetFileName(releaseDir)} has module {name} neither built in nor as a loadable module.");
            }
        }

        while (queue.TryDequeue(out var name))
        {
            if (dependencies.ContainsKey(name))
                continue;
            if (!files.TryGetValue(name, out var source))
                throw new InvalidOperationException($"Kernel {Path.GetFileName(releaseDir)} lacks module {name}, a dependency.");
            var target = Path.Combine(outputDir, name + ".ko");
            await DecompressModuleAsync(source, target, work, cancellationToken).ConfigureAwait(false);
            var deps = ModuleOrder.ParseDepends(await HostProcess.OutputAsync(modinfo, ["-F", "depends", "--", target], null, null, cancellationToken).ConfigureAwait(false));
            dependencies[name] = deps;
            hashes[name] = await ImageKeys.HashFileAsync(target, cancellationToken).ConfigureAwait(false);
            foreach (var dep in deps)
                queue.Enqueue(dep);
        }

        var order = ModuleOrder.Compute(loadable, dependencies);
        onLine($"[boot-kernel] modules: {string.Join(' ', order)}" + (builtinRequested.Count > 0 ? $" (built in: {string.Join(' ', builtinRequested)})" : ""));
        return new ModuleSet(order, hashes, builtinRequested);
    }

    /// <summary>insmod in busybox takes plain .ko files; Debian ships them plain (bookworm) or xz/zstd-compressed (later).</summary>
    private static async Task DecompressModuleAsync(string source, string target, string work, CancellationToken cancellationToken)
    {
        if (source.EndsWith(".ko", StringComparison.Ordinal))
        {
            File.Copy(source, target);
            return;
        }

        var output = File.Create(target);
        await using (output.ConfigureAwait(false))
        {
            if (source.EndsWith(".gz", StringComparison.Ordinal))
            {
                var gzip = new GZipStream(File.OpenRead(source), CompressionMode.Decompress);
                await using (gzip.ConfigureAwait(false))
                    await gzip.CopyToAsync(output, cancellationToken).ConfigureAwait(false);
                return;
            }

            var (tool, args) = BzImage.Decompressor(source.EndsWith(".zst", StringComparison.Ordinal) ? "zstd" : "xz");
            (await HostProcess.RunAsync(new HostCommand(tool, [.. args, source]) { WorkingDirectory = work, StdoutTo = output }, cancellationToken).ConfigureAwait(false)).EnsureSuccess();
        }
    }

    /// <summary>Downloads busybox-static and writes the initramfs: busybox and its applet links, /dev/console,
    /// the modules, the init script.</summary>
    private async Task BuildInitrdAsync(string kernelDir, KernelManifest kernel, DebianPackage busybox, string script, string key, string kernelKey,
        string tmp, Action<string> onLine, CancellationToken cancellationToken)
    {
        Directory.CreateDirectory(tmp);
        var work = Path.Combine(tmp, ".work");
        var unpacked = Path.Combine(work, "root");
        onLine($"[boot-initrd] downloading {busybox}");
        await DebianPackages.DownloadAndUnpackAsync(busybox, work, unpacked, onLine, cancellationToken).ConfigureAwait(false);
        var busyboxPath = Path.Combine(unpacked, "bin", "busybox");
        if (!File.Exists(busyboxPath))
            throw new InvalidOperationException($"{busybox} has no /bin/busybox.");
        // The host runs the same x86-64 binary: its own list of applets and where they belong.
        var applets = (await HostProcess.OutputAsync(busyboxPath, ["--list-full"], null, null, cancellationToken).ConfigureAwait(false))
            .Split('\n', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries);

        var cpio = new CpioArchive();
        foreach (var dir in new[] { ".", "bin", "dev", "lib", InitScript.ModuleDir, "newroot", "proc", "sbin", "sys", "usr", "usr/bin", "usr/sbin" })
            cpio.AddDirectory(dir);
        // The kernel opens /dev/console for init's stdio before init runs.
        cpio.AddCharDevice("dev/console", 0x180 /* 0600 */, 5, 1);
        cpio.AddFile("bin/busybox", await File.ReadAllBytesAsync(busyboxPath, cancellationToken).ConfigureAwait(false), 0x1ED);
        foreach (var applet in applets.Order(StringComparer.Ordinal))
        {
            // "linuxrc" (no directory) and busybox itself are skipped; every other applet becomes a link.
            var parent = Path.GetDirectoryName(applet);
            if (string.IsNullOrEmpty(parent) || applet.Contains("..", StringComparison.Ordinal) || cpio.Contains(applet))
                continue;
            if (!cpio.Contains(parent))
                cpio.AddDirectory(parent);
            cpio.AddSymlink(applet, "/bin/busybox");
        }

        foreach (var module in kernel.LoadOrder)
        {
            var bytes = await File.ReadAllBytesAsync(Path.Combine(kernelDir, "modules", module + ".ko"), cancellationToken).ConfigureAwait(false);
            cpio.AddFile($"{InitScript.ModuleDir.TrimStart('/')}/{module}.ko", bytes);
        }

        var scriptBytes = Encoding.UTF8.GetBytes(script);
        cpio.AddFile("init", scriptBytes, 0x1ED);
        await File.WriteAllBytesAsync(Path.Combine(tmp, "init"), scriptBytes, cancellationToken).ConfigureAwait(false);

        var initrd = Path.Combine(tmp, "initrd.gz");
        var file = File.Create(initrd);
        await using (file.ConfigureAwait(false))
        {
            var gzip = new GZipStream(file, CompressionLevel.SmallestSize);
            await using (gzip.ConfigureAwait(false))
                cpio.WriteTo(gzip);
        }

        await TreeOps.DeleteAsync(work).ConfigureAwait(false);
        var size = new FileInfo(initrd).Length;
        onLine($"[boot-initrd] initrd.gz: {cpio.Count} entries, {size / 1024} KiB");
        var initrdHash = await ImageKeys.HashFileAsync(initrd, cancellationToken).ConfigureAwait(false);
        await WriteManifestAsync(Path.Combine(tmp, "initrd.json"), w =>
        {
            w.WriteString("phase", "boot-initrd");
            w.WriteString("key", key);
            w.WriteString("kernel_key", kernelKey);
            w.WriteString("kernel_release", kernel.Release);
            w.WriteString("busybox_package", busybox.Name);
            w.WriteString("busybox_version", busybox.Version);
            w.WriteStartArray("modules");
            foreach (var m in kernel.LoadOrder)
                w.WriteStringValue(m);
            w.WriteEndArray();
            w.WriteNumber("entries", cpio.Count);
            w.WriteNumber("initrd_bytes", size);
            w.WriteString("initrd_sha256", initrdHash);
        }, cancellationToken).ConfigureAwait(false);
    }

    private static Task WriteManifestAsync(string path, Action<Utf8JsonWriter> fields, CancellationToken cancellationToken) =>
        PhaseManifest.WriteAsync(path, BootKeys.BuilderVersion, fields, JavaScriptEncoder.UnsafeRelaxedJsonEscaping, cancellationToken);

    /// <summary>What the initramfs phase needs from a built kernel directory.</summary>
    private sealed record KernelManifest(string Release, IReadOnlyList<string> LoadOrder, IReadOnlyDictionary<string, string> ModuleHashes)
    {
        public const string FileName = "kernel.json";

        public void Write(Utf8JsonWriter w)
        {
            w.WriteString("kernel_release", Release);
            w.WriteStartArray("module_load_order");
            foreach (var m in LoadOrder)
                w.WriteStringValue(m);
            w.WriteEndArray();
            w.WriteStartObject("module_sha256");
            foreach (var m in LoadOrder)
                w.WriteString(m, ModuleHashes[m]);
            w.WriteEndObject();
        }

        public static async Task<KernelManifest> ReadAsync(string kernelDir, CancellationToken cancellationToken)
        {
            var stream = File.OpenRead(Path.Combine(kernelDir, FileName));
            await using (stream.ConfigureAwait(false))
            {
                using var doc = await JsonDocument.ParseAsync(stream, default, cancellationToken).ConfigureAwait(false);
                var root = doc.RootElement;
                var order = root.GetProperty("module_load_order").EnumerateArray().Select(e => e.GetString()!).ToList();
                var hashes = root.GetProperty("module_sha256").EnumerateObject().ToDictionary(p => p.Name, p => p.Value.GetString()!, StringComparer.Ordinal);
                return new KernelManifest(root.GetProperty("kernel_release").GetString()!, order, hashes);
            }
        }
    }
}
