using System.Diagnostics;
using System.Runtime.Versioning;
using System.Security.Cryptography;
using System.Text;

namespace SandboxVM.Images.Tests;

/// <summary>Last use and garbage collection of the image cache, on fake entries in a temp cache.</summary>
[SupportedOSPlatform("linux")]
[Trait("tier", "integration")]
public sealed class ImageCacheTests
{
    private static readonly DateTime _now = DateTime.UtcNow;
    private static CancellationToken Ct => TestContext.Current.CancellationToken;

    private static string Key(string name) => Convert.ToHexStringLower(SHA256.HashData(Encoding.UTF8.GetBytes(name)));

    /// <summary>A fake complete entry built <paramref name="builtAgo"/> ago with <paramref name="bytes"/> of data.</summary>
    private static string Entry(TestCache cache, string phase, string name, TimeSpan builtAgo, int bytes = 64 << 10)
    {
        string key = Key(name);
        string path = phase switch
        {
            "ext4" => Path.Combine(cache.Root, "ext4", key + ".img"),
            "boot-kernel" => Path.Combine(cache.Root, "boot", "kernel", key),
            "boot-initrd" => Path.Combine(cache.Root, "boot", "initrd", key),
            _ => Path.Combine(cache.Root, phase, key),
        };
        if (phase == "ext4")
        {
            Directory.CreateDirectory(Path.GetDirectoryName(path)!);
            File.WriteAllBytes(path, RandomNumberGenerator.GetBytes(bytes));
            File.SetLastWriteTimeUtc(path, _now - builtAgo);
        }
        else
        {
            Directory.CreateDirectory(Path.Combine(path, "rootfs"));
            File.WriteAllBytes(Path.Combine(path, "rootfs", "data"), RandomNumberGenerator.GetBytes(bytes));
            File.WriteAllText(Path.Combine(path, "image.json"), "{}");
            Directory.SetLastWriteTimeUtc(path, _now - builtAgo);
        }
        return path;
    }

    private static void Stamp(TestCache cache, string phase, string name, TimeSpan usedAgo)
    {
        string stamp = Path.Combine(cache.Root, "used", $"{phase}-{Key(name)}");
        Directory.CreateDirectory(Path.GetDirectoryName(stamp)!);
        File.WriteAllText(stamp, "");
        File.SetLastWriteTimeUtc(stamp, _now - usedAgo);
    }

    private static CacheGcOptions Options(bool dryRun = false, params string[] needed) => new()
    {
        OlderThan = TimeSpan.FromDays(7),
        DryRun = dryRun,
        Needed = needed.ToHashSet(),
        NowUtc = _now,
    };

    private static List<string> Names(IEnumerable<CacheEntry> entries) => [.. entries.Select(e => e.Id).Order(StringComparer.Ordinal)];

    [Fact]
    public async Task Old_unused_entries_go_and_recently_used_or_needed_ones_stay()
    {
        await using var cache = new TestCache();
        var old = TimeSpan.FromDays(30);
        string oldExt4 = Entry(cache, "ext4", "old-disk", old);
        string oldRootfs = Entry(cache, "rootfs", "old-rootfs", old);
        string oldKernel = Entry(cache, "boot-kernel", "old-kernel", old);
        string builtRecently = Entry(cache, "ext4", "new-disk", TimeSpan.FromHours(3));
        string usedRecently = Entry(cache, "base", "old-but-used", old);
        Stamp(cache, "base", "old-but-used", TimeSpan.FromDays(1));
        string usedLongAgo = Entry(cache, "base", "used-long-ago", old);
        Stamp(cache, "base", "used-long-ago", TimeSpan.FromDays(8));
        string needed = Entry(cache, "rootfs", "current-template", old);
        // A half-built entry is not an entry: it belongs to its build.
        string tmp = Entry(cache, "rootfs", "x", old) + ".tmp-0011aabb";
        Directory.Move(Path.Combine(cache.Root, "rootfs", Key("x")), tmp);

        var result = await cache.Builder().Cache.CollectAsync(Options(needed: "rootfs/" + Key("current-template")), Ct);

        Assert.Equal(Names(result.Removed), [.. new[] { "base/" + Key("used-long-ago"), "boot-kernel/" + Key("old-kernel"), "ext4/" + Key("old-disk"), "rootfs/" + Key("old-rootfs") }.Order(StringComparer.Ordinal)]);
        foreach (string gone in new[] { oldExt4, oldRootfs, oldKernel, usedLongAgo })
        {
            Assert.False(Path.Exists(gone), gone);
        }
        foreach (string stays in new[] { builtRecently, usedRecently, needed, tmp })
        {
            Assert.True(Path.Exists(stays), stays);
        }
        Assert.False(File.Exists(Path.Combine(cache.Root, "used", "base-" + Key("used-long-ago"))));
        Assert.Empty(result.Failed);
        Assert.True(result.BytesFreed >= 4 * (64 << 10), $"freed {result.BytesFreed}");
        Assert.Contains(result.Kept, k => k.Entry.Path == needed && k.Reason.Contains("needed", StringComparison.Ordinal));
    }

