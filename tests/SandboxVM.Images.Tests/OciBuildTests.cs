using SandboxVM.TestSupport;

namespace SandboxVM.Images.Tests;

/// <summary>Rootfs images from OCI images: a layout on this host, and a registry on loopback (umoci, skopeo, root).</summary>
[System.Runtime.Versioning.UnsupportedOSPlatform("windows")]
[Trait("tier", "integration")]
public sealed class OciBuildTests
{
    private static CancellationToken Ct => TestContext.Current.CancellationToken;

    private static void SkipUnlessPossible()
    {
        Assert.SkipUnless(Environment.IsPrivilegedProcess, "needs root (umoci keeps the image's file owners)");
        Assert.SkipUnless(TestCache.HasTool("umoci"), "needs umoci (scripts/install-deps.sh installs it)");
        Assert.SkipUnless(OciTestImage.CanCreate, "needs busybox-static, util-linux and glibc on the host to make the test image");
    }

    private static ImageSpec LayoutSpec(string agent, string layout, string? tag = null, params string[] steps) =>
        new("oci-test", "oci-layout", "bookworm", [], steps, agent, Oci: new OciSource(null, layout, tag));

    [Fact]
    public async Task BuildRootfs_FromAnOciLayout_UnpacksTheImage_AndAddsTheAgentAndTheSandboxUser()
    {
        SkipUnlessPossible();
        await using var cache = new TestCache();
        var tree = Path.Combine(cache.Root, "src");
        await OciTestImage.CreateTreeAsync(tree);
        var layout = Path.Combine(cache.Root, "layout");
        var digest = await OciTestImage.WriteLayoutAsync(tree, layout, "v1");
        var spec = LayoutSpec(cache.WriteAgent("oci"), layout, "v1", "echo from-a-build-step > /etc/step");

        var image = await cache.Builder().BuildRootfsAsync(spec, null, Ct);

        var root = image.RootfsDir;
        Assert.Equal(File.ReadAllText(Path.Combine(tree, "etc/marker")), File.ReadAllText(Path.Combine(root, "etc/marker")));
        Assert.Equal("busybox", new FileInfo(Path.Combine(root, "bin/sh")).LinkTarget);
        Assert.Equal("hello from the image\n", await TestCache.RunAsync("chroot", root, "/bin/sh", "-c", "echo hello from the image"));
        Assert.Equal("from-a-build-step\n", File.ReadAllText(Path.Combine(root, "etc/step")));
        Assert.True(File.Exists(Path.Combine(root, ImageLayout.AgentPath.TrimStart('/'))));
        Assert.Contains("sandbox:x:1000:1000:", File.ReadAllText(Path.Combine(root, "etc/passwd")), StringComparison.Ordinal);
        Assert.Equal("1000:1000", (await TestCache.RunAsync("stat", "-c", "%u:%g", Path.Combine(root, "home/sandbox"))).Trim());
        var manifest = File.ReadAllText(Path.Combine(cache.Root, "base", ImageKeys.Base(spec), "image.json"));
        Assert.Contains(digest, manifest, StringComparison.Ordinal);

        // Same layout and tag: cached. The tag moved to other content: a new base.
        Assert.True((await cache.Builder().BuildRootfsAsync(spec, null, Ct)).WasCached);
        string oldKey = ImageKeys.Base(spec);
        var tree2 = Path.Combine(cache.Root, "src2");
        await OciTestImage.CreateTreeAsync(tree2);
        Directory.Delete(layout, recursive: true);
        await OciTestImage.WriteLayoutAsync(tree2, layout, "v1");
        Assert.NotEqual(oldKey, ImageKeys.Base(spec));
        var rebuilt = await cache.Builder().BuildRootfsAsync(spec, null, Ct);
        Assert.False(rebuilt.WasCached);
        Assert.Equal(File.ReadAllText(Path.Combine(tree2, "etc/marker")), File.ReadAllText(Path.Combine(rebuilt.RootfsDir, "etc/marker")));
    }

