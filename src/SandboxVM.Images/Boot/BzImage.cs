using System.Buffers.Binary;
using System.IO.Compression;

namespace SandboxVM.Images.Boot;

/// <summary>
/// Gets the uncompressed ELF <c>vmlinux</c> out of an x86 bzImage. The boot protocol header (2.08+)
/// says exactly where the compressed kernel is (<c>payload_offset</c>/<c>payload_length</c>), so no
/// magic scanning is needed; the payload is then decompressed with the matching host tool.
/// Firecracker needs the ELF, and QEMU boots it through the PVH entry point without the
/// decompression step (a little faster under TCG).
/// </summary>
internal static class BzImage
{
    private const int SetupSectsOffset = 0x1F1;
    private const int HeaderMagicOffset = 0x202;
    private const int VersionOffset = 0x206;
    private const int PayloadOffsetOffset = 0x248;
    private const int PayloadLengthOffset = 0x24C;

    /// <summary>Where the compressed kernel is and how it is compressed.</summary>
    /// <param name="Offset">Byte offset in the bzImage file.</param>
    /// <param name="Length">Bytes of compressed data (without the size trailer).</param>
    /// <param name="Compression">gzip, xz, zstd, lz4, bzip2, lzma or lzo.</param>
    /// <param name="UncompressedSize">From the 4-byte trailer the kernel build appends (all but gzip), else null.</param>
    public sealed record Payload(int Offset, int Length, string Compression, long? UncompressedSize);

    /// <exception cref="InvalidDataException">Not a bzImage of boot protocol 2.08 or later, or an unknown compression.</exception>
    public static Payload FindPayload(ReadOnlySpan<byte> image)
    {
        if (image.Length < 0x260 || !image.Slice(HeaderMagicOffset, 4).SequenceEqual("HdrS"u8))
            throw new InvalidDataException("Not a bzImage (no HdrS boot header).");
        var version = BinaryPrimitives.ReadUInt16LittleEndian(image[VersionOffset..]);
        if (version < 0x208)
            throw new InvalidDataException($"Boot protocol {version >> 8}.{version & 0xFF} has no payload fields (needs 2.08+).");
        int setupSects = image[SetupSectsOffset] == 0 ? 4 : image[SetupSectsOffset];
        var offset = (long)(setupSects + 1) * 512 + BinaryPrimitives.ReadUInt32LittleEndian(image[PayloadOffsetOffset..]);
        var length = (long)BinaryPrimitives.ReadUInt32LittleEndian(image[PayloadLengthOffset..]);
        if (length < 8 || offset + length > image.Length)
            throw new InvalidDataException($"bzImage payload ({offset}+{length}) lies outside the file ({image.Length} bytes).");

        var data = image.Slice((int)offset, (int)length);
        var compression = Detect(data) ?? throw new InvalidDataException($"Unknown kernel compression (payload starts {Convert.ToHexString(data[..6])}).");
        if (compression == "gzip")
            return new Payload((int)offset, (int)length, compression, null);
        // The kernel build appends the uncompressed size (le32) after every format but gzip.
        var size = BinaryPrimitives.ReadUInt32LittleEndian(data[^4..]);
        return new Payload((int)offset, (int)length - 4, compression, size);
    }

    /// <summary>Writes the ELF kernel of <paramref name="bzImagePath"/> to <paramref name="outputPath"/>.</summary>
    /// <returns>The compression that was undone.</returns>
    /// <exception cref="InvalidDataException">The result is not an ELF file of the announced size.</exception>
    /// <exception cref="ExternalCommandException">The decompressor is missing or failed.</exception>
    public static async Task<string> ExtractVmlinuxAsync(string bzImagePath, string outputPath, string workDir, CancellationToken cancellationToken)
    {
        var image = await File.ReadAllBytesAsync(bzImagePath, cancellationToken).ConfigureAwait(false);
        var payload = FindPayload(image);
        var output = new FileStream(outputPath, FileMode.Create, FileAccess.ReadWrite, FileShare.None, 1 << 16, FileOptions.Asynchronous);
        await using (output.ConfigureAwait(false))
        {
            if (payload.Compression == "gzip")
            {
                var gzip = new GZipStream(new MemoryStream(image, payload.Offset, payload.Length), CompressionMode.Decompress);
                await using (gzip.ConfigureAwait(false))
                    await gzip.CopyToAsync(output, cancellationToken).ConfigureAwait(false);
            }
            else
            {
                // The tools read a file argument and write to stdout (-dc): no shell redirection needed.
                var compressed = Path.Combine(workDir, "vmlinux-payload");
                await File.WriteAllBytesAsync(compressed, image.AsMemory(payload.Offset, payload.Length), cancellationToken).ConfigureAwait(false);
                var (tool, args) = Decompressor(payload.Compression);
                (await HostProcess.RunAsync(new HostCommand(tool, [.. args, compressed]) { StdoutTo = output }, cancellationToken).ConfigureAwait(false)).EnsureSuccess();
                File.Delete(compressed);
            }

            await output.FlushAsync(cancellationToken).ConfigureAwait(false);
            if (payload.UncompressedSize is { } expected && output.Length != expected)
                throw new InvalidDataException($"Decompressed kernel is {output.Length} bytes, the bzImage announces {expected}.");
            output.Position = 0;
            var magic = new byte[4];
            if (await output.ReadAtLeastAsync(magic, 4, false, cancellationToken).ConfigureAwait(false) < 4 || !magic.AsSpan().SequenceEqual("\u007FELF"u8))
                throw new InvalidDataException("Decompressed kernel is not an ELF file.");
        }

        return payload.Compression;
    }

    /// <summary>Decompression command for the format (file name is appended).</summary>
    public static (string Tool, string[] Arguments) Decompressor(string compression) => compression switch
    {
        "xz" => ("xz", ["-dc", "--"]),
        "lzma" => ("xz", ["--format=lzma", "-dc", "--"]),
        "zstd" => ("zstd", ["-dcq", "--"]),
        "lz4" => ("lz4", ["-dcq", "--"]),
        "bzip2" => ("bzip2", ["-dc", "--"]),
        "lzo" => ("lzop", ["-dc", "--"]),
        "gzip" => ("gzip", ["-dc", "--"]),
        _ => throw new ArgumentOutOfRangeException(nameof(compression), compression, "Unknown compression."),
    };

    private static string? Detect(ReadOnlySpan<byte> data) => data switch
    {
        [0x1F, 0x8B, ..] => "gzip",
        [0xFD, 0x37, 0x7A, 0x58, 0x5A, 0x00, ..] => "xz",
        [0x28, 0xB5, 0x2F, 0xFD, ..] => "zstd",
        [0x02, 0x21, 0x4C, 0x18, ..] => "lz4",
        [0x42, 0x5A, 0x68, ..] => "bzip2",
        [0x5D, 0x00, 0x00, ..] => "lzma",
        [0x89, 0x4C, 0x5A, 0x4F, ..] => "lzo",
        _ => null,
    };
}
