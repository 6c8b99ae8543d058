namespace SandboxVM.Functional.Tests;

/// <summary>Whatever a program leaves running is gone once its run is over: nothing leaks onto the host.</summary>
[Collection(ProcessServer.Collection)]
[Trait("tier", "vm")]
public class CleanupTests(ProcessServer server)
{
    private static CancellationToken Ct => TestContext.Current.CancellationToken;

    [Fact]
    public async Task Run_ThatLeavesDetachedChildrenBehind_LeavesNoProcessOnTheHost()
    {
        // A unique sleep length marks the children so the test finds exactly them among the host's processes.
        string marker = $"{Random.Shared.Next(100_000, 999_999)}.25";
        string code = $"""
            import subprocess
            for _ in range(3):
                subprocess.Popen(["sleep", "{marker}"], start_new_session=True)
            print("spawned")
            """;
        var r = await server.RunAsync(new { template = "python-data-analysis", code }, Ct);
        Assert.Equal("spawned\n", r.Stdout);

        var deadline = DateTime.UtcNow + TimeSpan.FromSeconds(10);
        List<int> left;
        while ((left = ProcessesWithArgument(marker)).Count > 0 && DateTime.UtcNow < deadline)
        {
            await Task.Delay(50, Ct);
        }
        Assert.Empty(left);
    }

    private static List<int> ProcessesWithArgument(string argument)
    {
        var found = new List<int>();
        foreach (string dir in Directory.GetDirectories("/proc"))
        {
            if (!int.TryParse(Path.GetFileName(dir), out int pid))
            {
                continue;
            }
            try
            {
                string cmdline = File.ReadAllText(Path.Combine(dir, "cmdline"));
                if (cmdline.Split('\0').Contains(argument))
                {
                    found.Add(pid);
                }
            }
            catch (IOException)
            {
                // The process ended while we looked.
            }
        }
        return found;
    }
}
