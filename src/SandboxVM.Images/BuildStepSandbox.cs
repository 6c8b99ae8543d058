using System.Diagnostics;
using System.Globalization;
using System.Text;
using System.Text.Json;

namespace SandboxVM.Images;

/// <summary>
/// Runs a template's build steps as root of a user namespace, never as host root. Ids 0..65535 inside
/// are host ids B..B+65535, B an unprivileged range picked per build; the step keeps every power over
/// its tree (chown to any id, apt dropping to _apt) and none over the host: no device nodes, no host
/// sysctls, no mounts outside its own namespaces, no host file it could not read as an unprivileged uid.
/// <para>
/// The tree's owners are shifted into the range before the first step and back after the last one, so
/// the finished rootfs is owned by root as before. chown clears set-uid bits, which are put back; file
/// capabilities (security.capability) are not kept (no_new_privs in every sandbox ignores them anyway).
/// </para>
/// </summary>
internal static class BuildStepSandbox
{
    /// <summary>Ids mapped into a step's user namespace (0..65535, what a Debian system uses).</summary>
    public const int IdCount = 65536;

    private const int SetIdBits = 0xC00;

    /// <summary>
    /// Maps every owner and group id in [<paramref name="from"/>, +<see cref="IdCount"/>) under
    /// <paramref name="root"/> to the same offset from <paramref name="to"/> (symlinks are not followed;
    /// set-uid and set-gid bits survive). An id already in the target range is refused: it could not be
    /// told apart on the way back.
    /// </summary>
    /// <returns>How many entries changed.</returns>
    public static int ShiftOwners(string root, uint from, uint to, CancellationToken cancellationToken)
    {
        int changed = 0;
        var seen = new HashSet<(ulong, ulong)>();
        var pending = new Stack<string>();
        pending.Push(root);
        while (pending.Count > 0)
        {
            cancellationToken.ThrowIfCancellationRequested();
            string path = pending.Pop();
            if (HostNative.Stat(path, followLinks: false) is not { } owner)
            {
                continue;
            }
            // A hard-linked file is shifted once.
            if (owner.Links > 1 && !owner.IsDirectory && !seen.Add((owner.Device, owner.Inode)))
            {
                continue;
            }
            if (InRange((uint)owner.Uid, to) || InRange((uint)owner.Gid, to))
            {
                throw new InvalidDataException($"{path} is owned by {(uint)owner.Uid}:{(uint)owner.Gid}, inside the id range {to}..{to + IdCount - 1} the build steps run as");
            }
            uint uid = InRange((uint)owner.Uid, from) ? (uint)owner.Uid - from + to : (uint)owner.Uid;
            uint gid = InRange((uint)owner.Gid, from) ? (uint)owner.Gid - from + to : (uint)owner.Gid;
            if (uid != (uint)owner.Uid || gid != (uint)owner.Gid)
            {
                HostNative.LChown(path, uid, gid);
                if (owner.IsRegular && (owner.Mode & SetIdBits) != 0)
                {
                    HostNative.Chmod(path, owner.Mode);
                }
                changed++;
            }
            if (owner.IsDirectory)
            {
                foreach (string entry in Directory.EnumerateFileSystemEntries(path))
                {
                    pending.Push(entry);
                }
            }
        }
        return changed;
    }

    private static bool InRange(uint id, uint first) => id >= first && id - first < IdCount;

