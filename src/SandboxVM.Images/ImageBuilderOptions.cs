namespace SandboxVM.Images;

public sealed class ImageBuilderOptions
{
    public const string DefaultCacheRoot = "/var/cache/sandboxvm";

    /// <summary>Holds <c>base/</c>, <c>rootfs/</c>, <c>ext4/</c> and <c>locks/</c>. Must be one file system
    /// (atomic renames, hard links between base and rootfs).</summary>
    public string CacheRoot { get; set; } = DefaultCacheRoot;

    public string DebianMirror { get; set; } = "http://deb.debian.org/debian";

    public string DebianSecurityMirror { get; set; } = "http://deb.debian.org/debian-security";

    /// <summary>Give build steps the host's network. Off by default so builds only use the package set.</summary>
    public bool BuildStepsNetwork { get; set; }
}
