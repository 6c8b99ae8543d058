using System.Globalization;
using System.Security.Cryptography;
using System.Text;

namespace SandboxVM.Images.Boot;

/// <summary>What a VM boots from, besides its root disk (<see cref="ImageBuilder.BuildExt4Async"/>).</summary>
/// <param name="KernelPath">The bzImage (<c>-kernel</c> for QEMU; any boot loader takes it).</param>
/// <param name="VmlinuxPath">The same kernel as an uncompressed ELF, or null when it could not be extracted.
/// Firecracker needs it; QEMU boots it through the PVH entry (<c>-kernel vmlinux</c>), which skips the
/// in-guest decompression: under TCG the agent's hello came about 0.2-0.3 s sooner than with the bzImage.</param>
/// <param name="InitrdPath">gzip'd newc initramfs: busybox, the modules, the <see cref="InitScript"/>.</param>
/// <param name="KernelVersion">Kernel release as <c>uname -r</c> prints it, e.g. <c>6.1.0-56-cloud-amd64</c>.</param>
/// <param name="Key">Content hash of everything above: a snapshot made with these artifacts is valid exactly as long as the key is.</param>
public sealed record BootArtifacts(string KernelPath, string? VmlinuxPath, string InitrdPath, string KernelVersion, string Key)
{
    /// <summary>The Debian package the kernel came from, e.g. <c>linux-image-6.1.0-56-cloud-amd64=6.1.192-2</c>.</summary>
    public required DebianPackage KernelPackage { get; init; }

    /// <summary>The busybox-static package in the initramfs.</summary>
    public required DebianPackage BusyboxPackage { get; init; }

    /// <summary>Modules the init loads, in load order.</summary>
    public required IReadOnlyList<string> Modules { get; init; }

    /// <summary>True when nothing had to be built.</summary>
    public bool WasCached { get; init; }
}

/// <summary>Cache keys of the boot phases, encoded like <see cref="ImageKeys"/> (length-prefixed fields, SHA-256).</summary>
public static class BootKeys
{
    /// <summary>Bump when the boot builder's output for the same inputs changes (init script layout, cpio
    /// contents, module handling): every kernel and initramfs is then rebuilt once.</summary>
    public const int BuilderVersion = 1;

    /// <summary>Key of the kernel phase: the kernel package at its version and the modules asked for.</summary>
    public static string Kernel(DebianPackage package, IEnumerable<string> requestedModules)
    {
        ArgumentNullException.ThrowIfNull(package);
        ArgumentNullException.ThrowIfNull(requestedModules);
        var sb = new StringBuilder();
        Field(sb, "phase", "boot-kernel");
        Field(sb, "builder", BuilderVersion.ToString(CultureInfo.InvariantCulture));
        Field(sb, "package", package.Name);
        Field(sb, "version", package.Version);
        foreach (var m in requestedModules)
            Field(sb, "module", m);
        return Hash(sb);
    }

    /// <summary>Key of the initramfs phase: the module files (name and content hash, in load order), the
    /// busybox package and the init script.</summary>
    public static string Initrd(IEnumerable<(string Name, string Sha256)> modules, DebianPackage busybox, string initScript)
    {
        ArgumentNullException.ThrowIfNull(modules);
        ArgumentNullException.ThrowIfNull(busybox);
        ArgumentNullException.ThrowIfNull(initScript);
        var sb = new StringBuilder();
        Field(sb, "phase", "boot-initrd");
        Field(sb, "builder", BuilderVersion.ToString(CultureInfo.InvariantCulture));
        foreach (var (name, sha) in modules)
            Field(sb, "module", name + " " + sha);
        Field(sb, "busybox", busybox.ToString());
        Field(sb, "init", initScript);
        return Hash(sb);
    }

    /// <summary>Key of a whole <see cref="BootArtifacts"/>.</summary>
    public static string Combined(string kernelKey, string initrdKey)
    {
        var sb = new StringBuilder();
        Field(sb, "phase", "boot");
        Field(sb, "kernel", kernelKey);
        Field(sb, "initrd", initrdKey);
        return Hash(sb);
    }

    private static void Field(StringBuilder sb, string name, string value) =>
        sb.Append(name).Append(' ').Append(Encoding.UTF8.GetByteCount(value)).Append(':').Append(value).Append('\n');

    private static string Hash(StringBuilder sb) =>
        Convert.ToHexStringLower(SHA256.HashData(Encoding.UTF8.GetBytes(sb.ToString())));
}
