using System.Net;
using System.Reflection;
using System.Net.WebSockets;
using System.Text;
using System.Text.Json;
using System.Text.RegularExpressions;
using SandboxVM.Client;
using SandboxVM.Testing;

namespace SandboxVM.Server.Tests;

/// <summary>/v1/sandboxes/{id}/pty: a terminal in a sandbox of the local agent, through the real WebSocket (the C# SDK's client and a raw one).</summary>
[Trait("tier", "integration")]
public sealed partial class PtyEndpointTests(LocalAgentServer server) : IClassFixture<LocalAgentServer>
{
    private static CancellationToken Ct => TestContext.Current.CancellationToken;

    private readonly LocalAgentServer _server = server.OrSkip();

    private static Task<string> ReadUntilAsync(SandboxTerminal term, StringBuilder output, Regex pattern) =>
        TerminalOutput.ReadUntilAsync(term, output, pattern, Ct);

    [Fact]
    public async Task Shell_IsATerminal_FollowsResize_AndClosesWithItsExitCode()
    {
        await using var sb = await _server.Client.CreateSandboxAsync(LocalAgentServer.Python, cancellationToken: Ct);
        await using var term = await sb.OpenTerminalAsync(cols: 100, rows: 30, cancellationToken: Ct);
        var output = new StringBuilder();

        await term.WriteAsync("tty; stty size; echo mark-$((40+2))\n", Ct);
        string text = await ReadUntilAsync(term, output, Mark42());
        Assert.Matches(@"/dev/pts/\d+", text);
        Assert.Contains("30 100", text);

        await term.ResizeAsync(120, 40, Ct);
        output.Clear();
        await term.WriteAsync("stty size; echo mark-$((40+3))\n", Ct);
        Assert.Contains("40 120", await ReadUntilAsync(term, output, Mark43()));

        await term.WriteAsync("exit 3\n", Ct);
        byte[] rest = new byte[4096];
        while (await term.ReadAsync(rest, Ct) > 0)
        {
        }
        Assert.Equal(3, term.ExitCode);
        Assert.Equal("exit 3", term.CloseReason);
    }

    [Fact]
    public async Task KeysArrivingAsTheProgramEnds_StillGetItsExitCode()
    {
        // A client that types while the program exits (the CLI's Ctrl-D after piped input, seen failing once under
        // load): keys that reach the server after the terminal's output ended once failed its receive loop, and
        // the server dropped the socket without the exit close. Each round types until the terminal closes.
        await using var sb = await _server.Client.CreateSandboxAsync(LocalAgentServer.Python, cancellationToken: Ct);
        for (int round = 0; round < 10; round++)
        {
            var term = await sb.OpenTerminalAsync(command: "exit 7", cancellationToken: Ct);
            using var typing = CancellationTokenSource.CreateLinkedTokenSource(Ct);
            var typist = Task.Run(async () =>
            {
                try
                {
                    while (!typing.IsCancellationRequested)
                    {
                        await term.WriteAsync("x", typing.Token);
                    }
                }
                catch (Exception e) when (e is WebSocketException or OperationCanceledException or ObjectDisposedException)
                {
                    // The terminal closed.
                }
            }, Ct);
            string ended;
            try
            {
                byte[] rest = new byte[4096];
                while (await term.ReadAsync(rest, Ct) > 0)
                {
                }
                ended = $"closed: {term.CloseReason}";
            }
            catch (WebSocketException e)
            {
                ended = "dropped: " + e.Message;
            }
            await typing.CancelAsync();
            await typist;
            Assert.True(term.ExitCode == 7, $"round {round}: no exit code ({ended})");
            await term.DisposeAsync();
        }
    }

    [Fact]
    public async Task ClosingTheSocket_KillsWhatRunsOnTheTerminal()
    {
        await using var sb = await _server.Client.CreateSandboxAsync(LocalAgentServer.Python, cancellationToken: Ct);
        var term = await sb.OpenTerminalAsync(command: "echo pid=$$; exec sleep 1000", cancellationToken: Ct);
        string text = await ReadUntilAsync(term, new StringBuilder(), PidLine());
        string pid = PidLine().Match(text).Groups[1].Value;
        Assert.Equal(0, (await sb.Commands.RunAsync($"kill -0 {pid}", cancellationToken: Ct)).ExitCode);

        await term.DisposeAsync();

        var deadline = DateTime.UtcNow + TimeSpan.FromSeconds(30);
        while ((await sb.Commands.RunAsync($"kill -0 {pid}", cancellationToken: Ct)).ExitCode == 0)
        {
            Assert.True(DateTime.UtcNow < deadline, "the program on the terminal outlived its socket");
            await Task.Delay(100, Ct);
        }
    }

