namespace SandboxVM.Agent;

/// <summary>
/// Copies a template's skeleton (e.g. a prebuilt matplotlib font cache) into the writable home
/// directory at start, keeping files that already exist there. What it creates belongs to
/// the user given to <see cref="Seed"/> (the sandbox user when the agent is root), so a program
/// can write to it (matplotlib updates its cache under MPLCONFIGDIR, for one).
/// </summary>
internal static class HomeSeeder
{
    public static void Seed(string skel, string home, SandboxUser user)
    {
        if (!Directory.Exists(skel))
        {
            return;
        }
        var pending = new Stack<(string From, string To)>();
        pending.Push((skel, home));
        while (pending.TryPop(out var pair))
        {
            try
            {
                user.CreateDirectory(pair.To);
                foreach (var entry in new DirectoryInfo(pair.From).EnumerateFileSystemInfos())
                {
                    string target = Path.Combine(pair.To, entry.Name);
                    if (entry.LinkTarget is { } link)
                    {
                        if (!Path.Exists(target) && new FileInfo(target).LinkTarget is null)
                        {
                            File.CreateSymbolicLink(target, link);
                            user.Own(target);
                        }
                    }
                    else if (entry is DirectoryInfo)
                    {
                        pending.Push((entry.FullName, target));
                    }
                    else if (!File.Exists(target))
                    {
                        File.Copy(entry.FullName, target);
                        user.Own(target);
                    }
                }
            }
            catch (Exception e) when (AgentException.IsIo(e))
            {
                // A half-seeded home is still usable: say so and go on.
                AgentLog.Write($"cannot seed {pair.To} from {pair.From}: {e.Message}");
            }
        }
    }
}
