using System.Diagnostics;
using System.Text;
using System.Text.Json;

namespace SandboxVM.Server.Tests;

/// <summary>
/// The Python driver the tools run, executed by this machine's python3 against a stand-in
/// <c>websearch</c> package that prints the argv it got: what a caller sends is what the module receives.
/// </summary>
[Trait("tier", "integration")]
public sealed class DriverTests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("sandboxvm-driver-").FullName;

    public DriverTests()
    {
        Directory.CreateDirectory(Path.Combine(_dir, "websearch"));
        File.WriteAllText(Path.Combine(_dir, "websearch", "__init__.py"), "");
        // Like the real module: one JSON object on stdout; exit 2 with an error object when asked to.
        File.WriteAllText(Path.Combine(_dir, "websearch", "__main__.py"), """
            import json, sys
            args = sys.argv[1:]
            if args and args[-1] == "please-fail":
                print(json.dumps({"error": {"code": "fetch_failed", "message": "asked to fail"}}))
                sys.exit(2)
            print(json.dumps({"argv": args}))
            """);
    }

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    private static string Python => File.Exists("/usr/bin/python3") ? "/usr/bin/python3" : "python3";

    private async Task<(int Exit, string Stdout, string Stderr)> RunDriverAsync(IReadOnlyList<string> argv, string lang = "C")
    {
        var request = WebsearchTools.BuildRequest(argv);
        var start = new ProcessStartInfo(Python)
        {
            RedirectStandardInput = true,
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            StandardOutputEncoding = Encoding.UTF8,
            StandardErrorEncoding = Encoding.UTF8,
            WorkingDirectory = _dir,
        };
        start.ArgumentList.Add("-u");
        start.ArgumentList.Add("-c");
        start.ArgumentList.Add(request.Code!);
        start.Environment.Clear();
        start.Environment["PATH"] = "/usr/bin:/bin";
        start.Environment["PYTHONPATH"] = _dir;
        start.Environment["LANG"] = lang;
        start.Environment["LC_ALL"] = lang;
        foreach (var (k, v) in request.Env!)
        {
            start.Environment[k] = v;
        }
        using var process = Process.Start(start)!;
        var stdin = new UTF8Encoding(encoderShouldEmitUTF8Identifier: false).GetBytes(request.Stdin!);
        await process.StandardInput.BaseStream.WriteAsync(stdin, TestContext.Current.CancellationToken);
        process.StandardInput.Close();
        var stdout = process.StandardOutput.ReadToEndAsync(TestContext.Current.CancellationToken);
        var stderr = process.StandardError.ReadToEndAsync(TestContext.Current.CancellationToken);
        using var timeout = CancellationTokenSource.CreateLinkedTokenSource(TestContext.Current.CancellationToken);
        timeout.CancelAfter(TimeSpan.FromSeconds(30));
        try
        {
            await process.WaitForExitAsync(timeout.Token);
        }
        catch (OperationCanceledException)
        {
            process.Kill(entireProcessTree: true);
            throw;
        }
        return (process.ExitCode, await stdout, await stderr);
    }

    public static TheoryData<string> Awkward => new()
    {
        "https://example.com/a?q=\"x\"'y'&z=`id`$(id)",
        "line one\nline two\r\nthree\\n",
        "\"\"\"); import os; os.system('id') #",
        "{\"argv\": [\"injected\"]}",
        "caf\u00e9 \u4e2d\u6587 \U0001F600",
        "--max-results",
        "-h",
        "  spaces around  ",
        "tab\there",
    };

    [Theory]
    [MemberData(nameof(Awkward))]
    public async Task AFetchUrl_ReachesTheModuleAsExactlyOneArgument(string url)
    {
        var (exit, stdout, stderr) = await RunDriverAsync(WebsearchTools.FetchArgs(url));

        Assert.True(exit == 0, $"exit {exit}: {stderr}");
        using var doc = JsonDocument.Parse(stdout);
        Assert.Equal(["fetch", url], doc.RootElement.GetProperty("argv").EnumerateArray().Select(a => a.GetString()));
    }

    [Theory]
    [MemberData(nameof(Awkward))]
    public async Task ASearchQuery_ReachesTheModuleIntact_EvenUnderThePosixLocale(string query)
    {
        var argv = WebsearchTools.SearchArgs(query, 3);

        var (exit, stdout, stderr) = await RunDriverAsync(argv, lang: "POSIX");

        Assert.True(exit == 0, $"exit {exit}: {stderr}");
        using var doc = JsonDocument.Parse(stdout);
        Assert.Equal(argv, doc.RootElement.GetProperty("argv").EnumerateArray().Select(a => a.GetString()));
    }

    [Fact]
    public async Task TheModulesExitStatusAndErrorObject_AreTheRuns()
    {
        var (exit, stdout, _) = await RunDriverAsync(WebsearchTools.FetchArgs("please-fail"));

        Assert.Equal(2, exit);
        var result = FakeToolRunner.Exited(exit, stdout);
        var e = Assert.Throws<ToolException>(() => WebsearchTools.Interpret(result, "url"));
        Assert.Equal("fetch_failed", e.Code);
        Assert.Equal(502, e.Status);
    }

    [Fact]
    public async Task TheModulesSuccessOutput_ParsesAsItsAnswer()
    {
        var (exit, stdout, _) = await RunDriverAsync(WebsearchTools.SearchArgs("q", 1));

        var answer = WebsearchTools.Interpret(FakeToolRunner.Exited(exit, stdout), "query");
        Assert.Equal(["search", "q", "--max-results", "1"], answer.GetProperty("argv").EnumerateArray().Select(a => a.GetString()));
    }
}
