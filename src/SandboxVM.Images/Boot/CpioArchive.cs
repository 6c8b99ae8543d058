using System.Globalization;
using System.Text;

namespace SandboxVM.Images.Boot;

/// <summary>
/// Builds a <c>newc</c> cpio archive (the format the kernel unpacks as an initramfs) in memory and
/// writes it reproducibly: entries sorted by path (so parents come before children), inode numbers
/// assigned in that order, owner root and mtime 0 for everything. The same entries always give the
/// same bytes, whatever order they were added in.
/// </summary>
internal sealed class CpioArchive
{
    // File type bits of st_mode.
    private const int TypeDirectory = 0x4000;
    private const int TypeRegular = 0x8000;
    private const int TypeSymlink = 0xA000;
    private const int TypeCharDevice = 0x2000;

    private const string Magic = "070701";
    private const string TrailerName = "TRAILER!!!";
    private const int HeaderLength = 110;

    private readonly Dictionary<string, Entry> _entries = new(StringComparer.Ordinal);

    public int Count => _entries.Count;

    public void AddDirectory(string path, int permissions = 0x1ED /* 0755 */) =>
        Add(path, TypeDirectory, permissions, [], 0, 0);

    public void AddFile(string path, byte[] content, int permissions = 0x1A4 /* 0644 */)
    {
        ArgumentNullException.ThrowIfNull(content);
        Add(path, TypeRegular, permissions, content, 0, 0);
    }

    public void AddSymlink(string path, string target)
    {
        ArgumentException.ThrowIfNullOrEmpty(target);
        Add(path, TypeSymlink, 0x1FF /* 0777 */, Encoding.UTF8.GetBytes(target), 0, 0);
    }

    /// <summary>A device node: the kernel creates it while unpacking, so no root is needed to build the archive.</summary>
    public void AddCharDevice(string path, int permissions, int major, int minor) =>
        Add(path, TypeCharDevice, permissions, [], major, minor);

    public bool Contains(string path) => _entries.ContainsKey(Normalize(path));

    /// <summary>Writes every entry, then the trailer. Every parent directory must have been added.</summary>
    public void WriteTo(Stream stream)
    {
        ArgumentNullException.ThrowIfNull(stream);
        var ordered = _entries.Values.OrderBy(e => e.Path, StringComparer.Ordinal).ToList();
        foreach (var e in ordered)
        {
            var parent = Parent(e.Path);
            if (parent is not null && (!_entries.TryGetValue(parent, out var p) || p.Type != TypeDirectory))
                throw new InvalidOperationException($"cpio entry '{e.Path}' has no parent directory entry '{parent}'.");
        }

        long offset = 0;
        var inode = 1;
        foreach (var e in ordered)
        {
            var nlink = e.Type == TypeDirectory ? 2 : 1;
            offset = WriteEntry(stream, offset, e.Path, inode++, e.Type | e.Permissions, nlink, e.Content, e.Major, e.Minor);
        }

        offset = WriteEntry(stream, offset, TrailerName, 0, 0, 1, [], 0, 0);
        // Some tools expect archives in 512-byte blocks; the kernel ignores the zero padding.
        var tail = (int)((512 - (offset % 512)) % 512);
        stream.Write(new byte[tail]);
    }

    public byte[] ToArray()
    {
        using var ms = new MemoryStream();
        WriteTo(ms);
        return ms.ToArray();
    }

    private void Add(string path, int type, int permissions, byte[] content, int major, int minor)
    {
        var normalized = Normalize(path);
        if ((permissions & ~0xFFF) != 0)
            throw new ArgumentOutOfRangeException(nameof(permissions), "Only permission bits (07777) are allowed.");
        if (!_entries.TryAdd(normalized, new Entry(normalized, type, permissions, content, major, minor)))
            throw new InvalidOperationException($"cpio entry '{normalized}' was added twice.");
    }

    /// <summary>Archive names are relative ("bin/sh"); the root directory is ".".</summary>
    private static string Normalize(string path)
    {
        ArgumentNullException.ThrowIfNull(path);
        var trimmed = path.Trim('/');
        if (trimmed.Length == 0 || trimmed == ".")
            return ".";
        var parts = trimmed.Split('/');
        if (parts.Any(p => p.Length == 0 || p is "." or ".." || p.Contains('\0', StringComparison.Ordinal)))
            throw new ArgumentException($"'{path}' is not a clean relative path.", nameof(path));
        return trimmed;
    }

    private static string? Parent(string path)
    {
        if (path == ".")
            return null;
        var slash = path.LastIndexOf('/');
        return slash < 0 ? "." : path[..slash];
    }

    private static long WriteEntry(Stream stream, long offset, string name, int inode, int mode, int nlink, byte[] content, int major, int minor)
    {
        var nameBytes = Encoding.UTF8.GetBytes(name);
        var header = new StringBuilder(HeaderLength)
            .Append(Magic)
            .Append(Hex(inode))
            .Append(Hex(mode))
            .Append(Hex(0)) // uid
            .Append(Hex(0)) // gid
            .Append(Hex(nlink))
            .Append(Hex(0)) // mtime: fixed for reproducible output
            .Append(Hex(content.Length))
            .Append(Hex(0)) // devmajor
            .Append(Hex(0)) // devminor
            .Append(Hex(major)) // rdevmajor
            .Append(Hex(minor)) // rdevminor
            .Append(Hex(nameBytes.Length + 1))
            .Append(Hex(0)) // check: unused by newc
            .ToString();
        stream.Write(Encoding.ASCII.GetBytes(header));
        stream.Write(nameBytes);
        stream.WriteByte(0);
        offset += HeaderLength + nameBytes.Length + 1;
        offset = Pad(stream, offset);
        stream.Write(content);
        offset += content.Length;
        return Pad(stream, offset);
    }

    private static long Pad(Stream stream, long offset)
    {
        var pad = (int)((4 - (offset % 4)) % 4);
        for (var i = 0; i < pad; i++)
            stream.WriteByte(0);
        return offset + pad;
    }

    private static string Hex(int value) => value.ToString("X8", CultureInfo.InvariantCulture);

    private sealed record Entry(string Path, int Type, int Permissions, byte[] Content, int Major, int Minor);
}
