namespace SandboxVM.Testing;

/// <summary>
/// Puts the agent where a sandbox of the gvisor or local runtime can run it: their sandboxes see the
/// host's root but fresh tmpfs on /tmp and /home, so an agent under those (a checkout cloned into /tmp, as
/// CI may do) would not be there.
/// </summary>
internal static class AgentStaging
{
    /// <summary>Whether a sandbox's own /tmp or /home would hide <paramref name="path"/>.</summary>
    public static bool IsHidden(string path) =>
        path.StartsWith("/tmp/", StringComparison.Ordinal) || path.StartsWith("/home/", StringComparison.Ordinal);

    /// <summary>
    /// Copies the files of <paramref name="agent"/>'s directory (a dll needs its dependencies next to it),
    /// modes kept, into <paramref name="directory"/>; the copy of <paramref name="agent"/>.
    /// </summary>
    public static string CopyTo(string agent, string directory)
    {
        string source = Path.GetDirectoryName(agent)!;
        foreach (string file in Directory.EnumerateFiles(source, "*", SearchOption.AllDirectories))
        {
            string target = Path.Combine(directory, Path.GetRelativePath(source, file));
            Directory.CreateDirectory(Path.GetDirectoryName(target)!);
            File.Copy(file, target, overwrite: true);
            if (!OperatingSystem.IsWindows())
            {
                File.SetUnixFileMode(target, File.GetUnixFileMode(file));
            }
        }
        return Path.Combine(directory, Path.GetFileName(agent));
    }
}
