using System.Diagnostics;
using System.Globalization;

namespace SandboxVM.Runtime.Cgroups;

/// <summary>
/// Starts a sandbox process inside its cgroup from its very first instruction: a shell optionally records
/// its pid, writes it to every cgroup.procs file, then execs the real command, so nothing it forks can
/// start outside the limits. The caller appends the command (and any privilege drop) to the argument list.
/// </summary>
internal static class CgroupLauncher
{
    public static ProcessStartInfo StartInfo(Cgroup? cgroup, string? pidFile = null)
    {
        var psi = new ProcessStartInfo
        {
            FileName = "/bin/sh",
            RedirectStandardInput = true,
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
        };
        psi.Environment.Clear();
        psi.Environment["PATH"] = "/usr/sbin:/usr/bin:/sbin:/bin";
        var a = psi.ArgumentList;
        a.Add("-ec");
        // The pid file comes first, so a server dying at any later point still leaves a trace to clean up.
        a.Add((pidFile is null ? "" : "echo $$ > \"$1\"; shift; ")
            + "n=$1; shift; while [ \"$n\" -gt 0 ]; do echo $$ > \"$1\"; shift; n=$((n-1)); done; exec \"$@\"");
        a.Add("sandboxvm-join");
        if (pidFile is not null)
        {
            a.Add(pidFile);
        }
        var procs = cgroup?.ProcsFiles ?? [];
        a.Add(procs.Count.ToString(CultureInfo.InvariantCulture));
        foreach (string p in procs)
        {
            a.Add(p);
        }
        return psi;
    }
}
