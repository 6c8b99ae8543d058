using System.Diagnostics;
using SandboxVM.Runtime.Cgroups;

namespace SandboxVM.Runtime.Tests;

/// <summary>
/// The launch chain of a sandbox process, without a cgroup. The server's death is what closes the last
/// write end of the launcher's stdin; here the test closes it itself, as the kernel does for a dead server.
/// </summary>
[Trait("tier", "integration")]
public sealed class CgroupLauncherTests
{
    private static CancellationToken Ct => TestContext.Current.CancellationToken;

    [Fact]
    public async Task With_endWithServer_the_command_dies_when_the_servers_end_of_stdin_closes()
    {
        Assert.SkipUnless(OperatingSystem.IsLinux(), "needs Linux");
        var psi = CgroupLauncher.StartInfo(null, endWithServer: true);
        psi.ArgumentList.Add("/bin/sleep");
        psi.ArgumentList.Add("600");
        using var p = System.Diagnostics.Process.Start(psi)!;
        try
        {
            // The exec happens once the watcher is forked: wait for the command itself.
            await WaitUntilAsync(() => Comm(p.Id) == "sleep", "the launcher did not exec the command");
            Assert.Equal("/dev/null", ReadLink($"/proc/{p.Id}/fd/0"));
            int watcher = Assert.Single(ChildrenOf(p.Id));
            Assert.True(IsWatcher(watcher));

            p.StandardInput.Close();

            await p.WaitForExitAsync(Ct).WaitAsync(TimeSpan.FromSeconds(5), Ct);
            Assert.Equal(128 + 9, p.ExitCode);
            await WaitUntilAsync(() => !IsRunning(watcher), "the watcher outlived its command");
        }
        finally
        {
            if (!p.HasExited)
            {
                p.Kill();
            }
        }
    }

    [Fact]
    public async Task A_watcher_whose_command_exited_first_ends_at_end_of_file()
    {
        Assert.SkipUnless(OperatingSystem.IsLinux(), "needs Linux");
        string go = Path.Combine(Path.GetTempPath(), "launcher-" + Guid.NewGuid().ToString("N"));
        var psi = CgroupLauncher.StartInfo(null, endWithServer: true);
        foreach (string a in (string[])["/bin/sh", "-c", "while [ ! -e \"$1\" ]; do sleep 0.05; done; exit 7", "sh", go])
        {
            psi.ArgumentList.Add(a);
        }
        using var p = System.Diagnostics.Process.Start(psi)!;
        try
        {
            await WaitUntilAsync(() => ChildrenOf(p.Id).Any(c => IsWatcher(c)), "no watcher beside the command");
            int watcher = ChildrenOf(p.Id).First(IsWatcher);
            File.WriteAllText(go, "");

            await p.WaitForExitAsync(Ct).WaitAsync(TimeSpan.FromSeconds(10), Ct);
            Assert.Equal(7, p.ExitCode);
            // Orphaned now: its command's pid is no longer its parent, so at end of file it signals nobody and ends.
            await WaitUntilAsync(() => Parent(watcher) != p.Id, "the watcher was not reparented");
            Assert.True(IsRunning(watcher));
            p.StandardInput.Close();
            await WaitUntilAsync(() => !IsRunning(watcher), "the watcher outlived end of file");
        }
        finally
        {
            File.Delete(go);
            if (!p.HasExited)
            {
                p.Kill();
            }
        }
    }

    [Fact]
    public async Task Without_endWithServer_stdin_is_left_to_the_command()
    {
        Assert.SkipUnless(OperatingSystem.IsLinux(), "needs Linux");
        var psi = CgroupLauncher.StartInfo(null);
        psi.ArgumentList.Add("/bin/cat");
        using var p = System.Diagnostics.Process.Start(psi)!;
        await p.StandardInput.WriteLineAsync("through");
        p.StandardInput.Close();
        Assert.Equal("through", (await p.StandardOutput.ReadToEndAsync(Ct)).Trim());
        await p.WaitForExitAsync(Ct);
        Assert.Equal(0, p.ExitCode);
    }

    private static bool IsWatcher(int pid) => Read($"/proc/{pid}/cmdline")?.Contains("sandboxvm-watch", StringComparison.Ordinal) == true;

    private static async Task WaitUntilAsync(Func<bool> condition, string what)
    {
        var deadline = DateTime.UtcNow + TimeSpan.FromSeconds(10);
        while (!condition())
        {
            Assert.True(DateTime.UtcNow < deadline, what);
            await Task.Delay(20, Ct);
        }
    }

    private static string? Read(string path)
    {
        try
        {
            return File.ReadAllText(path);
        }
        catch (IOException)
        {
            return null;
        }
    }

    private static string? ReadLink(string path) => File.ResolveLinkTarget(path, returnFinalTarget: false)?.FullName;

    private static string? Comm(int pid) => Read($"/proc/{pid}/comm")?.Trim();

    private static int Parent(int pid) => Read($"/proc/{pid}/stat") is { } s ? int.Parse(s[(s.LastIndexOf(')') + 2)..].Split(' ')[1]) : 0;

    private static bool IsRunning(int pid) => Read($"/proc/{pid}/stat") is { } s && s[s.LastIndexOf(')') + 2] != 'Z';

    private static List<int> ChildrenOf(int pid) =>
        Directory.GetDirectories("/proc").Select(d => int.TryParse(Path.GetFileName(d), out int c) ? c : 0)
            .Where(c => c > 0 && Parent(c) == pid).ToList();
}
