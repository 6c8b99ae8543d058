using System.Diagnostics;
using System.Text.Json;

namespace SandboxVM.Functional.Tests;

/// <summary>README.md's examples, each the sh block after <c>&lt;!-- readme-test: NAME --&gt;</c>, run as written (bash and curl).</summary>
internal static class ReadmeScripts
{
    private static string Example(string name) => SandboxVM.Testing.ReadmeExamples.Block(name, "sh");

    /// <summary>Runs example <paramref name="name"/> in <paramref name="workDir"/> against <paramref name="server"/>; its stdout.</summary>
    public static async Task<string> RunAsync(string name, ServerFixture server, string workDir, CancellationToken cancellationToken)
    {
        Assert.SkipWhen(!File.Exists("/usr/bin/curl"), "curl is not installed");
        var start = new ProcessStartInfo("bash", ["-euo", "pipefail", "-c", Example(name)])
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            WorkingDirectory = workDir,
        };
        start.Environment["SANDBOXVM_URL"] = server.Http.BaseAddress!.ToString().TrimEnd('/');
        using var bash = Process.Start(start)!;
        var stdout = bash.StandardOutput.ReadToEndAsync(cancellationToken);
        var stderr = bash.StandardError.ReadToEndAsync(cancellationToken);
        using var deadline = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
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
        Assert.True(bash.ExitCode == 0, $"the example {name} failed ({bash.ExitCode}):\n{output}\n{await stderr}");
        return output;
    }

    /// <summary>Ids of the sandboxes the server lists now.</summary>
    public static async Task<HashSet<string>> SandboxIdsAsync(ServerFixture server, CancellationToken cancellationToken)
    {
        using var list = JsonDocument.Parse(await server.Http.GetStringAsync("/v1/sandboxes", cancellationToken));
        return [.. list.RootElement.GetProperty("sandboxes").EnumerateArray().Select(s => s.GetProperty("id").GetString()!)];
    }

    /// <summary>Ends every sandbox the server lists that is not in <paramref name="before"/> (an example that failed half-way).</summary>
    public static async Task DeleteNewSandboxesAsync(ServerFixture server, HashSet<string> before)
    {
        foreach (string id in (await SandboxIdsAsync(server, CancellationToken.None)).Except(before))
        {
            await server.DeleteSandboxAsync(id);
        }
    }
}

[Collection(ProcessServer.Collection)]
[Trait("tier", "vm")]
public sealed class ReadmeExampleTests(ProcessServer server)
{
    private static CancellationToken Ct => TestContext.Current.CancellationToken;

    [Fact]
    public async Task Commands_AndABackgroundServerReachedThroughItsPort_RunAsWritten()
    {
        string output = await ReadmeScripts.RunAsync("commands", server, Path.GetTempPath(), Ct);

        Assert.Contains("\"status\":\"exited\",\"running\":false,\"exit_code\":0", output);
        Assert.Contains("\"stdout\":\"1000\\n/home/sandbox\\n\"", output);
        Assert.Contains("<h1>served from the sandbox</h1>", output);
        Assert.Contains("\"status\":\"signal\"", output);
        Assert.Contains("\"signal\":15", output);
    }
}

/// <summary>The README's pause example on the default runtime here (gVisor): pause, a server restart, resume, fork into 3.</summary>
[Collection(GvisorServer.Collection)]
[Trait("tier", "vm")]
public sealed class GvisorReadmeExampleTests(GvisorServer server)
{
    private static CancellationToken Ct => TestContext.Current.CancellationToken;
    private readonly ServerFixture _server = server.OrSkip();

    [Fact]
    public async Task PauseRestartResumeAndForkIntoThree_RunAsWritten()
    {
        string workDir = Directory.CreateTempSubdirectory("sandboxvm-readme-").FullName;
        var before = await ReadmeScripts.SandboxIdsAsync(_server, Ct);
        try
        {
            string paused = await ReadmeScripts.RunAsync("pause", _server, workDir, Ct);
            await server.RestartAsync();
            string resumed = await ReadmeScripts.RunAsync("resume", _server, workDir, Ct);

            Assert.Contains("\"result\":\"3\"", paused);
            Assert.Contains("\"state\":\"paused\"", paused);
            Assert.Contains("\"state\":\"running\"", resumed);
            // The source's sum after the resume, each fork's own change, and the source unchanged after them.
            int[] results = [.. System.Text.RegularExpressions.Regex.Matches(resumed, "\"result\":\"(\\d+)\"").Select(m => int.Parse(m.Groups[1].Value))];
            Assert.Equal([415, 415, 830, 1245, 415], results);
            Assert.Empty((await ReadmeScripts.SandboxIdsAsync(_server, Ct)).Except(before));
        }
        finally
        {
            await ReadmeScripts.DeleteNewSandboxesAsync(_server, before);
            Directory.Delete(workDir, recursive: true);
        }
    }
}
