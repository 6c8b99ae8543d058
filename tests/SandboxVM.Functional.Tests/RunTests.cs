using System.Diagnostics;
using System.Net;
using System.Net.Sockets;
using System.Security.Cryptography;

namespace SandboxVM.Functional.Tests;

/// <summary>What a user does with POST /v1/run, through the real server and real sandboxes (process runtime).</summary>
public abstract class RunScenarios(ServerFixture server)
{
    private static CancellationToken Ct => TestContext.Current.CancellationToken;

    /// <summary>
    /// The templates' most (max_timeout_s) for the compiles of these tests: they check what a compile gives,
    /// not its default limit (30 s), which a C++ compile under TCG on this 2-core host at load 30 passed (31 s).
    /// </summary>
    private const int SlowHostCompileS = 120;

    [Fact]
    public async Task Run_PythonHello_PrintsTheSum()
    {
        // A warm server: the run's sandbox comes from the pool (earlier tests may have drained it).
        await PoolScenarios.WaitForFullPoolAsync(server, "python-data-analysis", TimeSpan.FromSeconds(180));
        var r = await server.RunAsync(new { template = "python-data-analysis", code = "print(sum(range(10)))" }, Ct);
        Assert.True(r.Status == "ok", r.ToString());
        Assert.Equal("45\n", r.Output);
        Assert.Equal(0, r.ExitCode);
        Assert.True(r.Metrics["vm_source"].GetString() is "pool" or "process", r.ToString());
        Assert.True(r.Metrics["total_ms"].GetDouble() >= r.Metrics["run_ms"].GetDouble());
    }

    [Fact]
    public async Task Run_CppHello_CompilesAndRuns()
    {
        const string code = "#include <bits/stdc++.h>\nint main(){ std::vector<int> v{3,1,2}; std::sort(v.begin(), v.end()); for(int x: v) std::cout << x; std::cout << \"\\n\"; }\n";
        var r = await server.RunAsync(new { template = "cpp-algorithm", code, compile_timeout_s = SlowHostCompileS }, Ct);
        Assert.True(r.Status == "ok", r.ToString());
        Assert.Equal("123\n", r.Stdout);
        Assert.True(r.Metrics["compile_ms"].GetDouble() > 0);
    }

    [Fact]
    public async Task Run_GoHello_CompilesAndRuns()
    {
        const string code = "package main\nimport \"fmt\"\nfunc main() { fmt.Println(\"hello from go\", 6*7) }\n";
        var r = await server.RunAsync(new { template = "go-algorithm", code, compile_timeout_s = SlowHostCompileS }, Ct);
        Assert.True(r.Status == "ok", r.ToString());
        Assert.Equal("hello from go 42\n", r.Stdout);
    }

    [Fact]
    public async Task Run_CppWithSyntaxError_ReturnsCompileErrorWithTheCompilersMessage()
    {
        var r = await server.RunAsync(new { template = "cpp-algorithm", code = "int main() { return undefined_name; }\n", compile_timeout_s = SlowHostCompileS }, Ct);
        r.AssertStatus("compile_error");
        Assert.Contains("undefined_name", r.Stderr);
        Assert.Contains("error", r.Stderr);
    }

    [Fact]
    public async Task Run_GoPanic_IsErrorWithTheExitCode()
    {
        const string code = "package main\nfunc main() { var m map[string]int; m[\"x\"] = 1 }\n";
        var r = await server.RunAsync(new { template = "go-algorithm", code, compile_timeout_s = SlowHostCompileS }, Ct);
        r.AssertStatus("error");
        Assert.Equal(2, r.ExitCode);
        Assert.Contains("panic", r.Stderr);
    }

    [Fact]
    public async Task Run_InfiniteLoop_TimesOutWithinTheLimitPlusAMargin()
    {
        var watch = Stopwatch.StartNew();
        var r = await server.RunAsync(new { template = "python-data-analysis", code = "while True:\n    pass\n", timeout_s = 2 }, Ct);
        watch.Stop();
        r.AssertStatus("timeout");
        Assert.True(watch.Elapsed < TimeSpan.FromSeconds(2 + 5), $"took {watch.Elapsed}");
    }

    [Fact]
    public async Task Run_Printing50MB_IsOutputLimit_AndTheServerStaysHealthy()
    {
        var r = await server.RunAsync(new { template = "python-data-analysis", code = "import sys\nchunk = 'x' * (1 << 20)\nfor _ in range(50):\n    sys.stdout.write(chunk)\n" }, Ct);
        r.AssertStatus("output_limit");
        Assert.True(r.Truncated);
        Assert.Equal(1 << 20, r.Stdout.Length);

        var health = await server.Http.GetStringAsync("/healthz", Ct);
        Assert.Contains("ok", health);
        var after = await server.RunAsync(new { template = "python-data-analysis", code = "print('still here')" }, Ct);
        Assert.Equal("still here\n", after.Output);
    }

