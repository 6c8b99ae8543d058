using System.Text.Json.Nodes;
using SandboxVM.Protocol;
using SandboxVM.Server.E2b;

namespace SandboxVM.Server.Tests;

/// <summary>The interpreter's "result" lines under E2B's names, and the per-sandbox code contexts the door keeps.</summary>
[Trait("tier", "unit")]
public sealed class E2bInterpreterTests
{
    [Fact]
    public void AResultCarriesEachRepresentationUnderE2bsKey_JsonAsJson_UnknownTypesLeftOut()
    {
        var data = new Dictionary<string, string>
        {
            ["text/plain"] = "   city\n0  Oslo",
            ["text/html"] = "<table><tr><td>Oslo</td></tr></table>",
            ["text/markdown"] = "**m**",
            ["image/png"] = "iVBORw0KGgo=",
            ["image/svg+xml"] = "<svg/>",
            ["text/latex"] = "$x$",
            ["application/json"] = """{"n": [1, 2]}""",
            ["application/javascript"] = "alert(1)",
            ["application/vnd.custom"] = "left out",
        };

        JsonObject line = E2bInterpreter.ResultOf(data, "repr text", isMain: true);

        Assert.Equal("result", line["type"]!.GetValue<string>());
        Assert.True(line["is_main_result"]!.GetValue<bool>());
        Assert.Equal("repr text", line["text"]!.GetValue<string>()); // the run's repr wins over the bundle's
        Assert.Equal("<table><tr><td>Oslo</td></tr></table>", line["html"]!.GetValue<string>());
        Assert.Equal("**m**", line["markdown"]!.GetValue<string>());
        Assert.Equal("iVBORw0KGgo=", line["png"]!.GetValue<string>());
        Assert.Equal("<svg/>", line["svg"]!.GetValue<string>());
        Assert.Equal("$x$", line["latex"]!.GetValue<string>());
        Assert.Equal(2, line["json"]!["n"]![1]!.GetValue<int>());
        Assert.Equal("alert(1)", line["javascript"]!.GetValue<string>());
        Assert.DoesNotContain(line, p => p.Value?.ToString() == "left out");
    }

    [Fact]
    public void ADisplayedObjectIsNotTheMainResult_AndBadJsonStaysText()
    {
        JsonObject line = E2bInterpreter.ResultOf(new Dictionary<string, string> { ["text/plain"] = "x", ["application/json"] = "{not json" }, null, isMain: false);

        Assert.False(line["is_main_result"]!.GetValue<bool>());
        Assert.Equal("x", line["text"]!.GetValue<string>());
        Assert.Equal("{not json", line["json"]!.GetValue<string>());
    }

    [Fact]
    public void ASandboxHasAtMostTheAgentsKernelCap_TheDefaultContextIncluded()
    {
        var extras = new E2bState().For("sbx");
        var made = new List<string>();
        while (extras.AddContext() is { } id)
        {
            made.Add(id);
        }
        Assert.Equal(KernelRequest.MaxContexts - 1, made.Count);
        Assert.Equal([E2bInterpreter.DefaultContext, .. made], extras.Contexts());
        Assert.All(made, id => Assert.Matches("^[a-f0-9]{32}$", id)); // a name the agent accepts

        extras.RemoveContext(made[0]);
        Assert.False(extras.HasContext(made[0]));
        Assert.True(extras.HasContext(E2bInterpreter.DefaultContext));
        Assert.NotNull(extras.AddContext());
    }
}
