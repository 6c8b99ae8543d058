using System.Diagnostics;
using System.Globalization;
using SandboxVM.Runtime.Qemu;

namespace SandboxVM.Runtime.Tests;

/// <summary>
/// The template snapshot's RAM file is what every later clone starts from: a QEMU escape in one clone
/// must not be able to change it. Each clone's QEMU runs as its own uid; here the test looks at that
/// QEMU from the outside: who owns the file and who may write it, how QEMU holds it open, and what
/// its uid gets when it tries to open it for writing.
/// </summary>
[Trait("Category", "E2E")]
[Collection(QemuCollection.Name)]
[Trait("tier", "vm")]
public sealed class QemuSnapshotMemoryTests(QemuFixture fixture)
{
    private const int OAccMode = 3;
    private const int ORdOnly = 0;

    private static CancellationToken Ct => TestContext.Current.CancellationToken;

    [Fact]
    public async Task A_clones_qemu_cannot_write_the_snapshot_ram_and_clones_still_restore_and_run()
    {
        fixture.SkipUnlessAvailable();
        Assert.SkipUnless(Environment.IsPrivilegedProcess, "each QEMU runs as its own uid only when the server is root");
        SnapshotInfo snapshot = await fixture.SnapshotAsync(Ct);
        string mem = Path.Combine(snapshot.Directory, QemuRuntime.MemFileName);
        string before = QemuRuntimeE2ETests.HashFile(mem);

        var vm = (QemuVm)await fixture.Runtime.StartAsync(fixture.Spec, Ct);
        try
        {
            Assert.Equal(VmSource.Restore, vm.Source);

            // What an escaped QEMU would try: open it for writing with its own credentials.
            var (uid, gid, groups) = Credentials(vm.ProcessId);
            Assert.NotEqual(0, uid);
            var (exit, stderr) = await RunAsAsync(uid, gid, groups, ["/bin/sh", "-c", ": >> \"$1\"", "sh", mem]);
            Assert.True(exit != 0, $"uid {uid} (qemu of {vm.Id}) could open {mem} for writing");
            Assert.Contains("Permission denied", stderr, StringComparison.Ordinal);

            // The file belongs to the server and nobody else may write it.
            var file = HostNative.Stat(mem) ?? throw new InvalidOperationException($"{mem} is gone");
            Assert.Equal(0, file.Uid);
            Assert.True((file.Mode & 0b010_010) == 0, $"{mem} is mode {Convert.ToString(file.Mode & 0xfff, 8)}: writable by group or others");

            // QEMU maps it through read-only descriptors only.
            var flags = DescriptorFlags(vm.ProcessId, mem);
            Assert.NotEmpty(flags);
            Assert.All(flags, f => Assert.True((f & OAccMode) == ORdOnly, $"qemu holds {mem} open with flags 0{Convert.ToString(f, 8)}"));

            // ... and maps it private and writable: guest RAM, copy-on-write (rom=off; readonly=on alone would map it read-only).
            var maps = File.ReadAllLines($"/proc/{vm.ProcessId}/maps").Where(l => l.EndsWith(" " + mem, StringComparison.Ordinal)).ToList();
            Assert.NotEmpty(maps);
            Assert.All(maps, l => Assert.Equal("rw-p", l.Split(' ')[1]));

            // The clone itself runs: it sees the warm-up's state and writes its own RAM (copy-on-write).
            Assert.Equal("warmed", await QemuFixture.ShAsync(vm.Agent, "cat /tmp/warm", Ct));
            await QemuFixture.ShAsync(vm.Agent, "head -c 33554432 /dev/urandom > /tmp/fill && sync", Ct);
            Assert.Equal("warmed", await QemuFixture.ShAsync(vm.Agent, "cat /tmp/warm", Ct));
        }
        finally
        {
            await vm.DisposeAsync();
        }
        Assert.Equal(before, QemuRuntimeE2ETests.HashFile(mem));
    }

    /// <summary>The open flags (fdinfo) of every descriptor of <paramref name="pid"/> that refers to <paramref name="path"/>.</summary>
    private static List<int> DescriptorFlags(int pid, string path)
    {
        var flags = new List<int>();
        foreach (string fd in Directory.GetFiles($"/proc/{pid}/fd"))
        {
            string? target;
            try
            {
                target = File.ResolveLinkTarget(fd, returnFinalTarget: false)?.FullName;
            }
            catch (IOException)
            {
                continue;
            }
            if (target != path)
            {
                continue;
            }
            string info = File.ReadAllText($"/proc/{pid}/fdinfo/{Path.GetFileName(fd)}");
            string octal = info.Split('\n').First(l => l.StartsWith("flags:", StringComparison.Ordinal))["flags:".Length..].Trim();
            flags.Add(Convert.ToInt32(octal, 8));
        }
        return flags;
    }

    private static (int Uid, int Gid, string Groups) Credentials(int pid)
    {
        var status = File.ReadAllLines($"/proc/{pid}/status");
        int Field(string name) => int.Parse(status.First(l => l.StartsWith(name, StringComparison.Ordinal)).Split('\t', StringSplitOptions.RemoveEmptyEntries)[1], CultureInfo.InvariantCulture);
        string groups = status.First(l => l.StartsWith("Groups:", StringComparison.Ordinal))["Groups:".Length..].Trim();
        return (Field("Uid:"), Field("Gid:"), groups);
    }

    private static async Task<(int Exit, string Stderr)> RunAsAsync(int uid, int gid, string groups, string[] command)
    {
        var psi = new ProcessStartInfo("/usr/bin/setpriv") { RedirectStandardError = true, RedirectStandardOutput = true };
        foreach (string a in (string[])[$"--reuid={uid}", $"--regid={gid}", groups.Length == 0 ? "--clear-groups" : $"--groups={groups.Replace(' ', ',')}", "--", .. command])
        {
            psi.ArgumentList.Add(a);
        }
        using var p = System.Diagnostics.Process.Start(psi)!;
        string stderr = await p.StandardError.ReadToEndAsync(Ct);
        await p.WaitForExitAsync(Ct);
        return (p.ExitCode, stderr);
    }
}
