using System.Globalization;

namespace SandboxVM.Host;

/// <summary>
/// What /proc says of the host's processes: the one scan of command lines (which snapshot or cache
/// entry a running QEMU or bubblewrap maps), a process's command line (a leftover sweep kills a pid
/// only when it names its run directory) and whether a pid is alive (owners of run and build directories).
/// </summary>
public static class HostProcs
{
    /// <summary>Pids of every process whose /proc entry is listed.</summary>
    public static IEnumerable<int> Pids(string procRoot = "/proc")
    {
        List<string> dirs;
        try
        {
            dirs = Directory.EnumerateDirectories(procRoot).ToList();
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            yield break;
        }
        foreach (string dir in dirs)
        {
            if (int.TryParse(Path.GetFileName(dir), NumberStyles.None, CultureInfo.InvariantCulture, out int pid))
            {
                yield return pid;
            }
        }
    }

    /// <summary>A process's command line, arguments separated by NUL, or null when it is gone or unreadable.</summary>
    public static string? CommandLine(int pid, string procRoot = "/proc") =>
        ReadOrNull(Path.Combine(procRoot, pid.ToString(CultureInfo.InvariantCulture), "cmdline")) is { Length: > 0 } text ? text : null;

    /// <summary>Command lines (arguments separated by NUL) of every process whose /proc entry is readable.</summary>
    public static IEnumerable<string> CommandLines(string procRoot = "/proc")
    {
        foreach (int pid in Pids(procRoot))
        {
            if (CommandLine(pid, procRoot) is { } cmdline)
            {
                yield return cmdline;
            }
        }
    }

    /// <summary>True while a process with this pid exists (a zombie included).</summary>
    public static bool IsAlive(int pid) => pid > 0 && Directory.Exists($"/proc/{pid.ToString(CultureInfo.InvariantCulture)}");

    /// <summary>True while the pid is alive and not a zombie (our own child not yet reaped counts as gone).</summary>
    public static bool IsRunning(int pid) =>
        ReadOrNull($"/proc/{pid.ToString(CultureInfo.InvariantCulture)}/stat") is { } stat && !stat.Contains(") Z ", StringComparison.Ordinal);

    /// <summary>The pid written in <paramref name="path"/> (a pid or owner file), or null.</summary>
    public static int? ReadPid(string path) =>
        int.TryParse(ReadOrNull(path)?.Trim(), NumberStyles.None, CultureInfo.InvariantCulture, out int pid) && pid > 0 ? pid : null;

    /// <summary>The file's text, or null when it is gone or unreadable (a /proc entry of a process that ended).</summary>
    public static string? ReadOrNull(string path)
    {
        try
        {
            return File.ReadAllText(path);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            return null;
        }
    }
}
