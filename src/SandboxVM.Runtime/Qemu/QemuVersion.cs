using System.Collections.Concurrent;
using System.Globalization;
using System.Text.RegularExpressions;

namespace SandboxVM.Runtime.Qemu;

/// <summary>What a QEMU binary says it is (<c>--version</c>), and what this runtime may do with it.</summary>
public sealed partial record QemuVersion(string Text, Version? Number)
{
    /// <summary>
    /// QEMU 8.2 added memory-backend-file's <c>rom</c> property: <c>readonly=on,rom=off</c> opens the RAM
    /// file read-only and still maps it private and writable (copy-on-write). Before it, a private
    /// mapping opened the file read-write, so every clone's QEMU could have changed the snapshot.
    /// </summary>
    public static readonly Version ReadOnlySnapshotMemorySince = new(8, 2);

    // One `qemu --version` per binary (path and mtime: an upgrade in place is noticed) and process.
    private static readonly ConcurrentDictionary<string, Lazy<QemuVersion>> _cache = new();

    /// <summary>True when a clone can map the snapshot's RAM file through a read-only descriptor.</summary>
    public bool ReadOnlySnapshotMemory => Number >= ReadOnlySnapshotMemorySince;

    /// <summary>The version in the first line of <c>qemu-system-x86_64 --version</c> ("QEMU emulator version 10.0.2 (Debian ...)").</summary>
    public static QemuVersion Parse(string output)
    {
        string first = output.Split('\n')[0].Trim();
        var m = VersionPattern().Match(first);
        return new QemuVersion(first, m.Success ? new Version(
            int.Parse(m.Groups[1].Value, CultureInfo.InvariantCulture),
            int.Parse(m.Groups[2].Value, CultureInfo.InvariantCulture),
            m.Groups[3].Success ? int.Parse(m.Groups[3].Value, CultureInfo.InvariantCulture) : 0) : null);
    }

    /// <summary>Runs <paramref name="qemuPath"/> --version (once per binary); a QEMU that cannot run gives a null number.</summary>
    public static QemuVersion Read(string qemuPath)
    {
        var info = new FileInfo(qemuPath);
        if (!info.Exists)
        {
            return new QemuVersion($"{qemuPath} not found", null);
        }
        string key = $"{info.FullName}|{info.LastWriteTimeUtc.Ticks}";
        var lazy = _cache.GetOrAdd(key, _ => new Lazy<QemuVersion>(() => Run(info.FullName)));
        var version = lazy.Value;
        if (version.Number is null)
        {
            // Not remembered: the next call tries again.
            _cache.TryRemove(new KeyValuePair<string, Lazy<QemuVersion>>(key, lazy));
        }
        return version;
    }

    private static QemuVersion Run(string qemuPath)
    {
        try
        {
            // Once per binary, inside a Lazy (no synchronization context to block).
            var result = HostProcess.RunAsync(new HostCommand(qemuPath, ["--version"]) { Timeout = TimeSpan.FromSeconds(30) }, CancellationToken.None)
                .GetAwaiter().GetResult();
            var version = Parse(result.Stdout);
            return version.Number is null ? version with { Text = $"{qemuPath} --version: {result.Output}" } : version;
        }
        catch (TimeoutException)
        {
            return new QemuVersion($"{qemuPath} --version did not answer within 30 s", null);
        }
        catch (Exception e) when (e is ExternalCommandException or IOException)
        {
            return new QemuVersion($"{qemuPath} --version failed: {e.Message}", null);
        }
    }

    [GeneratedRegex(@"version (\d+)\.(\d+)(?:\.(\d+))?")]
    private static partial Regex VersionPattern();
}
