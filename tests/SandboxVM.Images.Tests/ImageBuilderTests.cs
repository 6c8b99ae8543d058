using System.Runtime.Versioning;
using System.Security.Cryptography;

namespace SandboxVM.Images.Tests;

/// <summary>The rootfs and ext4 phases, on a seeded fake base: no mmdebstrap, no network.</summary>
[SupportedOSPlatform("linux")]
[Trait("tier", "integration")]
public sealed class ImageBuilderTests
{
    private static readonly UnixFileMode _mode0755 = UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute
        | UnixFileMode.GroupRead | UnixFileMode.GroupExecute | UnixFileMode.OtherRead | UnixFileMode.OtherExecute;

    private static ImageSpec Spec(string agent) => new("tiny", "debian", "bookworm", ["hello"], ["true"], agent);

    private static string AgentIn(string tree) => Path.Combine(tree, ImageLayout.AgentPath.TrimStart('/'));

    [Fact]
    public async Task BuildRootfs_WithBaseCached_AddsAgentAt0755AndLeavesBaseAlone()
    {
        await using var cache = new TestCache();
        var spec = Spec(cache.WriteAgent("new"));
        var baseTree = cache.SeedBase(spec, tree =>
        {
            File.WriteAllText(Path.Combine(tree, "hello.txt"), "hi");
            // A stale agent in the base: the rootfs must replace it without writing through the hard link.
            File.WriteAllText(AgentIn(tree), "old");
        });
        var builder = cache.Builder();
        Assert.False(builder.IsBuilt(spec));
        Assert.Null(builder.TryGetBuilt(spec));

        var image = await builder.BuildRootfsAsync(spec, null, TestContext.Current.CancellationToken);

        Assert.False(image.WasCached);
        Assert.Equal(Path.Combine(cache.Root, "rootfs", image.Key, "rootfs"), image.RootfsDir);
        Assert.Equal(File.ReadAllText(spec.AgentPath), File.ReadAllText(AgentIn(image.RootfsDir)));
        Assert.Equal(_mode0755, File.GetUnixFileMode(AgentIn(image.RootfsDir)));
        Assert.Equal("hi", File.ReadAllText(Path.Combine(image.RootfsDir, "hello.txt")));
        Assert.Equal("old", File.ReadAllText(AgentIn(baseTree)));
        Assert.True(File.Exists(Path.Combine(cache.Root, "rootfs", image.Key, "image.json")));
        Assert.True(builder.IsBuilt(spec));
        Assert.Equal(image.RootfsDir, builder.TryGetBuilt(spec));
    }

    [Fact]
    public async Task BuildRootfs_SecondCall_IsCached()
    {
        await using var cache = new TestCache();
        var spec = Spec(cache.WriteAgent("a"));
        cache.SeedBase(spec, _ => { });
        var first = await cache.Builder().BuildRootfsAsync(spec, null, TestContext.Current.CancellationToken);
        var messages = new List<string>();

        var second = await cache.Builder().BuildRootfsAsync(spec, new SyncProgress(messages), TestContext.Current.CancellationToken);

        Assert.True(second.WasCached);
        Assert.Equal(first.RootfsDir, second.RootfsDir);
        Assert.Equal(first.Key, second.Key);
        Assert.Contains(messages, m => m.Contains("cached", StringComparison.Ordinal));
    }

    [Fact]
    public async Task BuildRootfs_WithChangedAgent_BuildsANewRootfsFromTheSameBase()
    {
        await using var cache = new TestCache();
        var spec = Spec(cache.WriteAgent("v1"));
        cache.SeedBase(spec, _ => { });
        var builder = cache.Builder();
        var v1 = await builder.BuildRootfsAsync(spec, null, TestContext.Current.CancellationToken);
        await File.AppendAllTextAsync(spec.AgentPath, "# v2\n", TestContext.Current.CancellationToken);

        var v2 = await builder.BuildRootfsAsync(spec, null, TestContext.Current.CancellationToken);

        Assert.False(v2.WasCached);
        Assert.NotEqual(v1.Key, v2.Key);
        Assert.Contains("# v2", File.ReadAllText(AgentIn(v2.RootfsDir)), StringComparison.Ordinal);
        Assert.DoesNotContain("# v2", File.ReadAllText(AgentIn(v1.RootfsDir)), StringComparison.Ordinal);
    }

