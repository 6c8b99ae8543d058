namespace SandboxVM.Images.Tests;

[Trait("tier", "unit")]
public sealed class ImageKeysTests
{
    private static readonly ImageSpec _spec = new("t", "debian", "bookworm", ["g++", "make"], ["echo one", "echo two"], "/agent");

    [Fact]
    public void Base_ForSameInputs_IsStable()
    {
        var key = ImageKeys.Base(_spec);

        Assert.Matches("^[0-9a-f]{64}$", key);
        Assert.Equal(key, ImageKeys.Base(_spec with { Packages = ["g++", "make"] }));
        // Pinned: a change here means every cached image is rebuilt; bump BuilderVersion on purpose instead.
        // (Changed on purpose once: build steps run as root of a user namespace, no longer as host root.)
        Assert.Equal("bec74d3cbf7e8aa346c56a5c20efa67933cb128275aa23a0bb557b57735b674d", key);
        // An image without build steps kept its key through that change.
        Assert.Equal("f566babbef7912d549e705328b279674ade9f4bd593d7f9036aee6083fb8c0f9", ImageKeys.Base(_spec with { BuildSteps = [] }));
    }

    [Fact]
    public void Base_IgnoresNamePackageOrderDuplicatesAndAgent()
    {
        var key = ImageKeys.Base(_spec);

        Assert.Equal(key, ImageKeys.Base(_spec with { Name = "other" }));
        Assert.Equal(key, ImageKeys.Base(_spec with { Packages = ["make", "g++", "make"] }));
        Assert.Equal(key, ImageKeys.Base(_spec with { AgentPath = "/elsewhere" }));
    }

    [Fact]
    public void Base_ChangesWithEveryImageInput()
    {
        var key = ImageKeys.Base(_spec);

        Assert.NotEqual(key, ImageKeys.Base(_spec with { Suite = "trixie" }));
        Assert.NotEqual(key, ImageKeys.Base(_spec with { SourceType = "oci" }));
        Assert.NotEqual(key, ImageKeys.Base(_spec with { Packages = ["g++"] }));
        Assert.NotEqual(key, ImageKeys.Base(_spec with { Packages = ["g++", "make", "gdb"] }));
        Assert.NotEqual(key, ImageKeys.Base(_spec with { BuildSteps = ["echo two", "echo one"] }));
        Assert.NotEqual(key, ImageKeys.Base(_spec with { BuildSteps = ["echo one\necho two"] }));
        Assert.NotEqual(key, ImageKeys.Base(_spec with { BuildSteps = [] }));
        // Length prefixes keep field boundaries: [gcc, make] is not [gccm, ake].
        Assert.NotEqual(
            ImageKeys.Base(_spec with { Packages = ["ab", "c"], BuildSteps = [] }),
            ImageKeys.Base(_spec with { Packages = ["a", "bc"], BuildSteps = [] }));
    }

    [Fact]
    public void Rootfs_ChangesWithBaseAndAgent()
    {
        var baseKey = ImageKeys.Base(_spec);
        var key = ImageKeys.Rootfs(baseKey, new string('a', 64));

        Assert.Equal(key, ImageKeys.Rootfs(baseKey, new string('a', 64)));
        Assert.NotEqual(key, ImageKeys.Rootfs(baseKey, new string('b', 64)));
        Assert.NotEqual(key, ImageKeys.Rootfs(ImageKeys.Base(_spec with { Suite = "trixie" }), new string('a', 64)));
        Assert.NotEqual(baseKey, key);
    }

    [Fact]
    public void Ext4_ChangesWithRootfsAndSize()
    {
        var rootfs = new string('c', 64);
        var key = ImageKeys.Ext4(rootfs, 1024);

        Assert.Equal(key, ImageKeys.Ext4(rootfs, 1024));
        Assert.NotEqual(key, ImageKeys.Ext4(rootfs, 2048));
        Assert.NotEqual(key, ImageKeys.Ext4(new string('d', 64), 1024));
    }

    [Fact]
    public async Task HashFileAsync_IsSha256OfTheBytes()
    {
        var path = Path.GetTempFileName();
        try
        {
            await File.WriteAllTextAsync(path, "abc", TestContext.Current.CancellationToken);

            var hash = await ImageKeys.HashFileAsync(path, TestContext.Current.CancellationToken);

            Assert.Equal("ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad", hash);
        }
        finally
        {
            File.Delete(path);
        }
    }
}
