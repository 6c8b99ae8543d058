using System.Runtime.Versioning;
using System.Security.Cryptography;
using SandboxVM.Protocol;

namespace SandboxVM.Agent.Tests;

/// <summary>
/// What sessions keep and report in the outputs directory: saved matplotlib figures
/// (<see cref="ForkServerRequest.SaveFigures"/>, needs the host's python3-matplotlib, see
/// scripts/install-deps.sh) and <see cref="ExecRequest.KeepOutputs"/>.
/// </summary>
[SupportedOSPlatform("linux")]
[Trait("tier", "integration")]
public class SessionOutputsTests : AgentTestBase
{
    private static readonly byte[] _pngSignature = [0x89, (byte)'P', (byte)'N', (byte)'G', 0x0D, 0x0A, 0x1A, 0x0A];

    private ExecRequest Python(string code, bool persistent, bool keepOutputs = true) => new()
    {
        Cwd = Agent.Home,
        OutputsDir = Agent.Outputs,
        Files = { ["main.py"] = code },
        Run = ["python3", "-u", "main.py"],
        // Matplotlib's import in a starting kernel or fork server took over 10 s on a loaded CI host.
        RunTimeoutMs = 60_000,
        KeepOutputs = keepOutputs,
        ForkServer = new ForkServerRequest { Persistent = persistent, SaveFigures = true },
    };

    private async Task<(OperationFrames Frames, ExecResult Result)> ExecAsync(ExecRequest exec)
    {
        var frames = await Agent.ExecAsync(exec, Ct);
        return (frames, frames.Response(ProtocolJson.Default.ExecResult));
    }

    private List<string> ArtifactNames(ExecResult result) =>
        [.. result.Artifacts.Select(a => Path.GetRelativePath(Agent.Outputs, a.Path))];

    /// <summary>The artifact is a PNG on disk, and its size and hash are the file's.</summary>
    private static void AssertPng(ArtifactInfo artifact)
    {
        byte[] bytes = File.ReadAllBytes(artifact.Path);
        Assert.Equal(_pngSignature, bytes[..8]);
        Assert.Equal(bytes.Length, artifact.Size);
        Assert.Equal(Convert.ToHexStringLower(SHA256.HashData(bytes)), artifact.Sha256);
    }

    [Fact]
    public async Task Figures_InTheKernel_AreSavedAfterShow_InOrder_AndALaterRunCountsOn()
    {
        var exec = Python("""
            import matplotlib.pyplot as plt
            plt.figure()
            plt.plot([1, 2, 3])
            plt.show()
            plt.figure()
            plt.bar(["a", "b"], [3, 1])
            print(plt.get_fignums())
            """, persistent: true);
        // With a DISPLAY, matplotlib's own show() under Agg warns that it cannot show anything.
        exec.Env["DISPLAY"] = ":99";
        exec.Env["MPLBACKEND"] = "Agg";
        var (first, firstResult) = await ExecAsync(exec);
        var (second, secondResult) = await ExecAsync(Python("""
            print(plt.get_fignums())
            plt.plot([3, 2, 1])
            """, persistent: true));

        Assert.Equal(0, firstResult.Run!.ExitCode);
        Assert.Equal("[1, 2]\n", first.StdoutText); // show() closed nothing
        Assert.Equal("", first.StderrText); // nor warned
        Assert.Equal(["figure-1.png", "figure-2.png"], ArtifactNames(firstResult));
        Assert.All(firstResult.Artifacts, AssertPng);
        Assert.Equal("[]\n", second.StdoutText); // saved figures are closed
        Assert.Equal(0, secondResult.Run!.ExitCode);
        Assert.False(secondResult.Run.StateReset);
        Assert.Equal(["figure-3.png"], ArtifactNames(secondResult));
        AssertPng(secondResult.Artifacts[0]);
        Assert.True(File.Exists(Path.Combine(Agent.Outputs, "figure-1.png")));
    }

