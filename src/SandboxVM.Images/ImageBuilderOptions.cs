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

    /// <summary>
    /// Build steps run as root of a user namespace whose ids 0..65535 are an unprivileged host range:
    /// <c>BuildStepIdBase + k * 65536</c>, k picked at random below <see cref="BuildStepIdRanges"/> per
    /// build. Apart from the sandbox uids (900000001.. by default).
    /// </summary>
    public int BuildStepIdBase { get; set; } = 1_000_000_000;

    public int BuildStepIdRanges { get; set; } = 1000;
}