    [Fact]
    public async Task BuildRootfs_FromAnImageWithoutWhatASandboxNeeds_SaysWhatIsMissing_AndKeepsNothing()
    {
        SkipUnlessPossible();
        await using var cache = new TestCache();
        var tree = Path.Combine(cache.Root, "src");
        await OciTestImage.CreateTreeAsync(tree, "/usr/bin/prlimit", "/usr/bin/setpriv", "/lib64/ld-linux-x86-64.so.2");
        var layout = Path.Combine(cache.Root, "layout");
        await OciTestImage.WriteLayoutAsync(tree, layout, "latest");

        var e = await Assert.ThrowsAsync<InvalidDataException>(() => cache.Builder().BuildRootfsAsync(LayoutSpec(cache.WriteAgent("x"), layout), null, Ct));

        Assert.Contains("/usr/bin/prlimit is missing", e.Message, StringComparison.Ordinal);
        Assert.Contains("/usr/bin/setpriv is missing", e.Message, StringComparison.Ordinal);
        Assert.Contains("glibc", e.Message, StringComparison.Ordinal);
        Assert.DoesNotContain("/bin/sh is missing", e.Message, StringComparison.Ordinal);
        Assert.Empty(Directory.GetFileSystemEntries(Path.Combine(cache.Root, "base")));
    }

    [Fact]
    public async Task BuildRootfs_FromALayoutWithoutTheTag_NamesTheTagsItHas()
    {
        SkipUnlessPossible();
        await using var cache = new TestCache();
        var tree = Path.Combine(cache.Root, "src");
        await OciTestImage.CreateTreeAsync(tree);
        var layout = Path.Combine(cache.Root, "layout");
        await OciTestImage.WriteLayoutAsync(tree, layout, "stable");

        var e = Assert.Throws<InvalidDataException>(() => ImageKeys.Base(LayoutSpec(cache.WriteAgent("x"), layout, "nightly")));
        Assert.Contains("no image tagged 'nightly' (it has: stable)", e.Message, StringComparison.Ordinal);
        var notLayout = Assert.Throws<InvalidDataException>(() => ImageKeys.Base(LayoutSpec(cache.WriteAgent("x"), tree)));
        Assert.Contains("is not an OCI image layout", notLayout.Message, StringComparison.Ordinal);
    }

    [Fact]
    public async Task BuildRootfs_FromARegistryReference_FetchesWithSkopeo()
    {
        SkipUnlessPossible();
        Assert.SkipUnless(TestCache.HasTool("skopeo"), "needs skopeo (scripts/install-deps.sh installs it)");
        await using var cache = new TestCache();
        var tree = Path.Combine(cache.Root, "src");
        await OciTestImage.CreateTreeAsync(tree);
        var layout = Path.Combine(cache.Root, "layout");
        var digest = await OciTestImage.WriteLayoutAsync(tree, layout, "1.0");
        await using var registry = OciTestImage.LayoutRegistry.Start(layout);
        string reference = $"{registry.Address}/sandboxvm-test/mini:1.0";
        var spec = new ImageSpec("oci-registry-test", "oci", "bookworm", [], [], cache.WriteAgent("r"), Oci: new OciSource(reference, null, TlsVerify: false));

        var image = await cache.Builder().BuildRootfsAsync(spec, null, Ct);

        Assert.Equal(File.ReadAllText(Path.Combine(tree, "etc/marker")), File.ReadAllText(Path.Combine(image.RootfsDir, "etc/marker")));
        Assert.Contains("sandbox:x:1000:1000:", File.ReadAllText(Path.Combine(image.RootfsDir, "etc/passwd")), StringComparison.Ordinal);
        Assert.Contains("GET /v2/sandboxvm-test/mini/manifests/1.0", registry.Requests);
        Assert.Contains(digest, File.ReadAllText(Path.Combine(cache.Root, "base", ImageKeys.Base(spec), "image.json")), StringComparison.Ordinal);
        // The fetched copy of the image is not kept next to the tree.
        Assert.False(Directory.Exists(Path.Combine(cache.Root, "base", ImageKeys.Base(spec), "layout")));
    }
}
