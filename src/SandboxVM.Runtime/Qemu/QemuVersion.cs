using System.Collections.Concurrent;
using System.Diagnostics;
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
            var psi = new ProcessStartInfo(qemuPath) { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
            psi.ArgumentList.Add("--version");
            using var p = System.Diagnostics.Process.Start(psi) ?? throw new InvalidOperationException("did not start");
            var stderr = p.StandardError.ReadToEndAsync();
            string output = p.StandardOutput.ReadToEnd();
            if (!p.WaitForExit(TimeSpan.FromSeconds(30)))
            {
                p.Kill();
                return new QemuVersion($"{qemuPath} --version did not answer within 30 s", null);
            }
            var version = Parse(output);
            return version.Number is null ? version with { Text = $"{qemuPath} --version: {(output + stderr.Result).Trim()}" } : version;
        }
        catch (Exception e) when (e is InvalidOperationException or System.ComponentModel.Win32Exception or IOException)
        {
            return new QemuVersion($"{qemuPath} --version failed: {e.Message}", null);
        }
    }

    [GeneratedRegex(@"version (\d+)\.(\d+)(?:\.(\d+))?")]
    private static partial Regex VersionPattern();
}
