using System.Text;

namespace SandboxVM.Images;

/// <summary>File-system helpers for rootfs trees that are owned by other uids and may, after a crash,
/// still have something mounted inside them.</summary>
internal static class TreeOps
{
    /// <summary>Deletes a tree (or file) without ever crossing into another file system: a bind mount
    /// of the host's /dev or /proc left inside a half-built rootfs must not be emptied.</summary>
    public static async Task DeleteAsync(string path)
    {
        var full = Path.GetFullPath(path).TrimEnd('/');
        if (!Path.Exists(full) && new FileInfo(full).LinkTarget is null)
            return;
        if (MountsUnder(full).FirstOrDefault() is { } mount)
            throw new InvalidOperationException($"Refusing to delete {full}: {mount} is mounted inside it; unmount it first.");

        // rm instead of Directory.Delete: --one-file-system is the safety net should the check above race.
        await HostProcess.OutputAsync("rm", ["-rf", "--one-file-system", "--", full], null, null, CancellationToken.None)
            .ConfigureAwait(false);
    }

    /// <summary>Mount points at or below <paramref name="path"/>, from /proc/self/mountinfo.</summary>
    public static IEnumerable<string> MountsUnder(string path)
    {
        const string mountInfo = "/proc/self/mountinfo";
        if (!File.Exists(mountInfo))
            yield break;
        foreach (var line in File.ReadLines(mountInfo))
        {
            // Fields: id parent major:minor root mount-point ...
            var fields = line.Split(' ');
            if (fields.Length < 5)
                continue;
            var mountPoint = Unescape(fields[4]);
            if (mountPoint == path || mountPoint.StartsWith(path + "/", StringComparison.Ordinal))
                yield return mountPoint;
        }
    }

    /// <summary>Throws unless each path below <paramref name="root"/> is a real directory, so that
    /// writing through it from the host cannot follow a symlink out of the tree.</summary>
    public static void EnsureRealDirectories(string root, params string[] relativePaths)
    {
        foreach (var rel in relativePaths)
        {
            var full = Path.Combine(root, rel.TrimStart('/'));
            var info = new DirectoryInfo(full);
            if (info.LinkTarget is not null)
                throw new InvalidOperationException($"/{rel.TrimStart('/')} in the rootfs is a symbolic link ({info.LinkTarget}); it must be a directory.");
            if (!info.Exists)
                throw new InvalidOperationException($"/{rel.TrimStart('/')} is missing from the rootfs.");
        }
    }

    // mountinfo escapes space, tab, newline and backslash as \ooo.
    private static string Unescape(string s)
    {
        if (!s.Contains('\\', StringComparison.Ordinal))
            return s;
        var sb = new StringBuilder(s.Length);
        for (var i = 0; i < s.Length; i++)
        {
            if (s[i] == '\\' && i + 3 < s.Length && s[(i + 1)..(i + 4)].All(c => c is >= '0' and <= '7'))
            {
                sb.Append((char)Convert.ToInt32(s[(i + 1)..(i + 4)], 8));
                i += 3;
            }
            else
            {
                sb.Append(s[i]);
            }
        }

        return sb.ToString();
    }

    /// <summary>
    /// The host path of <paramref name="path"/> as seen from inside the tree at <paramref name="root"/>
    /// (symlinks followed, absolute ones relative to the tree, never out of it), or null when nothing
    /// is there or the links loop.
    /// </summary>
    public static string? ResolveInTree(string root, string path)
    {
        var pending = new Queue<string>(path.Split('/', StringSplitOptions.RemoveEmptyEntries));
        var current = new List<string>();
        for (int hops = 0; pending.TryDequeue(out var part);)
        {
            if (part == ".")
                continue;
            if (part == "..")
            {
                if (current.Count > 0)
                    current.RemoveAt(current.Count - 1);
                continue;
            }
            var host = Path.Combine(root, Path.Combine([.. current, part]));
            var info = new FileInfo(host);
            if (info.LinkTarget is { } target)
            {
                if (++hops > 40)
                    return null;
                if (target.StartsWith('/'))
                    current.Clear();
                var rest = pending.ToList();
                pending.Clear();
                foreach (var p in target.Split('/', StringSplitOptions.RemoveEmptyEntries).Concat(rest))
                    pending.Enqueue(p);
                continue;
            }
            if (!info.Exists && !Directory.Exists(host))
                return null;
            current.Add(part);
        }
        return Path.Combine(root, Path.Combine([.. current]));
    }
}
