using System.Runtime.Versioning;
using System.Text;
using SandboxVM.Protocol;

namespace SandboxVM.Agent.Tests;

/// <summary>
/// Kernel contexts (<see cref="ForkServerRequest.Context"/>, kernel_stop) and the rich representations of
/// persistent runs (<see cref="StepResult.ResultData"/>, <see cref="StepResult.Displays"/>). Uses the host's python3.
/// </summary>
[SupportedOSPlatform("linux")]
[Trait("tier", "integration")]
public class KernelContextTests : AgentTestBase
{
    private ExecRequest Persistent(string code, string? context = null, bool rich = true) => new()
    {
        Cwd = Agent.Home,
        OutputsDir = Agent.Outputs,
        Files = { ["main.py"] = code },
        Run = ["python3", "-u", "main.py"],
        RunTimeoutMs = 10_000,
        ForkServer = new ForkServerRequest { Preload = ["json"], Persistent = true, Context = context, RichResults = rich },
    };

    private async Task<StepResult> RunAsync(string code, string? context = null, bool rich = true) =>
        (await RunFramesAsync(code, context, rich)).Response(ProtocolJson.Default.ExecResult).Run!;

    private async Task<OperationFrames> RunFramesAsync(string code, string? context = null, bool rich = true)
    {
        var frames = await Agent.ExecAsync(Persistent(code, context, rich), Ct);
        Assert.True(frames.Succeeded, frames.Succeeded ? "" : frames.Error().Message);
        return frames;
    }

    private async Task StopAsync(string? context)
    {
        var frames = await Agent.RequestAsync(new AgentRequest { Op = Ops.KernelStop, Kernel = new KernelRequest { Context = context } }, Ct);
        Assert.True(frames.Succeeded, frames.Succeeded ? "" : frames.Error().Message);
    }

    [Fact]
    public async Task Contexts_KeepSeparateGlobals_AndKernelStopForgetsOnlyItsOwn()
    {
        await RunAsync("x = 'default'\nimport os\npid = os.getpid()\n");
        await RunAsync("x = 'a'\n", "a");
        await RunAsync("x = 'b'\n", "b");

        Assert.Equal("'default'", (await RunAsync("x\n")).ResultRepr);
        Assert.Equal("'a'", (await RunAsync("x\n", "a")).ResultRepr);
        Assert.Equal("'b'", (await RunAsync("x\n", "b")).ResultRepr);
        // Separate interpreters, not namespaces of one: an import or a crash in one cannot touch the others.
        Assert.NotEqual((await RunAsync("import os\nos.getpid()\n")).ResultRepr, (await RunAsync("import os\nos.getpid()\n", "a")).ResultRepr);

        await StopAsync("a");
        var restarted = await RunAsync("'x' in globals()\n", "a");
        Assert.Equal("False", restarted.ResultRepr);
        Assert.True(restarted.StateReset);
        var kept = await RunAsync("x\n", "b");
        Assert.Equal("'b'", kept.ResultRepr);
        Assert.False(kept.StateReset);
        Assert.Equal("'default'", (await RunAsync("x\n")).ResultRepr);
        await StopAsync("never-used"); // nothing to stop is fine
    }

    [Fact]
    public async Task Contexts_PastTheCap_AreRefusedWithTooManyKernels_UntilOneIsStopped()
    {
        for (int i = 0; i < KernelRequest.MaxContexts; i++)
        {
            await RunAsync("1\n", i == 0 ? null : $"c{i}");
        }
        var refused = await Agent.ExecAsync(Persistent("1\n", "one-more"), Ct);
        Assert.False(refused.Succeeded);
        Assert.Equal(ErrorCodes.TooManyKernels, refused.Error().Code);
        Assert.Contains("at most 8", refused.Error().Message);

        await StopAsync("c1");
        Assert.Equal("1", (await RunAsync("1\n", "one-more")).ResultRepr);
    }

    [Theory]
    [InlineData("../x")]
    [InlineData("a b")]
    [InlineData("ééé")]
    public async Task Contexts_ABadName_IsBadRequest(string context)
    {
        var refused = await Agent.ExecAsync(Persistent("1\n", context), Ct);
        Assert.False(refused.Succeeded);
        Assert.Equal(ErrorCodes.BadRequest, refused.Error().Code);
        Assert.Contains("fork_server.context", refused.Error().Message);
    }

    [Fact]
    public async Task RichResults_FinalExpressionAndDisplays_CarryTheirReprMethods()
    {
        const string code = """
            class Rich:
                def __repr__(self): return 'Rich()'
                def _repr_html_(self): return '<b>rich</b>'
                def _repr_markdown_(self): return '**rich**'
                def _repr_png_(self): return b'\x89PNG fake'
                def _repr_json_(self): return {'a': [1, 2]}
                def _repr_latex_(self): raise ValueError('no latex')
                def _repr_svg_(self): return 42
            class Shown:
                def _repr_html_(self): return '<i>shown</i>'
            display(Shown())
            display('plain')
            Rich()
            """;
        var run = await RunAsync(code);

        Assert.Equal(0, run.ExitCode);
        Assert.Equal("Rich()", run.ResultRepr);
        var data = run.ResultData!;
        Assert.Equal("Rich()", data["text/plain"]);
        Assert.Equal("<b>rich</b>", data["text/html"]);
        Assert.Equal("**rich**", data["text/markdown"]);
        Assert.Equal([0x89, .. "PNG fake"u8.ToArray()], Convert.FromBase64String(data["image/png"]));
        Assert.Equal("""{"a": [1, 2]}""", data["application/json"]);
        Assert.False(data.ContainsKey("text/latex")); // it raised
        Assert.False(data.ContainsKey("image/svg+xml")); // not text
        var displays = run.Displays!;
        Assert.Equal(2, displays.Count);
        Assert.Equal("<i>shown</i>", displays[0]["text/html"]);
        Assert.Equal("'plain'", displays[1]["text/plain"]);

        // Displays belong to their run.
        var next = await RunAsync("2\n");
        Assert.Null(next.Displays);
        Assert.Equal(new Dictionary<string, string> { ["text/plain"] = "2" }, next.ResultData);
    }

    [Fact]
    public async Task WithoutRichResults_OnlyTheRepr_AndDisplayPrintsIt()
    {
        const string code = "class Rich:\n    def __repr__(self): return 'Rich()'\n    def _repr_html_(self): return '<b>rich</b>'\ndisplay(Rich(), 2)\nRich()\n";
        var frames = await RunFramesAsync(code, rich: false);
        var run = frames.Response(ProtocolJson.Default.ExecResult).Run!;

        Assert.Equal("Rich()", run.ResultRepr);
        Assert.Null(run.ResultData);
        Assert.Null(run.Displays);
        Assert.Equal("Rich()\n2\n", frames.StdoutText);
    }

    [Fact]
    public async Task RichResults_OverTheBudget_AreLeftOut_TheTextStays()
    {
        var run = await RunAsync("""
            class Big:
                def __repr__(self): return 'Big()'
                def _repr_html_(self): return 'x' * (2 << 20)
            for _ in range(100):
                display(Big())
            Big()
            """);

        Assert.Equal(0, run.ExitCode);
        Assert.Equal("Big()", run.ResultData!["text/plain"]);
        Assert.False(run.ResultData.ContainsKey("text/html"));
        Assert.Equal(64, run.Displays!.Count);
        Assert.All(run.Displays, d => Assert.False(d.ContainsKey("text/html")));
        Assert.True(Encoding.UTF8.GetByteCount(string.Concat(run.Displays.SelectMany(d => d.Values))) < 1 << 20);
    }
}
