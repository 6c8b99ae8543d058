namespace SandboxVM.Agent;

/// <summary>
/// Copies a template's skeleton (e.g. a prebuilt matplotlib font cache) into the writable home
/// directory at start, keeping files that already exist there.
/// </summary>
internal static class HomeSeeder
{
    public static void Seed(string skel, string home)
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
                Directory.CreateDirectory(pair.To);
                foreach (var entry in new DirectoryInfo(pair.From).EnumerateFileSystemInfos())
                {
                    string target = Path.Combine(pair.To, entry.Name);
                    if (entry.LinkTarget is { } link)
                    {
                        if (!Path.Exists(target) && new FileInfo(target).LinkTarget is null)
                        {
                            File.CreateSymbolicLink(target, link);
                        }
                    }
                    else if (entry is DirectoryInfo)
                    {
                        pending.Push((entry.FullName, target));
                    }
                    else if (!File.Exists(target))
                    {
                        File.Copy(entry.FullName, target);
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