    [Fact]
    public async Task Figures_InAForkedRun_AreSavedAfterAnException_NumberedAfterTheHighestPresent()
    {
        Directory.CreateDirectory(Agent.Outputs);
        await File.WriteAllTextAsync(Path.Combine(Agent.Outputs, "figure-4.png"), "an earlier figure", Ct);
        await File.WriteAllTextAsync(Path.Combine(Agent.Outputs, "figure-x.png"), "not a number", Ct);
        StepUser.Own(Agent.Outputs); // as an earlier run would have left them

        var (frames, result) = await ExecAsync(Python("""
            import matplotlib.pyplot as plt
            plt.plot([1, 2])
            raise RuntimeError("after plotting")
            """, persistent: false));

        Assert.True(result.Run!.Forked, Agent.AgentStderr);
        Assert.Equal(1, result.Run.ExitCode);
        Assert.EndsWith("RuntimeError: after plotting\n", frames.StderrText);
        Assert.Equal(["figure-5.png"], ArtifactNames(result));
        AssertPng(result.Artifacts[0]);
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public async Task Figures_TheScriptSavedItself_AreNotSavedAgain(bool persistent)
    {
        var (_, result) = await ExecAsync(Python($$"""
            import matplotlib.pyplot as plt
            plt.plot([1, 2])
            plt.savefig("{{Agent.Outputs}}/chart.png")
            plt.figure()
            plt.plot([2, 1])
            """, persistent));

        Assert.Equal(0, result.Run!.ExitCode);
        Assert.Equal(["chart.png", "figure-1.png"], ArtifactNames(result));
    }

    [Fact]
    public async Task Figures_WithoutPyplotOrFigures_NothingIsSaved()
    {
        var (_, noPyplot) = await ExecAsync(Python("print('no plots')\n", persistent: true));
        var (_, closed) = await ExecAsync(Python("import matplotlib.pyplot as plt\nplt.plot([1])\nplt.close('all')\n", persistent: false));

        Assert.Equal(0, noPyplot.Run!.ExitCode);
        Assert.Empty(noPyplot.Artifacts);
        Assert.Equal(0, closed.Run!.ExitCode);
        Assert.Empty(closed.Artifacts);
        Assert.Empty(Directory.GetFiles(Agent.Outputs));
    }

    [Fact]
    public async Task Figures_ThatCannotBeSaved_AreReportedOnStderr_AndTheExitStatusStays()
    {
        // Broken mathtext fails when the figure is drawn, that is when it is saved.
        var (frames, result) = await ExecAsync(Python("""
            import matplotlib.pyplot as plt
            plt.figure()
            plt.title(r"$\frac{$")
            plt.figure()
            plt.plot([1, 2])
            """, persistent: true));

        Assert.Equal(TerminationReason.Exited, result.Run!.Reason);
        Assert.Equal(0, result.Run.ExitCode);
        Assert.StartsWith("sandboxvm: cannot save figure 1: ValueError", frames.StderrText);
        Assert.Equal(["figure-1.png"], ArtifactNames(result)); // the second figure
        AssertPng(result.Artifacts[0]);
    }

    [Fact]
    public async Task Figures_NotAskedFor_AreNotSaved()
    {
        var exec = Python("import matplotlib.pyplot as plt\nplt.plot([1, 2])\n", persistent: false);
        exec.ForkServer!.SaveFigures = false;

        var (_, result) = await ExecAsync(exec);

        Assert.Equal(0, result.Run!.ExitCode);
        Assert.True(result.Run.Forked, Agent.AgentStderr);
        Assert.Empty(result.Artifacts);
    }

    [Fact]
    public async Task KeepOutputs_LeavesEarlierFiles_AndListsOnlyNewAndChangedOnes()
    {
        Directory.CreateDirectory(Path.Combine(Agent.Outputs, "sub"));
        var earlier = DateTime.UtcNow.AddHours(-1);
        foreach (string name in (string[])["same.txt", "appended.txt", "rewritten.txt", "replaced.txt", "sub/deep.txt"])
        {
            string path = Path.Combine(Agent.Outputs, name);
            await File.WriteAllTextAsync(path, "x", Ct);
            File.SetLastWriteTimeUtc(path, earlier); // written by an earlier run
        }
        StepUser.Own(Agent.Outputs);
        var exec = Shell("""
            cd "$OUT"
            echo more >> appended.txt
            printf y > rewritten.txt
            printf x > fresh && mv fresh replaced.txt
            echo new > sub/new.txt
            """);
        exec.Env["OUT"] = Agent.Outputs;
        exec.KeepOutputs = true;

        var (_, result) = await ExecAsync(exec);

        Assert.Equal(0, result.Run!.ExitCode);
        Assert.Equal(["appended.txt", "replaced.txt", "rewritten.txt", "sub/new.txt"], ArtifactNames(result));
        Assert.Equal("x", await File.ReadAllTextAsync(Path.Combine(Agent.Outputs, "same.txt"), Ct));
        Assert.Equal("x", await File.ReadAllTextAsync(Path.Combine(Agent.Outputs, "sub/deep.txt"), Ct));
        var rewritten = result.Artifacts.Single(a => a.Path.EndsWith("rewritten.txt", StringComparison.Ordinal));
        Assert.Equal(1, rewritten.Size);
        Assert.Equal(Convert.ToHexStringLower(SHA256.HashData("y"u8)), rewritten.Sha256);
    }

    [Fact]
    public async Task KeepOutputs_CreatesAMissingDirectory()
    {
        var exec = Shell("echo hi > \"$OUT/made.txt\"");
        exec.Env["OUT"] = Agent.Outputs;
        exec.KeepOutputs = true;

        var (_, result) = await ExecAsync(exec);

        Assert.Equal(0, result.Run!.ExitCode);
        Assert.Equal(["made.txt"], ArtifactNames(result));
    }
}