    [Fact]
    public async Task A_dry_run_removes_nothing_and_reports_what_would_go()
    {
        await using var cache = new TestCache();
        string oldExt4 = Entry(cache, "ext4", "old-disk", TimeSpan.FromDays(30), bytes: 1 << 20);
        Entry(cache, "ext4", "new-disk", TimeSpan.FromHours(1));

        var dry = await cache.Builder().Cache.CollectAsync(Options(dryRun: true), Ct);

        Assert.True(dry.DryRun);
        Assert.Equal(["ext4/" + Key("old-disk")], Names(dry.Removed));
        Assert.True(File.Exists(oldExt4));
        Assert.InRange(dry.BytesFreed, 1 << 20, (1 << 20) + (64 << 10));

        var real = await cache.Builder().Cache.CollectAsync(Options(), Ct);
        Assert.Equal(Names(dry.Removed), Names(real.Removed));
        Assert.Equal(dry.BytesFreed, real.BytesFreed);
        Assert.False(File.Exists(oldExt4));
    }

    [Fact]
    public async Task An_entry_whose_build_lock_another_process_holds_stays()
    {
        Assert.SkipUnless(TestCache.HasTool("flock"), "needs flock(1)");
        await using var cache = new TestCache();
        string locked = Entry(cache, "ext4", "being-rebuilt", TimeSpan.FromDays(30));
        string free = Entry(cache, "ext4", "free", TimeSpan.FromDays(30));
        string lockFile = Path.Combine(cache.Root, "locks", $"ext4-{Key("being-rebuilt")}.lock");
        Directory.CreateDirectory(Path.GetDirectoryName(lockFile)!);
        using var holder = Process.Start(new ProcessStartInfo("flock") { ArgumentList = { lockFile, "-c", "echo held; sleep 30" }, RedirectStandardOutput = true })!;
        try
        {
            Assert.Equal("held", await holder.StandardOutput.ReadLineAsync(Ct));

            var result = await cache.Builder().Cache.CollectAsync(Options(), Ct);

            Assert.True(File.Exists(locked));
            Assert.False(File.Exists(free));
            Assert.Contains(result.Kept, k => k.Entry.Path == locked && k.Reason.Contains("locked", StringComparison.Ordinal));
        }
        finally
        {
            holder.Kill(entireProcessTree: true);
            await holder.WaitForExitAsync(Ct);
        }
    }

