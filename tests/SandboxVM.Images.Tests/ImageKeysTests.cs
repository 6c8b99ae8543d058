namespace SandboxVM.Images.Tests;

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
        Assert.Equal("4da916ef0e5af371e1d0d0401ba8b4d9e5cf572d5299be4df4f6b16ca0609aa7", key);
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
