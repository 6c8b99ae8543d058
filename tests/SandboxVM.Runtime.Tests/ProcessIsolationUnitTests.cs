using System.Diagnostics;
using SandboxVM.Runtime.Process;

namespace SandboxVM.Runtime.Tests;

[Trait("tier", "integration")]
public sealed class HostUidPoolTests
{
    // A range of its own per test, far from the sandboxes' (900000001..) and the build steps' (1000000000..).
    private static int FreshRange() => 1_900_000_000 + Random.Shared.Next(100_000) * 10;

    [Fact]
    public void Allocate_GivesEachLiveSandboxItsOwnUid_AndTakesItBackOnRelease()
    {
        int first = FreshRange();
        int[] uids = [HostUidPool.Allocate(first, 3), HostUidPool.Allocate(first, 3), HostUidPool.Allocate(first, 3)];
        try
        {
            Assert.Equal(3, uids.Distinct().Count());
            Assert.All(uids, u => Assert.InRange(u, first, first + 2));
            var full = Assert.Throws<InvalidOperationException>(() => HostUidPool.Allocate(first, 3));
            Assert.Contains("in use", full.Message, StringComparison.Ordinal);

            // The only free one again.
            int released = uids[1];
            HostUidPool.Release(released);
            uids[1] = HostUidPool.Allocate(first, 3);
            Assert.Equal(released, uids[1]);
        }
        finally
        {
            foreach (int u in uids)
            {
                HostUidPool.Release(u);
            }
        }
    }

    [Fact]
    public async Task Allocate_NeverHandsOutAUidAHostProcessRunsAs()
    {
        Assert.SkipUnless(Environment.IsPrivilegedProcess && File.Exists("/usr/bin/setpriv"), "needs root and setpriv to run a process as another uid");
        int first = FreshRange();
        // A leftover of another server, say: a process running as the first uid of the range.
        using var squatter = System.Diagnostics.Process.Start(new ProcessStartInfo("/usr/bin/setpriv",
            [$"--reuid={first}", $"--regid={first}", "--clear-groups", "--", "/bin/sleep", "60"]))!;
        try
        {
            var deadline = DateTime.UtcNow + TimeSpan.FromSeconds(10);
            while (HostNative.Stat($"/proc/{squatter.Id}", followLinks: false)?.Uid != first)
            {
                Assert.True(DateTime.UtcNow < deadline, "the squatting process did not take its uid");
                await Task.Delay(10, TestContext.Current.CancellationToken);
            }
            for (int i = 0; i < 20; i++)
            {
                int uid = HostUidPool.Allocate(first, 2);
                HostUidPool.Release(uid);
                Assert.Equal(first + 1, uid);
            }
            Assert.Throws<InvalidOperationException>(() => HostUidPool.Allocate(first, 1));
        }
        finally
        {
            squatter.Kill();
            await squatter.WaitForExitAsync(CancellationToken.None);
        }
    }
}

[Trait("tier", "integration")]
public sealed class SeccompFilterTests
{
    [Fact]
    public void Compile_KnowsEverySystemCallItDenies_AndGivesABpfProgram()
    {
        using var filter = SeccompFilter.Compile(out var unknown);

        Assert.Empty(unknown);
        // Classic BPF: 8-byte instructions; one compare per denied call at least.
        long bytes = File.ReadAllBytes($"/proc/self/fd/{filter.DangerousGetHandle()}").Length;
        Assert.Equal(0, bytes % 8);
        Assert.True(bytes / 8 > SeccompFilter.Denied.Length, $"{bytes} bytes");
    }
}
