namespace SandboxVM.Images;

// The base phase of an OCI image: fetched with skopeo (a registry reference) or read in place (a layout),
// unpacked with umoci, then checked for what the guest agent and the runtimes run in every sandbox.
public sealed partial class ImageBuilder
{
    /// <summary>
    /// Files every rootfs needs, with why: the NativeAOT agent is linked against glibc, build steps and
    /// recipes use a shell, every compile and run step goes through <c>prlimit</c> and user work through
    /// <c>setpriv</c> (util-linux), and the
    /// sandbox user is added to <c>/etc/passwd</c>. Debian- and Ubuntu-based images have them all.
    /// </summary>
    internal static readonly (string Path, string Why)[] RequiredFiles =
    [
        ("/lib64/ld-linux-x86-64.so.2", "the guest agent needs glibc on x86-64 (musl-based images such as Alpine do not work)"),
        ("/bin/sh", "build steps and recipes run with a POSIX shell"),
        ("/usr/bin/prlimit", "every compile and run step is started through util-linux's prlimit (its process cap)"),
        ("/usr/bin/setpriv", "the agent starts user work as the sandbox user through util-linux's setpriv"),
        ("/etc/passwd", "the sandbox user is added to it"),
    ];

    /// <summary>Unpacks the image into <paramref name="tree"/>; returns its manifest digest.</summary>
    private async Task<string> UnpackOciAsync(OciSource oci, string tmp, string tree, Action<string> onLine, Action<string> phase,
        CancellationToken cancellationToken)
    {
        if (OperatingSystem.IsWindows())
            throw new PlatformNotSupportedException("Images are built on Linux only.");
        var umoci = HostPath.Find("umoci") ?? throw new InvalidOperationException("umoci not found in PATH (apt-get install umoci).");
        string layout;
        string? tag = oci.Tag;
        string? fetched = null;
        if (oci.LayoutPath is { } path)
        {
            layout = path;
        }
        else
        {
            var skopeo = HostPath.Find("skopeo") ?? throw new InvalidOperationException("skopeo not found in PATH (apt-get install skopeo).");
            phase($"skopeo copy {oci.Reference}");
            fetched = layout = Path.Combine(tmp, "layout");
            tag = "image";
            var args = new List<string> { "copy", "--quiet", "--retry-times", "2" };
            if (!oci.TlsVerify)
                args.Add("--src-tls-verify=false");
            args.AddRange(["--", "docker://" + oci.Reference, $"oci:{layout}:{tag}"]);
            await HostProcess.OutputAsync(skopeo, args, onLine, null, cancellationToken).ConfigureAwait(false);
        }

        var (name, digest) = OciLayout.ResolveManifest(layout, tag);
        // What the template named: the layout and its tag, or the registry reference (whose local copy is tagged "image").
        string image = fetched is null ? $"{layout}:{name}" : oci.Reference!;
        phase($"umoci raw unpack {image} ({digest})");
        await HostProcess.OutputAsync(umoci, ["raw", "unpack", "--image", $"{layout}:{name}", tree], onLine, null, cancellationToken).ConfigureAwait(false);
        if (fetched is not null)
            await TreeOps.DeleteAsync(fetched).ConfigureAwait(false);

        // Mount points the guest's init and the runtimes use; image tools often leave empty ones out.
        const UnixFileMode rwxr_xr_x = UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute
            | UnixFileMode.GroupRead | UnixFileMode.GroupExecute | UnixFileMode.OtherRead | UnixFileMode.OtherExecute;
        const UnixFileMode rwxrwxrwt = rwxr_xr_x | UnixFileMode.GroupWrite | UnixFileMode.OtherWrite | UnixFileMode.StickyBit;
        foreach (var dir in new[] { "dev", "proc", "sys", "run", "tmp", "home", "etc", "opt" })
        {
            var full = Path.Combine(tree, dir);
            if (new DirectoryInfo(full) is { Exists: false, LinkTarget: null })
                Directory.CreateDirectory(full, dir == "tmp" ? rwxrwxrwt : rwxr_xr_x);
        }

        var missing = RequiredFiles.Where(r => TreeOps.ResolveInTree(tree, r.Path) is null).ToList();
        if (missing.Count > 0)
        {
            throw new InvalidDataException($"the image {image} cannot be a sandbox rootfs: "
                + string.Join("; ", missing.Select(m => $"{m.Path} is missing ({m.Why})")));
        }
        return digest;
    }
}
