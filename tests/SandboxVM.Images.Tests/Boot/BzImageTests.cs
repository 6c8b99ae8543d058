using System.Buffers.Binary;
using System.IO.Compression;
using SandboxVM.Images.Boot;

namespace SandboxVM.Images.Tests.Boot;

[Trait("tier", "integration")]
public sealed class BzImageTests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("sbvm-bzimage-").FullName;

    private static readonly byte[] _elf = [0x7F, (byte)'E', (byte)'L', (byte)'F', 2, 1, 1, 0, .. Enumerable.Range(0, 5000).Select(i => (byte)(i % 7))];

    public void Dispose() => Directory.Delete(_dir, true);

    /// <summary>A minimal bzImage: boot header with payload fields, 1 setup sector, then the payload.</summary>
    private static byte[] FakeBzImage(byte[] payload, int payloadOffset = 16)
    {
        var image = new byte[1024 + payloadOffset + payload.Length + 100];
        image[0x1F1] = 1; // setup_sects: the protected-mode kernel starts at (1 + 1) * 512
        "HdrS"u8.CopyTo(image.AsSpan(0x202));
        BinaryPrimitives.WriteUInt16LittleEndian(image.AsSpan(0x206), 0x020F);
        BinaryPrimitives.WriteUInt32LittleEndian(image.AsSpan(0x248), (uint)payloadOffset);
        BinaryPrimitives.WriteUInt32LittleEndian(image.AsSpan(0x24C), (uint)payload.Length);
        payload.CopyTo(image.AsSpan(1024 + payloadOffset));
        return image;
    }

    private static byte[] WithSizeTrailer(byte[] compressed, int size)
    {
        var result = new byte[compressed.Length + 4];
        compressed.CopyTo(result, 0);
        BinaryPrimitives.WriteInt32LittleEndian(result.AsSpan(compressed.Length), size);
        return result;
    }

    [Fact]
    public async Task ExtractVmlinux_FromGzipPayload_WritesTheElf()
    {
        using var gz = new MemoryStream();
        await using (var z = new GZipStream(gz, CompressionLevel.Fastest, leaveOpen: true))
            await z.WriteAsync(_elf, TestContext.Current.CancellationToken);
        var bz = Path.Combine(_dir, "vmlinuz");
        await File.WriteAllBytesAsync(bz, FakeBzImage(gz.ToArray()), TestContext.Current.CancellationToken);

        var compression = await BzImage.ExtractVmlinuxAsync(bz, Path.Combine(_dir, "vmlinux"), _dir, TestContext.Current.CancellationToken);

        Assert.Equal("gzip", compression);
        Assert.Equal(_elf, await File.ReadAllBytesAsync(Path.Combine(_dir, "vmlinux"), TestContext.Current.CancellationToken));
    }

    [Theory]
    [InlineData("lz4")]
    [InlineData("xz")]
    [InlineData("zstd")]
    public async Task ExtractVmlinux_WithHostTool_StripsTheSizeTrailer(string tool)
    {
        Assert.SkipUnless(TestCache.HasTool(tool), $"needs {tool}");
        var raw = Path.Combine(_dir, "raw");
        var compressedPath = Path.Combine(_dir, "raw.compressed");
        await File.WriteAllBytesAsync(raw, _elf, TestContext.Current.CancellationToken);
        // Formats as the kernel build writes them (lz4: legacy frames).
        string[] args = tool switch
        {
            "lz4" => ["-l", "-q", "-f", raw, compressedPath],
            "xz" => ["--check=crc32", "-q", "-f", "-k", "-S", ".compressed", raw],
            _ => ["-q", "-f", raw, "-o", compressedPath],
        };
        await TestCache.RunAsync(tool, args);
        var payload = WithSizeTrailer(await File.ReadAllBytesAsync(compressedPath, TestContext.Current.CancellationToken), _elf.Length);
        var bz = Path.Combine(_dir, "vmlinuz");
        await File.WriteAllBytesAsync(bz, FakeBzImage(payload), TestContext.Current.CancellationToken);

        var found = BzImage.FindPayload(await File.ReadAllBytesAsync(bz, TestContext.Current.CancellationToken));
        var compression = await BzImage.ExtractVmlinuxAsync(bz, Path.Combine(_dir, "vmlinux"), _dir, TestContext.Current.CancellationToken);

        Assert.Equal(tool, compression);
        Assert.Equal(_elf.Length, found.UncompressedSize);
        Assert.Equal(1024 + 16, found.Offset);
        Assert.Equal(_elf, await File.ReadAllBytesAsync(Path.Combine(_dir, "vmlinux"), TestContext.Current.CancellationToken));
    }

    [Fact]
    public async Task ExtractVmlinux_WhenTheSizeDisagrees_Throws()
    {
        Assert.SkipUnless(TestCache.HasTool("xz"), "needs xz");
        var raw = Path.Combine(_dir, "raw");
        await File.WriteAllBytesAsync(raw, _elf, TestContext.Current.CancellationToken);
        await TestCache.RunAsync("xz", "-k", "-f", raw);
        var payload = WithSizeTrailer(await File.ReadAllBytesAsync(raw + ".xz", TestContext.Current.CancellationToken), _elf.Length + 1);
        var bz = Path.Combine(_dir, "vmlinuz");
        await File.WriteAllBytesAsync(bz, FakeBzImage(payload), TestContext.Current.CancellationToken);

        await Assert.ThrowsAsync<InvalidDataException>(() => BzImage.ExtractVmlinuxAsync(bz, Path.Combine(_dir, "vmlinux"), _dir, TestContext.Current.CancellationToken));
    }

    [Fact]
    public void FindPayload_RejectsNonBzImages()
    {
        Assert.Throws<InvalidDataException>(() => BzImage.FindPayload(new byte[4096]));
        var unknown = FakeBzImage([9, 9, 9, 9, 9, 9, 9, 9, 9, 9]);
        Assert.Throws<InvalidDataException>(() => BzImage.FindPayload(unknown));
        var old = FakeBzImage([0x1F, 0x8B, 0, 0, 0, 0, 0, 0, 0, 0]);
        BinaryPrimitives.WriteUInt16LittleEndian(old.AsSpan(0x206), 0x0206);
        Assert.Throws<InvalidDataException>(() => BzImage.FindPayload(old));
    }
}
