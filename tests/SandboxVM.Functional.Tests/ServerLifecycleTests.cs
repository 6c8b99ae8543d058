using System.Diagnostics;
using System.Net;
using System.Net.Sockets;
using System.Text.Json;

namespace SandboxVM.Functional.Tests;

/// <summary>
/// No VM is left behind: a server killed with SIGKILL takes its VMs with it at once (each QEMU's launch
/// chain watches a pipe only the server holds), the next server sweeps what is left of them (cgroups,
/// run directories), and a server stopped normally ends its VMs. Runs the real `sandboxvm serve` as a
/// child process.
/// </summary>
[Collection(QemuServer.Collection)]
[Trait("tier", "vm")]
public class ServerLifecycleTests
{
    private const string RunRoot = "/run/sandboxvm/qemu";

    private static CancellationToken Ct => TestContext.Current.CancellationToken;

    [Fact]
    public async Task KilledServer_TakesItsVmsWithIt_TheNextServerSweepsTheRest_AndAStoppedServerLeavesNone()
    {
        int port = FreePort();
        using var first = StartServer(port);
        List<ProcessId> started;
        List<string> runDirs;
        try
        {
            await WaitForFullPoolsAsync(first, port);
            Assert.NotEmpty(QemusOf(first.Id));
            // Everything the server started (QEMUs and whatever runs beside them), and the VMs' run directories.
            started = DescendantsOf(first.Id);
            runDirs = RunDirsOwnedBy(first.Id);
            Assert.NotEmpty(runDirs);
        }
        finally
        {
            first.Process.Kill(); // SIGKILL: no chance to clean up
            await first.Process.WaitForExitAsync(Ct);
        }
        await WaitUntilAsync(() => started.All(p => !p.IsAlive), TimeSpan.FromSeconds(5),
            () => $"still running 5 s after the server's SIGKILL: {string.Join(", ", started.Where(p => p.IsAlive))}");

        using var second = StartServer(port);
        try
        {
            await WaitUntilAsync(() => runDirs.All(d => !Directory.Exists(d)), TimeSpan.FromSeconds(60),
                () => $"the next server did not sweep {string.Join(", ", runDirs.Where(Directory.Exists))}");
            await WaitForFullPoolsAsync(second, port);
            var own = DescendantsOf(second.Id);
            Assert.NotEmpty(QemusOf(second.Id));

            Process.Start("kill", ["-TERM", second.Id.ToString()])!.WaitForExit();
            Assert.True(second.Process.WaitForExit(TimeSpan.FromSeconds(60)), $"server did not stop on SIGTERM: {second.Output}");
            await WaitUntilAsync(() => own.All(p => !p.IsAlive), TimeSpan.FromSeconds(10),
                () => $"a stopped server left running: {string.Join(", ", own.Where(p => p.IsAlive))}");
        }
        finally
        {
            if (!second.Process.HasExited)
            {
                second.Process.Kill();
            }
        }
    }

    /// <summary>A process by pid and start time, so a recycled pid is never taken for it.</summary>
    private sealed record ProcessId(int Pid, long StartTime, string Name)
    {
        public bool IsAlive => Stat(Pid) is { } s && s.StartTime == StartTime && s.State != 'Z';

        public override string ToString() => $"{Name} ({Pid})";
    }

    private static (char State, int Parent, long StartTime, string Name)? Stat(int pid)
    {
        try
        {
            string stat = File.ReadAllText($"/proc/{pid}/stat");
            // pid (comm) state ppid ... starttime (field 22): comm may contain spaces, so split after the last ')'.
            int close = stat.LastIndexOf(')');
            string[] rest = stat[(close + 2)..].Split(' ');
            return (rest[0][0], int.Parse(rest[1]), long.Parse(rest[19]), stat[(stat.IndexOf('(') + 1)..close]);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            return null;
        }
    }

    /// <summary>Every live process below <paramref name="root"/> in the process tree.</summary>
    private static List<ProcessId> DescendantsOf(int root)
    {
        var all = new Dictionary<int, (char State, int Parent, long StartTime, string Name)>();
        foreach (string dir in Directory.GetDirectories("/proc"))
        {
            if (int.TryParse(Path.GetFileName(dir), out int pid) && Stat(pid) is { } s)
            {
                all[pid] = s;
            }
        }
        var found = new List<ProcessId>();
        var parents = new HashSet<int> { root };
        bool grew = true;
        while (grew)
        {
            grew = false;
            foreach (var (pid, s) in all)
            {
                if (parents.Contains(s.Parent) && parents.Add(pid))
                {
                    found.Add(new ProcessId(pid, s.StartTime, s.Name));
                    grew = true;
                }
            }
        }
        return found;
    }

