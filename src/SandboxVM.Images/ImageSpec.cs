namespace SandboxVM.Images;

/// <summary>What to build: the image-relevant part of a template plus the agent binary.</summary>
/// <param name="Name">Template name; for logs and the manifest only, never part of a cache key.</param>
/// <param name="SourceType"><c>debian</c> (mmdebstrap), <c>oci</c> (a registry image) or <c>oci-layout</c> (an image layout on this host).</param>
/// <param name="Suite">Debian suite, e.g. <c>bookworm</c> (type <c>debian</c>).</param>
/// <param name="Packages">Packages installed on top of the minbase variant (no recommends; type <c>debian</c>).</param>
/// <param name="BuildSteps">Shell commands run with <c>sh -ec</c> in the rootfs, in order, as root of a user namespace (never host root).</param>
/// <param name="AgentPath">Host path of the guest agent binary copied to <see cref="ImageLayout.AgentPath"/>.</param>
/// <param name="FilesDir">
/// Host directory whose tree is copied into the rootfs at <c>/</c> (e.g. <c>usr/lib/python3/dist-packages/mod/__init__.py</c>),
/// in the rootfs phase so that changing a file never rebuilds the package base; null: none.
/// </param>
/// <param name="Oci">The image of types <c>oci</c> and <c>oci-layout</c>; null for <c>debian</c>.</param>
public sealed record ImageSpec(
    string Name,
    string SourceType,
    string Suite,
    IReadOnlyList<string> Packages,
    IReadOnlyList<string> BuildSteps,
    string AgentPath,
    string? FilesDir = null,
    OciSource? Oci = null);

/// <summary>A built rootfs directory, ready to be mounted read-only.</summary>
/// <param name="RootfsDir">The tree; never write into it (its files are hard links shared with the base).</param>
/// <param name="Key">Content hash of the rootfs phase inputs.</param>
/// <param name="WasCached">True when nothing had to be built.</param>
/// <param name="Elapsed">Time the call took, including waiting for another build of the same key.</param>
public sealed record BuiltImage(string RootfsDir, string Key, bool WasCached, TimeSpan Elapsed);

/// <summary>Fixed paths inside every rootfs the builder makes.</summary>
public static class ImageLayout
{
    public const string AgentPath = "/opt/sandboxvm/bin/sandboxvm-agent";
    public const string BinDir = "/opt/sandboxvm/bin";

    /// <summary>Copied by the agent into the writable <see cref="HomeDir"/> at start (warm caches, config).</summary>
    public const string SkelDir = "/opt/sandboxvm/skel";

    public const string HomeDir = "/home/sandbox";
    public const string OutputsDir = "/tmp/outputs";

    /// <summary>Parent of the private run directories in a VM several callers share: root's, 0711 (nobody can list it).</summary>
    public const string RunsDir = "/tmp/runs";
    public const string UserName = "sandbox";
    public const int UserId = 1000;
    public const int GroupId = 1000;
}