    [Fact]
    public async Task PlainGet_AndBadSizes_AreProblems_AndAnotherCallersSandboxIsNotFound()
    {
        await using var sb = await _server.Client.CreateSandboxAsync(LocalAgentServer.Python, cancellationToken: Ct);

        using var plain = await _server.Http.GetAsync($"v1/sandboxes/{sb.Id}/pty", Ct);
        Assert.Equal(HttpStatusCode.BadRequest, plain.StatusCode);
        Assert.Equal("websocket_required", JsonDocument.Parse(await plain.Content.ReadAsStringAsync(Ct)).RootElement.GetProperty("code").GetString());

        using var socket = new ClientWebSocket();
        socket.Options.CollectHttpResponseDetails = true;
        var url = new UriBuilder(new Uri(_server.Http.BaseAddress!, $"v1/sandboxes/{sb.Id}/pty?cols=0")) { Scheme = "ws" }.Uri;
        await Assert.ThrowsAsync<WebSocketException>(() => socket.ConnectAsync(url, Ct));
        Assert.Equal(HttpStatusCode.BadRequest, socket.HttpStatusCode);

        using var unknown = new ClientWebSocket();
        unknown.Options.CollectHttpResponseDetails = true;
        await Assert.ThrowsAsync<WebSocketException>(() => unknown.ConnectAsync(
            new UriBuilder(new Uri(_server.Http.BaseAddress!, "v1/sandboxes/sb-nope/pty")) { Scheme = "ws" }.Uri, Ct));
        Assert.Equal(HttpStatusCode.NotFound, unknown.HttpStatusCode);
    }

    [GeneratedRegex("mark-42")]
    private static partial Regex Mark42();

    [GeneratedRegex("mark-43")]
    private static partial Regex Mark43();

    [GeneratedRegex(@"pid=(\d+)")]
    private static partial Regex PidLine();
}

/// <summary><c>sandboxvm sandbox shell</c> (the built CLI) with piped input: the keys reach the sandbox's shell and its exit code is the CLI's.</summary>
[Trait("tier", "integration")]
public sealed class ShellCliTests(LocalAgentServer server) : IClassFixture<LocalAgentServer>
{
    private static CancellationToken Ct => TestContext.Current.CancellationToken;

    private readonly LocalAgentServer _server = server.OrSkip();

    [Fact]
    public async Task SandboxShell_RunsTheKeysInTheSandbox_AndExitsWithTheShellsCode()
    {
        await using var sb = await _server.Client.CreateSandboxAsync(LocalAgentServer.Python, cancellationToken: Ct);
        await sb.Files.WriteAsync("marker.txt", "inside-the-sandbox\n", Ct);
        string? cli = typeof(ShellCliTests).Assembly.GetCustomAttributes<AssemblyMetadataAttribute>()
            .FirstOrDefault(a => a.Key == "SandboxVM.CliPath")?.Value;
        Assert.True(cli is not null && File.Exists(cli), $"the CLI was not built at '{cli}'");
        string dotnet = Environment.ProcessPath is { } host && Path.GetFileNameWithoutExtension(host) == "dotnet" ? host : "dotnet";
        var start = new System.Diagnostics.ProcessStartInfo(dotnet)
        {
            RedirectStandardInput = true,
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            ArgumentList = { cli, "sandbox", "shell", sb.Id, "--url", _server.Http.BaseAddress!.ToString() },
        };
        start.Environment["DOTNET_NOLOGO"] = "1";
        using var process = System.Diagnostics.Process.Start(start)!;
        try
        {
            await process.StandardInput.WriteAsync("cat marker.txt; tty; exit 5\n");
            process.StandardInput.Close();
            var stdout = process.StandardOutput.ReadToEndAsync(Ct);
            var stderr = process.StandardError.ReadToEndAsync(Ct);
            using var deadline = CancellationTokenSource.CreateLinkedTokenSource(Ct);
            deadline.CancelAfter(TimeSpan.FromSeconds(60));
            await process.WaitForExitAsync(deadline.Token);

            Assert.True(process.ExitCode == 5, $"exit {process.ExitCode}; stderr: {await stderr}");
            string output = await stdout;
            Assert.Contains("inside-the-sandbox", output);
            Assert.Matches(@"/dev/pts/\d+", output);
        }
        finally
        {
            if (!process.HasExited)
            {
                process.Kill(entireProcessTree: true);
            }
        }
    }
}
