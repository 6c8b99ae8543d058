using System.Diagnostics;
using System.Globalization;
using Microsoft.Extensions.Time.Testing;
using SandboxVM.Runtime.Qemu;

namespace SandboxVM.Runtime.Tests;

/// <summary>Which snapshots a server may remove after saving a new one: fake stores, no VM.</summary>
[Trait("tier", "integration")]
public sealed class SnapshotStoreTests : IDisposable
{
    private static readonly DateTime _now = new(2026, 11, 28, 12, 0, 0, DateTimeKind.Utc);
    private static readonly TimeSpan _grace = TimeSpan.FromMinutes(15);
    private readonly string _root = Directory.CreateTempSubdirectory("svm-snapstore-").FullName;
    private string Store => Path.Combine(_root, "snapshots");
    private string RunRoot => Path.Combine(_root, "run");

    public void Dispose() => Directory.Delete(_root, recursive: true);

    /// <summary>A complete-looking snapshot of <paramref name="template"/> last used <paramref name="usedAgo"/> before now.</summary>
    private string Snapshot(string name, string template, TimeSpan usedAgo, bool withLastUsed = true)
    {
        string dir = Path.Combine(Store, name);
        Directory.CreateDirectory(dir);
        DateTime created = _now - usedAgo - TimeSpan.FromHours(1);
        foreach (string f in new[] { QemuRuntime.MemFileName, QemuRuntime.StateFileName })
        {
            File.WriteAllText(Path.Combine(dir, f), "x");
            File.SetLastWriteTimeUtc(Path.Combine(dir, f), created);
        }
        string meta = Path.Combine(dir, QemuRuntime.MetaFileName);
        File.WriteAllText(meta, $$"""{"key":"{{name}}","template":"{{template}}"}""");
        File.SetLastWriteTimeUtc(meta, withLastUsed ? created : _now - usedAgo);
        if (withLastUsed)
        {
            UsageStamp.Touch(Path.Combine(dir, SnapshotStore.LastUsedFileName), _now - usedAgo);
        }
        Directory.SetLastWriteTimeUtc(dir, created);
        return dir;
    }

    private List<string> Stale(string template, string keep, params string[] referenced) =>
        [.. SnapshotStore.SelectStale(Store, template, keep, _now, _grace, referenced.ToHashSet()).Select(d => Path.GetFileName(d)).Order(StringComparer.Ordinal)];

    [Fact]
    public void Only_other_snapshots_of_the_template_unused_past_the_grace_period_are_stale()
    {
        Snapshot("new", "py", TimeSpan.Zero);
        Snapshot("old", "py", TimeSpan.FromHours(2));
        Snapshot("recent", "py", TimeSpan.FromMinutes(3));
        Snapshot("other-template", "cpp", TimeSpan.FromDays(3));

        Assert.Equal(["old"], Stale("py", "new"));
    }

    [Fact]
    public void Without_a_last_used_file_the_save_time_counts()
    {
        Snapshot("new", "py", TimeSpan.Zero);
        Snapshot("saved-long-ago", "py", TimeSpan.FromHours(1), withLastUsed: false);
        Snapshot("saved-just-now", "py", TimeSpan.FromMinutes(1), withLastUsed: false);

        Assert.Equal(["saved-long-ago"], Stale("py", "new"));
    }

    [Fact]
    public void Referenced_builds_and_unreadable_snapshots_are_left_alone()
    {
        Snapshot("new", "py", TimeSpan.Zero);
        Snapshot("mapped", "py", TimeSpan.FromHours(2));
        Snapshot(".build-abc-123-ff", "py", TimeSpan.FromHours(2));
        string broken = Snapshot("broken", "py", TimeSpan.FromHours(2));
        File.WriteAllText(Path.Combine(broken, QemuRuntime.MetaFileName), "{not json");
        File.SetLastWriteTimeUtc(Path.Combine(broken, QemuRuntime.MetaFileName), _now - TimeSpan.FromHours(2));

        Assert.Empty(Stale("py", "new", "mapped"));
    }

    [Fact]
    public void Run_directories_of_live_servers_reference_their_snapshot_and_dead_ones_do_not()
    {
        string a = Snapshot("a", "py", TimeSpan.FromHours(2));
        string b = Snapshot("b", "py", TimeSpan.FromHours(2));
        RunDir("qemu-live", owner: Environment.ProcessId, Path.Combine(a, QemuRuntime.MemFileName));
        // pid_max is at most 2^22: this pid never exists.
        RunDir("qemu-dead", owner: 4_194_305, Path.Combine(b, QemuRuntime.MemFileName));
        RunDir("qemu-anonymous", owner: Environment.ProcessId, memoryFile: null);

        var referenced = SnapshotStore.Referenced(Store, RunRoot, QemuRuntime.OwnerAlive, procRoot: Path.Combine(_root, "no-proc"));

        Assert.Equal(["a"], referenced);
    }

    [Fact]
    public async Task A_running_process_that_maps_a_snapshot_references_it_whatever_its_run_directory()
    {
        Assert.SkipUnless(OperatingSystem.IsLinux() && Directory.Exists("/proc"), "needs /proc");
        string a = Snapshot("a", "py", TimeSpan.FromHours(2));
        Snapshot("b", "py", TimeSpan.FromHours(2));
        // As QEMU's command line names it: -object memory-backend-file,...,mem-path=<store>/a/mem,share=off
        var psi = new ProcessStartInfo("/bin/sh") { ArgumentList = { "-c", "sleep 30", "sh", $"memory-backend-file,id=mem,mem-path={a}/mem,share=off" } };
        using var sleeper = System.Diagnostics.Process.Start(psi)!;
        try
        {
            var referenced = SnapshotStore.Referenced(Store, runRoot: null, _ => false);
            Assert.Contains("a", referenced);
            Assert.DoesNotContain("b", referenced);
            Assert.Equal(["b"], Stale("py", "new", [.. referenced]));
        }
        finally
        {
            sleeper.Kill();
            await sleeper.WaitForExitAsync(TestContext.Current.CancellationToken);
        }
    }

    [Fact]
    public void MarkUsed_writes_at_most_once_a_minute_per_snapshot()
    {
        string dir = Snapshot("marked", "py", TimeSpan.FromHours(2), withLastUsed: false);
        string stamp = Path.Combine(dir, SnapshotStore.LastUsedFileName);
        var time = new FakeTimeProvider(new DateTimeOffset(_now));

        SnapshotStore.MarkUsed(dir, time);
        Assert.Equal(_now, File.GetLastWriteTimeUtc(stamp));
        Assert.Empty(Stale("py", "new"));

        time.Advance(TimeSpan.FromSeconds(30));
        SnapshotStore.MarkUsed(dir, time);
        Assert.Equal(_now, File.GetLastWriteTimeUtc(stamp));

        time.Advance(TimeSpan.FromSeconds(31));
        SnapshotStore.MarkUsed(dir, time);
        Assert.Equal(_now.AddSeconds(61), File.GetLastWriteTimeUtc(stamp));
    }

    private void RunDir(string id, int owner, string? memoryFile)
    {
        string dir = Path.Combine(RunRoot, id);
        Directory.CreateDirectory(dir);
        File.WriteAllText(Path.Combine(dir, "owner"), owner.ToString(CultureInfo.InvariantCulture));
        if (memoryFile is not null)
        {
            File.WriteAllText(Path.Combine(dir, SnapshotStore.RunDirMemoryFileName), memoryFile);
        }
    }
}