    /// <summary>
    /// The command that runs <paramref name="step"/> with <c>sh -ec</c> in <paramref name="tree"/>. As
    /// host root, in a mount namespace of its own, the tree is bound onto <paramref name="stage"/> (an
    /// empty directory anyone may enter: the build's ids need not be able to enter the cache's
    /// directories above the tree). Then it drops to host uid <paramref name="idBase"/>, and bubblewrap
    /// makes a user namespace, tells its first process's pid on stdout (--info-fd) and waits on stdin
    /// (--userns-block-fd) until <see cref="MapIdsAsync"/> has written the id maps.
    /// </summary>
    public static (string FileName, List<string> Arguments) Command(string unshare, string bwrap, string setpriv, string tree, string stage, string step,
        uint idBase, bool network)
    {
        var args = new List<string>
        {
            "--mount", "--propagation", "private", "--",
            "/bin/sh", "-c", "t=$0; s=$1; shift; mount --bind \"$t\" \"$s\" && exec \"$@\" 4>&1", tree, stage,
            setpriv, $"--reuid={idBase}", $"--regid={idBase}", "--clear-groups", "--",
            bwrap,
            "--unshare-user", "--userns-block-fd", "0", "--info-fd", "4",
            "--uid", "0", "--gid", "0", "--cap-add", "ALL",
            "--bind", stage, "/",
            "--proc", "/proc",
            "--dev", "/dev",
            "--tmpfs", "/tmp",
            "--unshare-ipc", "--unshare-pid", "--unshare-uts", "--unshare-cgroup-try",
            "--hostname", "sandboxvm-build",
            "--die-with-parent",
            "--chdir", "/",
        };
        if (!network)
            args.Add("--unshare-net");
        args.AddRange(["/bin/sh", "-ec", step]);
        return (unshare, args);
    }

    /// <summary>An empty directory that anyone may enter but only root write, for <see cref="Command"/>'s stage.</summary>
    public static DirectoryInfo CreateStage()
    {
        if (OperatingSystem.IsWindows())
            throw new PlatformNotSupportedException("Images are built on Linux only.");
        var stage = Directory.CreateTempSubdirectory("sandboxvm-step-");
        File.SetUnixFileMode(stage.FullName, UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute
            | UnixFileMode.GroupExecute | UnixFileMode.OtherExecute);
        return stage;
    }

    /// <summary>
    /// Reads bubblewrap's info (the namespace's first process), maps ids 0..65535 of its user namespace
    /// to <paramref name="idBase"/>.., and lets it go on. Only root can write a map of more than one id
    /// for another process, which is why the server does it rather than bubblewrap.
    /// </summary>
    public static async Task MapIdsAsync(Process process, uint idBase, CancellationToken cancellationToken)
    {
        var info = new StringBuilder();
        while (await process.StandardOutput.ReadLineAsync(cancellationToken).ConfigureAwait(false) is { } line)
        {
            info.Append(line).Append('\n');
            if (line == "}")
                break;
        }
        int child;
        try
        {
            using var json = JsonDocument.Parse(info.ToString());
            child = json.RootElement.GetProperty("child-pid").GetInt32();
        }
        catch (Exception e) when (e is JsonException or KeyNotFoundException or InvalidOperationException or FormatException)
        {
            throw new InvalidOperationException($"bubblewrap did not report its sandbox's pid (it said: {info.ToString().Trim()})", e);
        }
        // The pid must be bubblewrap's own child: never write the maps of a process that merely reused a number.
        string status = await File.ReadAllTextAsync($"/proc/{child}/status", cancellationToken).ConfigureAwait(false);
        string? parent = status.Split('\n').FirstOrDefault(l => l.StartsWith("PPid:", StringComparison.Ordinal))?[5..].Trim();
        if (parent != process.Id.ToString(CultureInfo.InvariantCulture))
            throw new InvalidOperationException($"process {child} is not bubblewrap's child (its parent is {parent})");
        string map = $"0 {idBase} {IdCount}\n";
        await File.WriteAllTextAsync($"/proc/{child}/uid_map", map, cancellationToken).ConfigureAwait(false);
        await File.WriteAllTextAsync($"/proc/{child}/gid_map", map, cancellationToken).ConfigureAwait(false);
        await process.StandardInput.BaseStream.WriteAsync(new byte[] { 1 }, cancellationToken).ConfigureAwait(false);
        process.StandardInput.Close();
    }
}
