using System.Text.Json;

namespace SandboxVM.Functional.Tests;

/// <summary>
/// websearch-tools is one VM that every caller's /v1/run shares. A run must not outlive itself there: a
/// daemon left by caller A (double fork and setsid, out of the run's process group) that rewrites
/// whatever appears under /tmp/runs and reads other processes' command lines is gone before caller B
/// runs, and B's files are B's. In a VM B also has a uid and a private directory of its own and sees
/// no process but its own.
/// </summary>
public abstract class SingletonIsolationScenarios(ServerFixture server)
{
    private const string Template = "websearch-tools";

    private static CancellationToken Ct => TestContext.Current.CancellationToken;

    /// <summary>Caller A: leaves a daemon behind and prints its pid.</summary>
    private const string DaemonCode = """
        import glob, os, sys, time
        r, w = os.pipe()
        if os.fork() == 0:
            os.setsid()
            if os.fork() != 0:
                os._exit(0)
            os.write(w, str(os.getpid()).encode())
            os.close(w)
            for fd in (0, 1, 2):
                os.close(fd)
            end = time.time() + 300
            while time.time() < end:
                for path in glob.glob("/tmp/runs/*/*.py") + glob.glob("/tmp/runs/*/*/*.py"):
                    try:
                        with open(path, "w") as f:
                            f.write("print('TAMPERED')\n")
                    except OSError:
                        pass
                for cmdline in glob.glob("/proc/[0-9]*/cmdline"):
                    try:
                        with open(cmdline, "rb") as f:
                            data = f.read()
                        if b"CALLER-B" in data:
                            with open("/tmp/stolen", "ab") as f:
                                f.write(data + b"\n")
                    except OSError:
                        pass
                time.sleep(0.005)
            os._exit(0)
        os.close(w)
        print(os.read(r, 32).decode(), flush=True)
        """;

    /// <summary>Caller B: what it can see of A, and of itself; one JSON line.</summary>
    private static string VictimCode(int daemonPid, string marker) => $$"""
        import json, os, stat, subprocess, sys, time
        # {{marker}}
        source = open(os.path.abspath(sys.argv[0])).read()
        try:
            os.kill({{daemonPid}}, 0)
            daemon = "alive"
        except ProcessLookupError:
            daemon = "gone"
        except PermissionError:
            daemon = "alive (another uid)"
        # Something worth stealing on a command line while a daemon could look.
        child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(1)", "CALLER-B-{{marker}}"])
        child.wait()
        cwd = os.getcwd()
        runs = os.stat("/tmp/runs")
        try:
            os.listdir("/tmp/runs")
            runs_listable = True
        except PermissionError:
            runs_listable = False
        visible = []
        for name in os.listdir("/proc"):
            if name.isdigit():
                try:
                    visible.append(os.stat("/proc/" + name).st_uid)
                except FileNotFoundError:
                    pass
        protected = {}
        for name in ("protected_hardlinks", "protected_symlinks", "protected_fifos", "protected_regular"):
            with open("/proc/sys/fs/" + name) as f:
                protected[name] = int(f.read())
        print(json.dumps({
            "daemon": daemon,
            # Spelled in two pieces so that this line itself does not match.
            "source_intact": ("# " + "{{marker}}") in source and ("TAMP" + "ERED") not in source,
            "stolen": os.path.exists("/tmp/stolen"),
            "uid": os.getuid(),
            "cwd": cwd,
            "cwd_mode": oct(stat.S_IMODE(os.stat(cwd).st_mode)),
            "cwd_owner": os.stat(cwd).st_uid,
            "home": os.environ.get("HOME"),
            "tmpdir": os.environ.get("TMPDIR"),
            "runs_owner": runs.st_uid,
            "runs_mode": oct(stat.S_IMODE(runs.st_mode)),
            "runs_listable": runs_listable,
            "visible_uids": sorted(set(visible)),
            "protected": protected,
        }))
        """;

    [Fact]
    public async Task ADaemonLeftByOneCaller_IsGoneBeforeTheNextCallersRun_WhoseFilesAreUntouched()
    {
        string marker = Guid.NewGuid().ToString("N");

        var a = await server.RunAsync(new { template = Template, code = DaemonCode, timeout_s = 60 }, Ct);
        Assert.True(a.Status == "ok", a.ToString());
        int daemonPid = int.Parse(a.Stdout.Trim(), System.Globalization.CultureInfo.InvariantCulture);
        var b = await server.RunAsync(new { template = Template, code = VictimCode(daemonPid, marker), timeout_s = 60 }, Ct);

        Assert.True(b.Status == "ok", b.ToString());
        // Printed instead of B's answer when A's daemon rewrote B's main.py before it ran (as it did before the fix).
        Assert.DoesNotContain("TAMPERED", b.Stdout);
        using var doc = JsonDocument.Parse(b.Stdout.TrimEnd().Split('\n')[^1]);
        var seen = doc.RootElement;
        Assert.Equal("gone", seen.GetProperty("daemon").GetString());
        Assert.True(seen.GetProperty("source_intact").GetBoolean(), b.Stdout);
        Assert.False(seen.GetProperty("stolen").GetBoolean(), b.Stdout);
        string cwd = seen.GetProperty("cwd").GetString()!;
        Assert.StartsWith("/tmp/runs/", cwd);
        Assert.Equal(cwd, seen.GetProperty("home").GetString());
        Assert.Equal(cwd, seen.GetProperty("tmpdir").GetString());
        if (server.Runtime == "qemu")
        {
            // In a VM: a uid of its own, a directory nobody else may enter under a parent nobody may list,
            // and /proc showing its own processes only; the link protections are on.
            int uid = seen.GetProperty("uid").GetInt32();
            Assert.InRange(uid, 2000, 2999);
            Assert.Equal(uid, seen.GetProperty("cwd_owner").GetInt32());
            Assert.Equal("0o700", seen.GetProperty("cwd_mode").GetString());
            Assert.Equal(0, seen.GetProperty("runs_owner").GetInt32());
            Assert.Equal("0o711", seen.GetProperty("runs_mode").GetString());
            Assert.False(seen.GetProperty("runs_listable").GetBoolean());
            Assert.Equal([uid], seen.GetProperty("visible_uids").EnumerateArray().Select(e => e.GetInt32()));
            Assert.Equal("""{"protected_hardlinks":1,"protected_symlinks":1,"protected_fifos":2,"protected_regular":2}""",
                seen.GetProperty("protected").GetRawText().Replace(" ", "", StringComparison.Ordinal));
        }
    }
}

[Collection(ProcessServer.Collection)]
[Trait("tier", "vm")]
public sealed class ProcessSingletonIsolationTests(ProcessServer server) : SingletonIsolationScenarios(server);

[Collection(QemuServer.Collection)]
[Trait("tier", "vm")]
public sealed class QemuSingletonIsolationTests(QemuServer server) : SingletonIsolationScenarios(server);