    [Fact]
    public async Task BuildRootfs_ConcurrentCallsForOneKey_BuildOnce()
    {
        await using var cache = new TestCache();
        var spec = Spec(cache.WriteAgent("c"));
        cache.SeedBase(spec, tree =>
        {
            for (var i = 0; i < 200; i++)
                File.WriteAllText(Path.Combine(tree, $"f{i}"), "x");
        });

        var images = await Task.WhenAll(Enumerable.Range(0, 4).Select(_ =>
            Task.Run(() => cache.Builder().BuildRootfsAsync(spec, null, TestContext.Current.CancellationToken), TestContext.Current.CancellationToken)));

        Assert.Single(images.Select(i => i.RootfsDir).Distinct());
        Assert.Single(images, i => !i.WasCached);
        Assert.Equal(200, Directory.GetFiles(images[0].RootfsDir).Length);
        Assert.Empty(Directory.GetFileSystemEntries(Path.Combine(cache.Root, "rootfs"), "*.tmp-*"));
    }

    [Fact]
    public async Task BuildRootfs_RemovesLeftoversOfInterruptedBuilds()
    {
        await using var cache = new TestCache();
        var spec = Spec(cache.WriteAgent("s"));
        cache.SeedBase(spec, _ => { });
        var key = ImageKeys.Rootfs(ImageKeys.Base(spec), await ImageKeys.HashFileAsync(spec.AgentPath, TestContext.Current.CancellationToken));
        var ownLeftover = Path.Combine(cache.Root, "rootfs", key + ".tmp-dead0001", "rootfs");
        var otherLeftover = Path.Combine(cache.Root, "rootfs", new string('e', 64) + ".tmp-dead0002");
        Directory.CreateDirectory(ownLeftover);
        Directory.CreateDirectory(otherLeftover);

        var image = await cache.Builder().BuildRootfsAsync(spec, null, TestContext.Current.CancellationToken);

        Assert.Equal(key, image.Key);
        Assert.False(Directory.Exists(ownLeftover));
        Assert.False(Directory.Exists(otherLeftover));
    }

    [Fact]
    public async Task BuildRootfs_WithAnOciTypeButNoImage_OrABadReference_IsRefusedBeforeAnythingRuns()
    {
        await using var cache = new TestCache();
        var agent = cache.WriteAgent("o");

        var none = await Assert.ThrowsAsync<NotSupportedException>(() =>
            cache.Builder().BuildRootfsAsync(Spec(agent) with { SourceType = "oci" }, null, TestContext.Current.CancellationToken));
        Assert.Contains("source type 'oci' with no OCI source", none.Message, StringComparison.Ordinal);

        var option = await Assert.ThrowsAsync<ArgumentException>(() => cache.Builder().BuildRootfsAsync(
            Spec(agent) with { SourceType = "oci", Oci = new OciSource("--src-creds=x", null) }, null, TestContext.Current.CancellationToken));
        Assert.Contains("'--src-creds=x' is not an image reference", option.Message, StringComparison.Ordinal);
        Assert.False(Directory.Exists(Path.Combine(cache.Root, "base")));
    }

    [Theory]
    [InlineData("--no-check-gpg")]
    [InlineData("a,b")]
    [InlineData("Foo")]
    public async Task BuildRootfs_WithBadPackageName_Throws(string package)
    {
        await using var cache = new TestCache();
        var spec = Spec(cache.WriteAgent("p")) with { Packages = ["hello", package] };

        var e = await Assert.ThrowsAsync<ArgumentException>(() => cache.Builder().BuildRootfsAsync(spec, null, TestContext.Current.CancellationToken));

        Assert.Contains(package, e.Message, StringComparison.Ordinal);
    }

