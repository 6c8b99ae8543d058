using System.Diagnostics;

namespace SandboxVM.Runtime.Tests;

[Trait("tier", "integration")]
public sealed class SpawnThreadTests
{
    [Fact]
    public void AProcessThatDiesWithItsParent_OutlivesThePoolThreadThatStartedIt()
    {
        Assert.SkipUnless(File.Exists("/usr/bin/setpriv"), "needs setpriv (util-linux) for --pdeathsig");
        // As bubblewrap's --die-with-parent: SIGKILL when the parent goes. Each process is started from a
        // thread that ends once the process has set that up (it is running sleep).
        static System.Diagnostics.Process Spawn(bool onSpawnThread)
        {
            var process = new System.Diagnostics.Process
            {
                StartInfo = new ProcessStartInfo("/usr/bin/setpriv", ["--pdeathsig", "KILL", "--", "/bin/sleep", "60"]),
            };
            var thread = new Thread(() =>
            {
                if (onSpawnThread)
                {
                    SpawnThread.Start(process);
                }
                else
                {
                    process.Start();
                }
                var deadline = DateTime.UtcNow + TimeSpan.FromSeconds(10);
                while (File.ReadAllText($"/proc/{process.Id}/comm").Trim() != "sleep" && DateTime.UtcNow < deadline)
                {
                    Thread.Yield();
                }
            });
            thread.Start();
            thread.Join();
            return process;
        }

        using var direct = Spawn(onSpawnThread: false);
        using var spawned = Spawn(onSpawnThread: true);
        try
        {
            // The control: started straight from a thread that then ended, it was killed with it.
            Assert.True(direct.WaitForExit(10_000), "the control process outlived its thread: this host cannot show the hazard");
            Assert.False(spawned.WaitForExit(500), "a process started through SpawnThread died with the thread that asked for it");
        }
        finally
        {
            foreach (var p in new[] { direct, spawned })
            {
                if (!p.HasExited)
                {
                    p.Kill();
                    p.WaitForExit();
                }
            }
        }
    }
}
