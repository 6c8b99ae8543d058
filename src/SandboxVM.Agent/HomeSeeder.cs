using SandboxVM.Agent.Files;

namespace SandboxVM.Agent;

/// <summary>
/// Copies a template's skeleton (e.g. a prebuilt matplotlib font cache) into the writable home
/// directory at start, keeping files that already exist there. It writes as the user given to
/// <see cref="SeedAsync"/> (the sandbox user when the agent is root), so what it creates is the user's
/// (matplotlib updates its cache under MPLCONFIGDIR, for one) and it never writes through anything the
/// user could have put there. The skeleton itself is the image's, read as the agent.
/// </summary>
internal static class HomeSeeder
{
    public static async Task SeedAsync(string skel, string home, SandboxUser user)
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
                await UserFiles.MakeDirectoryAsync(user, pair.To, parents: true);
                foreach (var entry in new DirectoryInfo(pair.From).EnumerateFileSystemInfos())
                {
                    string target = Path.Combine(pair.To, entry.Name);
                    if (entry.LinkTarget is { } link)
                    {
                        await UserFiles.CreateSymlinkAsync(user, link, target);
                    }
                    else if (entry is DirectoryInfo)
                    {
                        pending.Push((entry.FullName, target));
                    }
                    else if (await UserFiles.OpenWriteAsync(user, target, (int)File.GetUnixFileMode(entry.FullName), keepExisting: true) is { } handle)
                    {
                        await using var to = new FileStream(handle, FileAccess.Write, bufferSize: 0);
                        await using var from = new FileStream(entry.FullName, FileMode.Open, FileAccess.Read, FileShare.Read, bufferSize: 0);
                        await from.CopyToAsync(to);
                    }
                }
            }
            catch (Exception e) when (AgentException.IsIo(e) || e is AgentException)
            {
                // A half-seeded home is still usable: say so and go on.
                AgentLog.Write($"cannot seed {pair.To} from {pair.From}: {e.Message}");
            }
        }
    }
}
