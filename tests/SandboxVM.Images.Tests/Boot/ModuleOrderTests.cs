using SandboxVM.Images.Boot;

namespace SandboxVM.Images.Tests.Boot;

[Trait("tier", "unit")]
public sealed class ModuleOrderTests
{
    // modinfo -F depends of Debian bookworm's 6.1 cloud kernel.
    private static readonly Dictionary<string, IReadOnlyList<string>> _debianCloud = new(StringComparer.Ordinal)
    {
        ["virtio_ring"] = [],
        ["virtio"] = ["virtio_ring"],
        ["virtio_mmio"] = ["virtio", "virtio_ring"],
        ["virtio_blk"] = ["virtio", "virtio_ring"],
        ["virtio_console"] = ["virtio", "virtio_ring"],
        ["virtio_rng"] = ["virtio", "virtio_ring"],
        ["vsock"] = [],
        ["vmw_vsock_virtio_transport_common"] = ["vsock"],
        ["vmw_vsock_virtio_transport"] = ["virtio", "vmw_vsock_virtio_transport_common", "virtio_ring", "vsock"],
        ["overlay"] = [],
    };

    [Fact]
    public void Compute_PutsDependenciesFirstAndKeepsTheRequestedOrder()
    {
        var order = ModuleOrder.Compute(
            ["virtio_mmio", "virtio_blk", "virtio_console", "virtio_rng", "vmw_vsock_virtio_transport", "overlay"], _debianCloud);

        Assert.Equal(
            ["virtio_ring", "virtio", "virtio_mmio", "virtio_blk", "virtio_console", "virtio_rng",
             "vsock", "vmw_vsock_virtio_transport_common", "vmw_vsock_virtio_transport", "overlay"],
            order);
    }

    [Fact]
    public void Compute_EveryModuleAfterAllItsDependencies_AndOnce()
    {
        var order = ModuleOrder.Compute(["overlay", "vmw_vsock_virtio_transport", "virtio_blk", "virtio_blk"], _debianCloud).ToList();

        Assert.Equal(order.Count, order.Distinct().Count());
        for (var i = 0; i < order.Count; i++)
        {
            foreach (var dep in _debianCloud[order[i]])
                Assert.True(order.IndexOf(dep) < i, $"{dep} must load before {order[i]}");
        }
    }

    [Fact]
    public void Compute_WithUnknownDependency_NamesIt()
    {
        var graph = new Dictionary<string, IReadOnlyList<string>>(StringComparer.Ordinal) { ["ext4"] = ["jbd2", "mbcache"], ["mbcache"] = [] };

        var e = Assert.Throws<InvalidOperationException>(() => ModuleOrder.Compute(["ext4"], graph));

        Assert.Contains("ext4 depends on jbd2", e.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Compute_WithCycle_Throws()
    {
        var graph = new Dictionary<string, IReadOnlyList<string>>(StringComparer.Ordinal) { ["a"] = ["b"], ["b"] = ["a"] };

        Assert.Throws<InvalidOperationException>(() => ModuleOrder.Compute(["a"], graph));
    }

    [Theory]
    [InlineData("virtio-rng.ko", "virtio_rng")]
    [InlineData("virtio_blk.ko.xz", "virtio_blk")]
    [InlineData("overlay.ko.zst", "overlay")]
    [InlineData("crc16.ko.gz", "crc16")]
    [InlineData("modules.builtin", null)]
    [InlineData(".ko", null)]
    public void NameOfFile_NormalizesDashesAndCompressionSuffixes(string file, string? expected)
    {
        Assert.Equal(expected, ModuleOrder.NameOfFile(file));
    }

    [Fact]
    public void ParseDepends_SplitsNormalizesAndAcceptsEmpty()
    {
        Assert.Empty(ModuleOrder.ParseDepends("\n"));
        Assert.Equal(["virtio", "virtio_ring", "crc_itu_t"], ModuleOrder.ParseDepends("virtio,virtio_ring,crc-itu-t\n"));
        Assert.Throws<ArgumentException>(() => ModuleOrder.ParseDepends("evil;rm -rf"));
    }
}