    private static List<string> RunDirsOwnedBy(int server) =>
        !Directory.Exists(RunRoot) ? [] : Directory.GetDirectories(RunRoot, "qemu-*")
            .Where(d => File.Exists(Path.Combine(d, "owner")) && File.ReadAllText(Path.Combine(d, "owner")).Trim() == server.ToString())
            .ToList();

    /// <summary>A `sandboxvm serve` child and the tail of what it printed (for the message when it dies early).</summary>
    private sealed class Server(Process process) : IDisposable
    {
        private readonly System.Text.StringBuilder _output = new();

        public Process Process => process;
        public int Id => process.Id;

        public string Output
        {
            get
            {
                lock (_output)
                {
                    return _output.ToString();
                }
            }
        }

        public void Drain()
        {
            // Drained so a full pipe never blocks it; the last 8 KB kept.
            process.OutputDataReceived += (_, e) => Keep(e.Data);
            process.ErrorDataReceived += (_, e) => Keep(e.Data);
            process.BeginOutputReadLine();
            process.BeginErrorReadLine();
        }

        private void Keep(string? line)
        {
            lock (_output)
            {
                _output.AppendLine(line);
                if (_output.Length > 8192)
                {
                    _output.Remove(0, _output.Length - 8192);
                }
            }
        }

        public void Dispose() => process.Dispose();
    }

    private static Server StartServer(int port)
    {
        string cli = Path.Combine(ServerFixture.RepoRoot(), "artifacts", "cli", "sandboxvm");
        if (!File.Exists(cli))
        {
            throw new InvalidOperationException($"the CLI is not published at {cli}: run scripts/test.sh (or scripts/build.sh) first");
        }
        var psi = new ProcessStartInfo(cli) { RedirectStandardOutput = true, RedirectStandardError = true };
        foreach (string a in (string[])["serve", "--url", $"http://127.0.0.1:{port}", "--runtime", "qemu"])
        {
            psi.ArgumentList.Add(a);
        }
        psi.Environment["SANDBOXVM_ACCEL"] = "tcg";
        psi.Environment["SANDBOXVM_AGENT"] = Environment.GetEnvironmentVariable("SANDBOXVM_AGENT")
            ?? Path.Combine(ServerFixture.RepoRoot(), "artifacts", "agent", "sandboxvm-agent");
        var server = new Server(Process.Start(psi)!);
        server.Drain();
        return server;
    }

    private static async Task WaitForFullPoolsAsync(Server server, int port)
    {
        using var http = new HttpClient { BaseAddress = new Uri($"http://127.0.0.1:{port}"), Timeout = TimeSpan.FromSeconds(10) };
        await WaitUntilAsync(async () =>
        {
            if (server.Process.HasExited)
            {
                Assert.Fail($"the server exited ({server.Process.ExitCode}): {server.Output}");
            }
            try
            {
                var doc = JsonDocument.Parse(await http.GetStringAsync("/v1/templates", Ct));
                return doc.RootElement.GetProperty("templates").EnumerateArray()
                    .All(t => t.GetProperty("pool").ValueKind == JsonValueKind.Null
                        || t.GetProperty("pool").GetProperty("ready").GetInt32() == t.GetProperty("pool").GetProperty("target").GetInt32());
            }
            catch (Exception e) when (e is HttpRequestException || (e is TaskCanceledException && !Ct.IsCancellationRequested))
            {
                // Not listening yet, or too busy starting VMs to answer within the client's timeout.
                return false;
            }
        }, TimeSpan.FromMinutes(10), () => $"pools did not fill: {server.Output}");
    }

    private static Task WaitUntilAsync(Func<bool> condition, TimeSpan timeout, Func<string> what) =>
        WaitUntilAsync(() => Task.FromResult(condition()), timeout, what);

    private static async Task WaitUntilAsync(Func<Task<bool>> condition, TimeSpan timeout, Func<string> what)
    {
        var deadline = DateTime.UtcNow + timeout;
        while (!await condition())
        {
            Assert.True(DateTime.UtcNow < deadline, what());
            await Task.Delay(100, Ct);
        }
    }

    private static List<ProcessId> QemusOf(int server) =>
        DescendantsOf(server).Where(p => p.Name.StartsWith("qemu-system-x86", StringComparison.Ordinal)).ToList();

    private static int FreePort()
    {
        using var l = new TcpListener(IPAddress.Loopback, 0);
        l.Start();
        return ((IPEndPoint)l.LocalEndpoint).Port;
    }
}
