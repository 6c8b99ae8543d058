using System.Globalization;

namespace SandboxVM.Runtime.Gvisor;

/// <summary>What the runsc probe found: whether a sandbox ran here, runsc's version, and why not when it did not.</summary>
public sealed record RunscStatus(bool Works, string? Version, string Detail);

/// <summary>
/// Whether gVisor really runs a sandbox on this host. An installed runsc proves little: the platform
/// may not work (systrap needs seccomp user notification and a kernel that lets it trap; kvm needs
/// /dev/kvm), a rootless host may lack user namespaces. So run one: the host's own <c>/</c> read-only
/// as the root, <c>/bin/true</c> as nobody, no network, no overlay, in a state directory of its own
/// that is removed afterwards. About a second on an idle host.
/// </summary>
public static class RunscProbe
{
    public static RunscStatus Check(string runscPath, string platform, TimeSpan timeout)
    {
        try
        {
            return CheckAsync(runscPath, platform, timeout).GetAwaiter().GetResult();
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException or InvalidOperationException or TimeoutException
            or ExternalCommandException)
        {
            return new RunscStatus(false, null, e.Message);
        }
    }

    private static async Task<RunscStatus> CheckAsync(string runscPath, string platform, TimeSpan timeout)
    {
        if (!File.Exists(runscPath))
        {
            return new RunscStatus(false, null, $"{runscPath} is not installed");
        }
        var (versionCode, versionText) = await Runsc.RunCommandAsync(runscPath, ["--version"], timeout, CancellationToken.None);
        string? version = versionCode == 0 ? versionText.Split('\n')[0].Trim() : null;
        if (version is null)
        {
            return new RunscStatus(false, null, $"runsc --version exited {versionCode}: {versionText}");
        }
        string dir = Path.Combine(Path.GetTempPath(), $"sandboxvm-runsc-probe-{Environment.ProcessId.ToString(CultureInfo.InvariantCulture)}-{Guid.NewGuid().ToString("N")[..8]}");
        string id = "sandboxvm-probe-" + Path.GetFileName(dir)[^8..];
        var runsc = new Runsc(runscPath, Path.Combine(dir, "state"), platform, rootless: !Environment.IsPrivilegedProcess);
        try
        {
            Directory.CreateDirectory(Path.Combine(dir, "state"));
            await File.WriteAllTextAsync(Path.Combine(dir, OciBundle.ConfigFileName), ProbeConfig());
            var (code, output) = await Runsc.RunCommandAsync(runscPath, runsc.RunArguments(dir, id), timeout, CancellationToken.None);
            return code == 0
                ? new RunscStatus(true, version, $"a {platform} sandbox ran /bin/true")
                : new RunscStatus(false, version, $"a {platform} sandbox did not run (exit {code}): {LastLines(output)}");
        }
        catch (TimeoutException e)
        {
            return new RunscStatus(false, version, e.Message);
        }
        finally
        {
            // A timed-out sandbox lives on after its runsc was killed: delete ends it and its state.
            try
            {
                await Runsc.RunCommandAsync(runscPath, runsc.DeleteArguments(id), timeout, CancellationToken.None);
            }
            catch (TimeoutException)
            {
            }
            try
            {
                Directory.Delete(dir, recursive: true);
            }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException)
            {
            }
        }
    }

    private static string LastLines(string text)
    {
        var lines = text.Split('\n', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries);
        return lines.Length == 0 ? "(no output)" : string.Join(" | ", lines.TakeLast(3));
    }

    private static string ProbeConfig() => """
        {
          "ociVersion": "1.0.2",
          "process": {
            "user": { "uid": 65534, "gid": 65534 },
            "args": [ "/bin/true" ],
            "env": [ "PATH=/usr/bin:/bin" ],
            "cwd": "/",
            "noNewPrivileges": true
          },
          "root": { "path": "/", "readonly": true },
          "hostname": "probe",
          "mounts": [ { "destination": "/proc", "type": "proc", "source": "proc" } ],
          "linux": { "namespaces": [ { "type": "pid" }, { "type": "network" }, { "type": "ipc" }, { "type": "uts" }, { "type": "mount" } ] }
        }
        """;
}
