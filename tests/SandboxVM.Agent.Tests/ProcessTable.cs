namespace SandboxVM.Agent.Tests;

/// <summary>Reads /proc to find what is still running.</summary>
internal static class ProcessTable
{
    /// <summary>Pids of live (not zombie) processes in process group <paramref name="pgid"/>.</summary>
    public static List<int> LiveMembersOf(int pgid)
    {
        var members = new List<int>();
        foreach (string dir in Directory.EnumerateDirectories("/proc"))
        {
            if (!int.TryParse(Path.GetFileName(dir), out int pid))
            {
                continue;
            }
            string stat;
            try
            {
                stat = File.ReadAllText(Path.Combine(dir, "stat"));
            }
            catch (IOException)
            {
                continue; // exited while we looked
            }
            // pid (comm) state ppid pgrp ... ; comm may contain spaces and parentheses.
            string[] fields = stat[(stat.LastIndexOf(')') + 2)..].Split(' ');
            if (fields[0] != "Z" && fields[0] != "X" && int.Parse(fields[2]) == pgid)
            {
                members.Add(pid);
            }
        }
        return members;
    }

    /// <summary>Pids of the children of <paramref name="parent"/>, zombies included.</summary>
    public static List<int> ChildrenOf(int parent)
    {
        var children = new List<int>();
        foreach (string dir in Directory.EnumerateDirectories("/proc"))
        {
            if (!int.TryParse(Path.GetFileName(dir), out int pid))
            {
                continue;
            }
            try
            {
                string stat = File.ReadAllText(Path.Combine(dir, "stat"));
                if (int.Parse(stat[(stat.LastIndexOf(')') + 2)..].Split(' ')[1]) == parent)
                {
                    children.Add(pid);
                }
            }
            catch (IOException)
            {
                // exited while we looked
            }
        }
        return children;
    }

    /// <summary>
    /// Every process (zombies included) in the PID namespace of <paramref name="pid"/>, with its real uid.
    /// </summary>
    public static List<(int Pid, int Uid)> InPidNamespaceOf(int pid)
    {
        string? ns = NamespaceOf(pid) ?? throw new InvalidOperationException($"process {pid} is gone");
        var found = new List<(int, int)>();
        foreach (string dir in Directory.EnumerateDirectories("/proc"))
        {
            if (!int.TryParse(Path.GetFileName(dir), out int other) || NamespaceOf(other) != ns)
            {
                continue;
            }
            try
            {
                string? uidLine = File.ReadLines(Path.Combine(dir, "status")).FirstOrDefault(l => l.StartsWith("Uid:", StringComparison.Ordinal));
                if (uidLine is not null)
                {
                    found.Add((other, int.Parse(uidLine.Split('\t', StringSplitOptions.RemoveEmptyEntries)[1], System.Globalization.CultureInfo.InvariantCulture)));
                }
            }
            catch (IOException)
            {
                // exited while we looked
            }
        }
        return found;
    }

    private static string? NamespaceOf(int pid)
    {
        try
        {
            return new FileInfo($"/proc/{pid}/ns/pid").LinkTarget;
        }
        catch (IOException)
        {
            return null;
        }
        catch (UnauthorizedAccessException)
        {
            return null;
        }
    }

    public static bool IsAlive(int pid)
    {
        try
        {
            string stat = File.ReadAllText($"/proc/{pid}/stat");
            string state = stat[(stat.LastIndexOf(')') + 2)..].Split(' ')[0];
            return state is not ("Z" or "X");
        }
        catch (IOException)
        {
            return false;
        }
    }

    /// <summary>Polls <paramref name="condition"/> until it holds or the deadline passes.</summary>
    public static async Task<bool> WaitUntilAsync(Func<bool> condition, TimeSpan deadline, CancellationToken cancellationToken)
    {
        var stopwatch = System.Diagnostics.Stopwatch.StartNew();
        while (!condition())
        {
            if (stopwatch.Elapsed > deadline)
            {
                return false;
            }
            await Task.Delay(20, cancellationToken);
        }
        return true;
    }
}
