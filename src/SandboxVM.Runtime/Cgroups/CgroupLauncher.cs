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
    /// <summary>
    /// Waits for end of file on the launcher's stdin, then SIGKILLs its parent (the exec'd command, whose
    /// pid is the launcher's) if that is still its parent: a command that has exited, and whose pid may
    /// have been reused, is never signalled. /proc/$$/stat field 4 is the current parent; the comm is "sh".
    /// </summary>
    private const string Watcher =
        "while read -r _; do :; done; read -r _ _ _ parent _ < /proc/$$/stat; [ \"$parent\" = \"$PPID\" ] && kill -KILL \"$PPID\"";

    /// <param name="cgroup">The group to join, or null.</param>
    /// <param name="pidFile">Where the launcher writes its pid (the command's, after exec) first.</param>
    /// <param name="endWithServer">
    /// Make the command die with this server, whatever kills the server: the launcher's stdin is a pipe
    /// whose only write end this process holds (the runtime keeps <c>StandardInput</c> open for the
    /// command's life), and a watcher forked in the cgroup before the exec kills the command when the
    /// pipe reaches end of file, which the kernel brings about when this process dies. Not
    /// PR_SET_PDEATHSIG: it fires when the forking thread exits (a .NET thread-pool thread, any time)
    /// and a uid change (setpriv) clears it. The command's stdin becomes /dev/null.
    /// </param>
    public static ProcessStartInfo StartInfo(Cgroup? cgroup, string? pidFile = null, bool endWithServer = false)
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
        // The watcher is forked after the cgroup is joined, so the cgroup's teardown ends it too.
        a.Add((pidFile is null ? "" : "echo $$ > \"$1\"; shift; ")
            + "n=$1; shift; while [ \"$n\" -gt 0 ]; do echo $$ > \"$1\"; shift; n=$((n-1)); done; "
            + (endWithServer ? $"exec 3<&0 </dev/null; /bin/sh -c '{Watcher}' sandboxvm-watch <&3 3<&- >/dev/null 2>&1 & exec 3<&-; " : "")
            + "exec \"$@\"");
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