    [Fact]
    public async Task BuildExt4_FromTinyTree_MakesLabelledImageWithTheFiles()
    {
        Assert.SkipUnless(TestCache.HasTool("mkfs.ext4") && TestCache.HasTool("debugfs"), "needs e2fsprogs (mkfs.ext4, debugfs)");
        await using var cache = new TestCache();
        var spec = Spec(cache.WriteAgent("agent-in-ext4"));
        cache.SeedBase(spec, tree =>
        {
            Directory.CreateDirectory(Path.Combine(tree, "etc"));
            File.WriteAllText(Path.Combine(tree, "etc", "motd"), "inside ext4\n");
        });
        var builder = cache.Builder();
        var image = await builder.BuildRootfsAsync(spec, null, TestContext.Current.CancellationToken);

        var img = await builder.BuildExt4Async(image, 16, null, TestContext.Current.CancellationToken);

        Assert.Equal(16L * 1024 * 1024, new FileInfo(img).Length);
        Assert.Matches(@"Filesystem volume name:\s+root", await TestCache.RunAsync("dumpe2fs", "-h", img));
        var root = await TestCache.RunAsync("debugfs", "-R", "ls -p /", img);
        Assert.Contains("/etc/", root, StringComparison.Ordinal);
        Assert.Contains("/opt/", root, StringComparison.Ordinal);
        Assert.Equal("inside ext4\n", await TestCache.RunAsync("debugfs", "-R", "cat /etc/motd", img));
        Assert.Contains("agent-in-ext4", await TestCache.RunAsync("debugfs", "-R", "cat " + ImageLayout.AgentPath, img), StringComparison.Ordinal);
        var stat = await TestCache.RunAsync("debugfs", "-R", "stat " + ImageLayout.AgentPath, img);
        Assert.Contains("Mode:  0755", stat, StringComparison.Ordinal);

        var written = File.GetLastWriteTimeUtc(img);
        Assert.Equal(img, await builder.BuildExt4Async(image, 16, null, TestContext.Current.CancellationToken));
        Assert.Equal(written, File.GetLastWriteTimeUtc(img));
        Assert.Equal(img, builder.TryGetBuiltExt4(image, 16));
        Assert.Null(builder.TryGetBuiltExt4(image, 32));
    }

    [Fact]
    public async Task BuildExt4_WhenTreeDoesNotFit_ThrowsWithMkfsOutputAndLeavesNothing()
    {
        Assert.SkipUnless(TestCache.HasTool("mkfs.ext4"), "needs e2fsprogs (mkfs.ext4)");
        await using var cache = new TestCache();
        var spec = Spec(cache.WriteAgent("big"));
        // Random bytes: mkfs.ext4 -d stores all-zero blocks as holes.
        cache.SeedBase(spec, tree => File.WriteAllBytes(Path.Combine(tree, "big.bin"), RandomNumberGenerator.GetBytes(8 * 1024 * 1024)));
        var builder = cache.Builder();
        var image = await builder.BuildRootfsAsync(spec, null, TestContext.Current.CancellationToken);

        var e = await Assert.ThrowsAsync<ExternalCommandException>(() => builder.BuildExt4Async(image, 4, null, TestContext.Current.CancellationToken));

        Assert.Contains("mkfs.ext4", e.Message, StringComparison.Ordinal);
        Assert.NotEqual(0, e.ExitCode);
        Assert.Empty(Directory.GetFiles(Path.Combine(cache.Root, "ext4")));
    }

    /// <summary>IProgress that reports synchronously (Progress&lt;T&gt; posts to the thread pool).</summary>
    private sealed class SyncProgress(List<string> messages) : IProgress<string>
    {
        public void Report(string value)
        {
            lock (messages)
                messages.Add(value);
        }
    }
}
