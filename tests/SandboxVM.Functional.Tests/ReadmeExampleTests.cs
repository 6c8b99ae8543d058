using System.Diagnostics;

namespace SandboxVM.Functional.Tests;

/// <summary>README.md's examples, run as written (bash and curl) against the real server.</summary>
[Collection(ProcessServer.Collection)]
[Trait("tier", "vm")]
public sealed class ReadmeExampleTests(ProcessServer server)
{
    private static CancellationToken Ct => TestContext.Current.CancellationToken;

    /// <summary>The sh block after <c>&lt;!-- readme-test: NAME --&gt;</c> in README.md.</summary>
    private static string Example(string name) => SandboxVM.Testing.ReadmeExamples.Block(name, "sh");

    [Fact]
    public async Task Commands_AndABackgroundServerReachedThroughItsPort_RunAsWritten()
    {
        Assert.SkipWhen(!File.Exists("/usr/bin/curl"), "curl is not installed");
        var start = new ProcessStartInfo("bash", ["-euo", "pipefail", "-c", Example("commands")])
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
        };
        start.Environment["SANDBOXVM_URL"] = server.Http.BaseAddress!.ToString().TrimEnd('/');
        using var bash = Process.Start(start)!;
        var stdout = bash.StandardOutput.ReadToEndAsync(Ct);
        var stderr = bash.StandardError.ReadToEndAsync(Ct);
        using var deadline = CancellationTokenSource.CreateLinkedTokenSource(Ct);
        deadline.CancelAfter(TimeSpan.FromMinutes(3));
        try
        {
            await bash.WaitForExitAsync(deadline.Token);
        }
        catch (OperationCanceledException)
        {
            bash.Kill(entireProcessTree: true);
            throw;
        }
        string output = await stdout;

        Assert.True(bash.ExitCode == 0, $"the example failed ({bash.ExitCode}):\n{output}\n{await stderr}");
        Assert.Contains("\"status\":\"exited\",\"running\":false,\"exit_code\":0", output);
        Assert.Contains("\"stdout\":\"1000\\n/home/sandbox\\n\"", output);
        Assert.Contains("<h1>served from the sandbox</h1>", output);
        Assert.Contains("\"status\":\"signal\"", output);
        Assert.Contains("\"signal\":15", output);
    }
}