    [Fact]
    public async Task An_entry_a_running_process_names_stays()
    {
        await using var cache = new TestCache();
        string disk = Entry(cache, "ext4", "mounted-by-qemu", TimeSpan.FromDays(30));
        // As QEMU names its root disk: -drive id=root,file=<path>,format=raw,...
        using var user = Process.Start(new ProcessStartInfo("/bin/sh") { ArgumentList = { "-c", "sleep 30", "sh", $"id=root,file={disk},format=raw" } })!;
        try
        {
            var result = await cache.Builder().Cache.CollectAsync(Options(), Ct);

            Assert.True(File.Exists(disk));
            Assert.Contains(result.Kept, k => k.Entry.Path == disk && k.Reason.Contains("running process", StringComparison.Ordinal));
        }
        finally
        {
            user.Kill();
            await user.WaitForExitAsync(Ct);
        }
    }

    [Fact]
    public async Task Freed_bytes_count_a_file_hard_linked_into_a_kept_entry_as_not_freed()
    {
        await using var cache = new TestCache();
        string baseDir = Entry(cache, "base", "base", TimeSpan.FromDays(30), bytes: 1 << 20);
        string rootfs = Entry(cache, "rootfs", "rootfs", TimeSpan.FromDays(30), bytes: 4 << 10);
        // The rootfs shares the base's big file, as cp -al makes it.
        File.CreateSymbolicLink(Path.Combine(rootfs, "rootfs", "link"), "/etc");
        await TestCache.RunAsync("ln", Path.Combine(baseDir, "rootfs", "data"), Path.Combine(rootfs, "rootfs", "shared"));

        var usage = ImageCache.Usage(rootfs);
        Assert.InRange(usage.Bytes, (1 << 20) + (4 << 10), (1 << 20) + (64 << 10));
        Assert.True(usage.ExclusiveBytes < 64 << 10, $"exclusive {usage.ExclusiveBytes}");

        var onlyRootfs = await cache.Builder().Cache.CollectAsync(Options(dryRun: true, "base/" + Key("base")), Ct);
        Assert.True(onlyRootfs.BytesFreed < 64 << 10, $"freed {onlyRootfs.BytesFreed}");
        var both = await cache.Builder().Cache.CollectAsync(Options(dryRun: true), Ct);
        Assert.True(both.BytesFreed >= (1 << 20) + (4 << 10), $"freed {both.BytesFreed}");
    }

    [Fact]
    public async Task A_build_and_a_cache_hit_mark_their_entries_used_and_EntryIds_names_them()
    {
        await using var cache = new TestCache();
        var spec = new ImageSpec("tiny", "debian", "bookworm", ["hello"], ["true"], cache.WriteAgent("a"));
        cache.SeedBase(spec, _ => { });
        var builder = cache.Builder();
        var image = await builder.BuildRootfsAsync(spec, null, Ct);
        var ids = builder.EntryIds(spec, 64);

        Assert.Equal(["base/" + ImageKeys.Base(spec), "rootfs/" + image.Key, "ext4/" + ImageKeys.Ext4(image.Key, 64)], ids);
        foreach (string id in ids.Take(2))
        {
            Assert.True(File.Exists(Path.Combine(cache.Root, "used", id.Replace('/', '-'))), id);
        }
        var entries = builder.Cache.List();
        Assert.Equal(["base/" + ImageKeys.Base(spec), "rootfs/" + image.Key], entries.Select(e => e.Id));
        Assert.All(entries, e => Assert.InRange(e.LastUsedUtc, DateTime.UtcNow.AddMinutes(-1), DateTime.UtcNow.AddMinutes(1)));

        Assert.Equal(("rootfs", image.Key), builder.Cache.EntryOf(Path.Combine(image.RootfsDir, "usr", "bin")));
        Assert.Equal(("ext4", Key("d")), builder.Cache.EntryOf(Path.Combine(cache.Root, "ext4", Key("d") + ".img")));
        Assert.Equal(("boot-initrd", Key("i")), builder.Cache.EntryOf(Path.Combine(cache.Root, "boot", "initrd", Key("i"), "initrd.gz")));
        Assert.Null(builder.Cache.EntryOf(Path.Combine(cache.Root, "ext4", Key("d") + ".img.tmp-00ff00ff")));
        Assert.Null(builder.Cache.EntryOf("/etc/passwd"));
    }
}