    [Fact]
    public async Task Run_MatplotlibFigureSavedToOutputs_ComesBackAsPngWithMatchingSha256()
    {
        const string code = """
            import matplotlib.pyplot as plt
            plt.plot([1, 2, 3], [4, 1, 9])
            plt.title("chart")
            plt.savefig("/tmp/outputs/chart.png")
            print("saved")
            """;
        var r = await server.RunAsync(new { template = "python-data-analysis", code }, Ct);
        Assert.True(r.Status == "ok", r.ToString());
        var png = Assert.Single(r.Artifacts);
        Assert.Equal("chart.png", png.Path);
        Assert.Equal("image/png", png.Mime);
        byte[] bytes = Convert.FromBase64String(png.ContentBase64!);
        Assert.Equal(png.Size, bytes.Length);
        Assert.Equal(png.Sha256, Convert.ToHexStringLower(SHA256.HashData(bytes)));
        Assert.Equal(new byte[] { 0x89, (byte)'P', (byte)'N', (byte)'G' }, bytes[..4]);
    }

    [Fact]
    public async Task Run_Stdin_ReachesACppProgram()
    {
        const string code = "#include <iostream>\nint main(){ long a, b, s = 0; while (std::cin >> a >> b) s += a * b; std::cout << s << std::endl; }\n";
        var r = await server.RunAsync(new { template = "cpp-algorithm", code, stdin = "2 3\n4 5\n", compile_timeout_s = SlowHostCompileS }, Ct);
        Assert.True(r.Status == "ok", r.ToString());
        Assert.Equal("26\n", r.Stdout);
    }

    [Fact]
    public async Task Run_CannotConnectToTheHostsLoopback()
    {
        using var listener = new TcpListener(IPAddress.Loopback, 0);
        listener.Start();
        int port = ((IPEndPoint)listener.LocalEndpoint).Port;
        string code = $"""
            import socket
            s = socket.socket()
            s.settimeout(3)
            try:
                s.connect(("127.0.0.1", {port}))
                print("connected")
            except OSError as e:
                print("blocked", type(e).__name__)
            """;
        var r = await server.RunAsync(new { template = "python-data-analysis", code }, Ct);
        Assert.True(r.Status == "ok", r.ToString());
        Assert.StartsWith("blocked", r.Stdout);
        Assert.False(listener.Pending(), "the host listener saw a connection from the sandbox");
    }

    [Fact]
    public async Task Run_CannotReadAFileThatExistsOnlyOnTheHost()
    {
        string secret = Path.Combine("/tmp", "sandboxvm-secret-" + Guid.NewGuid().ToString("N"));
        await File.WriteAllTextAsync(secret, "host secret", Ct);
        try
        {
            string code = $"""
                try:
                    print(open("{secret}").read())
                except OSError as e:
                    print("denied", type(e).__name__)
                """;
            var r = await server.RunAsync(new { template = "python-data-analysis", code }, Ct);
            Assert.Equal("denied FileNotFoundError\n", r.Stdout);
        }
        finally
        {
            File.Delete(secret);
        }
    }

    [Fact]
    public async Task Run_TenConcurrentRuns_AllComplete()
    {
        var runs = Enumerable.Range(0, 10).Select(i =>
            server.RunAsync(new { template = "python-data-analysis", code = $"print({i} * {i})" }, Ct));
        var results = await Task.WhenAll(runs);
        for (int i = 0; i < 10; i++)
        {
            Assert.True(results[i].Status == "ok", results[i].ToString());
            Assert.Equal($"{i * i}\n", results[i].Stdout);
        }
    }

    [Fact]
    public async Task Run_ThatExhaustsMemory_IsOom()
    {
        const string code = "blocks = []\nwhile True:\n    blocks.append(bytearray(64 << 20))\n";
        var r = await server.RunAsync(new { template = "python-data-analysis", code, timeout_s = 30 }, Ct);
        r.AssertStatus("oom");
        var health = await server.Http.GetStringAsync("/healthz", Ct);
        Assert.Contains("ok", health);
    }
}

[Collection(ProcessServer.Collection)]
[Trait("tier", "vm")]
public sealed class ProcessRunTests(ProcessServer server) : RunScenarios(server);

[Collection(QemuServer.Collection)]
[Trait("tier", "vm")]
public sealed class QemuRunTests(QemuServer server) : RunScenarios(server);

[Collection(GvisorServer.Collection)]
[Trait("tier", "vm")]
public sealed class GvisorRunTests(GvisorServer server) : RunScenarios(server.OrSkip());
