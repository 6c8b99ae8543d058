using System.Globalization;
using System.Text;
using SandboxVM.Images.Boot;

namespace SandboxVM.Images.Tests.Boot;

[Trait("tier", "integration")]
public sealed class CpioArchiveTests
{
    private static CpioArchive Sample(bool reversed)
    {
        var cpio = new CpioArchive();
        var steps = new List<Action>
        {
            () => cpio.AddDirectory("."),
            () => cpio.AddDirectory("bin"),
            () => cpio.AddDirectory("dev"),
            () => cpio.AddFile("bin/busybox", [1, 2, 3, 4, 5], 0x1ED),
            () => cpio.AddSymlink("bin/sh", "/bin/busybox"),
            () => cpio.AddCharDevice("dev/console", 0x180, 5, 1),
            () => cpio.AddFile("init", Encoding.UTF8.GetBytes("#!/bin/sh\n"), 0x1ED),
        };
        if (reversed)
            steps.Reverse();
        foreach (var step in steps)
            step();
        return cpio;
    }

    [Fact]
    public void WriteTo_IsByteForByteStable_WhateverTheInsertionOrder()
    {
        var a = Sample(reversed: false).ToArray();
        var b = Sample(reversed: true).ToArray();

        Assert.Equal(a, b);
        Assert.Equal(0, a.Length % 512);
    }

    [Fact]
    public void WriteTo_WritesNewcHeadersSortedAlignedAndATrailer()
    {
        var entries = NewcReader.Read(Sample(reversed: false).ToArray());

        Assert.Equal([".", "bin", "bin/busybox", "bin/sh", "dev", "dev/console", "init", "TRAILER!!!"], entries.Select(e => e.Name));
        Assert.All(entries, e => Assert.Equal(0, e.HeaderOffset % 4));
        var busybox = entries.Single(e => e.Name == "bin/busybox");
        Assert.Equal(0x81ED, busybox.Mode); // regular, 0755
        Assert.Equal(new byte[] { 1, 2, 3, 4, 5 }, busybox.Data);
        var sh = entries.Single(e => e.Name == "bin/sh");
        Assert.Equal(0xA1FF, sh.Mode);
        Assert.Equal("/bin/busybox", Encoding.UTF8.GetString(sh.Data));
        var console = entries.Single(e => e.Name == "dev/console");
        Assert.Equal(0x2180, console.Mode);
        Assert.Equal((5, 1), (console.RdevMajor, console.RdevMinor));
        Assert.Equal(0x41ED, entries.Single(e => e.Name == "bin").Mode);
        Assert.All(entries, e => Assert.Equal(0, e.Mtime));
        // Inodes in path order, unique.
        Assert.Equal(Enumerable.Range(1, 7), entries.SkipLast(1).Select(e => e.Inode));
    }

    [Fact]
    public async Task WriteTo_IsReadByTheHostCpio()
    {
        Assert.SkipUnless(TestCache.HasTool("cpio"), "needs cpio");
        var dir = Directory.CreateTempSubdirectory("sbvm-cpio-").FullName;
        try
        {
            var path = Path.Combine(dir, "a.cpio");
            await File.WriteAllBytesAsync(path, Sample(reversed: false).ToArray(), TestContext.Current.CancellationToken);

            var listing = await TestCache.RunAsync("cpio", "-itv", "-F", path);

            var lines = listing.Split('\n', StringSplitOptions.RemoveEmptyEntries);
            Assert.Equal(7, lines.Length);
            Assert.Contains(lines, l => l.StartsWith("lrwxrwxrwx", StringComparison.Ordinal) && l.EndsWith("bin/sh -> /bin/busybox", StringComparison.Ordinal));
            Assert.Contains(lines, l => l.StartsWith("crw-------", StringComparison.Ordinal) && l.Contains("dev/console", StringComparison.Ordinal));
            Assert.Contains(lines, l => l.StartsWith("-rwxr-xr-x", StringComparison.Ordinal) && l.EndsWith("init", StringComparison.Ordinal));
        }
        finally
        {
            Directory.Delete(dir, true);
        }
    }

    [Fact]
    public void WriteTo_WithoutParentDirectory_Throws()
    {
        var cpio = new CpioArchive();
        cpio.AddDirectory(".");
        cpio.AddFile("lib/modules/virtio.ko", [0]);

        var e = Assert.Throws<InvalidOperationException>(() => cpio.ToArray());
        Assert.Contains("lib/modules", e.Message, StringComparison.Ordinal);
    }

    [Theory]
    [InlineData("../etc/passwd")]
    [InlineData("bin//sh")]
    [InlineData("bin/./sh")]
    public void Add_RejectsUncleanPaths(string path)
    {
        Assert.Throws<ArgumentException>(() => new CpioArchive().AddFile(path, []));
    }

    [Fact]
    public void Add_Twice_Throws()
    {
        var cpio = new CpioArchive();
        cpio.AddDirectory("bin");

        Assert.Throws<InvalidOperationException>(() => cpio.AddSymlink("/bin/", "x"));
    }

    /// <summary>Minimal newc parser for the assertions.</summary>
    internal static class NewcReader
    {
        public sealed record Entry(string Name, int HeaderOffset, int Inode, int Mode, int Mtime, int RdevMajor, int RdevMinor, byte[] Data);

        public static List<Entry> Read(byte[] archive)
        {
            var entries = new List<Entry>();
            var offset = 0;
            while (true)
            {
                var header = Encoding.ASCII.GetString(archive, offset, 110);
                Assert.StartsWith("070701", header, StringComparison.Ordinal);
                int Field(int index) => int.Parse(header.AsSpan(6 + index * 8, 8), NumberStyles.HexNumber, CultureInfo.InvariantCulture);
                var nameSize = Field(11);
                var name = Encoding.UTF8.GetString(archive, offset + 110, nameSize - 1);
                Assert.Equal(0, archive[offset + 110 + nameSize - 1]);
                var dataOffset = Align(offset + 110 + nameSize);
                var size = Field(6);
                entries.Add(new Entry(name, offset, Field(0), Field(1), Field(5), Field(9), Field(10), archive.AsSpan(dataOffset, size).ToArray()));
                offset = Align(dataOffset + size);
                if (name == "TRAILER!!!")
                    return entries;
            }
        }

        private static int Align(int value) => (value + 3) & ~3;
    }
}
