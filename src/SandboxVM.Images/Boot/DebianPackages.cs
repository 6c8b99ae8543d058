using System.Text.RegularExpressions;

namespace SandboxVM.Images.Boot;

/// <summary>A Debian binary package at one version.</summary>
public sealed record DebianPackage(string Name, string Version)
{
    public override string ToString() => $"{Name}={Version}";
}

/// <summary>
/// Resolves, downloads and unpacks Debian packages with the host's apt (<c>apt-cache show</c>,
/// <c>apt-get download</c>, <c>dpkg-deb -x</c>): nothing is installed on the host.
/// </summary>
internal static partial class DebianPackages
{
    [GeneratedRegex("^[a-z0-9][a-z0-9+.-]+$")]
    private static partial Regex NameRegex();

    [GeneratedRegex("^[A-Za-z0-9.+~:-]+$")]
    private static partial Regex VersionRegex();

    // "name", "name (= 1.2-3)", "name (>= 1)"; alternatives are split off before this.
    [GeneratedRegex(@"^\s*([a-z0-9][a-z0-9+.-]+)(?::[a-z0-9-]+)?\s*(?:\(\s*(<<|<=|=|>=|>>)\s*([^)\s]+)\s*\))?\s*$")]
    private static partial Regex RelationRegex();

    /// <summary>The candidate stanza (what <c>apt-get install</c> would take) of each package, from one
    /// <c>apt-cache show</c>. Runs <c>apt-get update</c> once (as root) when apt does not know one of them.</summary>
    /// <exception cref="InvalidOperationException">apt does not know a package even after an update.</exception>
    public static async Task<IReadOnlyDictionary<string, IReadOnlyDictionary<string, string>>> ShowAsync(IReadOnlyList<string> names, Action<string>? onUpdate,
        CancellationToken cancellationToken, bool allowUpdate = true)
    {
        foreach (var name in names)
            ValidateName(name);
        var aptCache = FindTool("apt-cache", "apt");
        string[] args = ["show", "--no-all-versions", "--", .. names];
        string output;
        try
        {
            output = await HostProcess.OutputAsync(aptCache, args, null, null, cancellationToken).ConfigureAwait(false);
        }
        catch (ExternalCommandException) when (allowUpdate && Environment.IsPrivilegedProcess)
        {
            // Typically a container with empty package lists: fetch them once and ask again.
            onUpdate?.Invoke($"apt does not know {string.Join(", ", names)}; running apt-get update");
            await HostProcess.OutputAsync(FindTool("apt-get", "apt"), ["update", "-q"], onUpdate, null, cancellationToken).ConfigureAwait(false);
            output = await HostProcess.OutputAsync(aptCache, args, null, null, cancellationToken).ConfigureAwait(false);
        }

        var result = new Dictionary<string, IReadOnlyDictionary<string, string>>(StringComparer.Ordinal);
        foreach (var stanza in ParseStanzas(output))
        {
            if (stanza.TryGetValue("Package", out var package) && stanza.ContainsKey("Version"))
                result.TryAdd(package, stanza);
        }

        foreach (var name in names)
        {
            if (!result.ContainsKey(name))
                throw new InvalidOperationException($"apt-cache show printed no stanza for {name}.");
        }

        return result;
    }

    /// <summary>The package a metapackage such as <c>linux-image-cloud-amd64</c> points at (its first dependency
    /// whose name starts with <paramref name="prefix"/>) at the pinned version, else at its candidate.</summary>
    public static async Task<DebianPackage> DependencyOfAsync(IReadOnlyDictionary<string, string> metapackage, string prefix, Action<string>? onUpdate,
        CancellationToken cancellationToken, bool allowUpdate = true)
    {
        ArgumentNullException.ThrowIfNull(metapackage);
        var depends = metapackage.GetValueOrDefault("Depends", "");
        var relation = FindDependency(depends, prefix)
            ?? throw new InvalidOperationException($"{metapackage["Package"]} {metapackage["Version"]} depends on no {prefix}* package (Depends: {depends}).");
        if (relation.Version is not null)
            return new DebianPackage(relation.Name, relation.Version);
        var target = await ShowAsync([relation.Name], onUpdate, cancellationToken, allowUpdate).ConfigureAwait(false);
        return new DebianPackage(relation.Name, target[relation.Name]["Version"]);
    }

    /// <summary>A fingerprint of apt's package lists (names, sizes, times): when it is unchanged, so is every
    /// candidate version, and a resolution can be reused without running apt-cache (about a second each).</summary>
    public static string ListsFingerprint()
    {
        var sb = new System.Text.StringBuilder();
        foreach (var dir in new[] { "/var/lib/apt/lists", "/etc/apt/preferences.d", "/etc/apt/sources.list.d" })
        {
            if (!Directory.Exists(dir))
                continue;
            foreach (var file in new DirectoryInfo(dir).EnumerateFiles().OrderBy(f => f.Name, StringComparer.Ordinal))
                sb.Append(file.FullName).Append(' ').Append(file.Length).Append(' ').Append(file.LastWriteTimeUtc.Ticks).Append('\n');
        }

        foreach (var file in new[] { "/etc/apt/preferences", "/etc/apt/sources.list" }.Where(File.Exists))
            sb.Append(file).Append(' ').Append(File.GetLastWriteTimeUtc(file).Ticks).Append('\n');
        return sb.ToString();
    }

    /// <summary>Downloads the .deb of <paramref name="package"/> into <paramref name="directory"/> and unpacks it
    /// into <paramref name="unpackDir"/>.</summary>
    public static async Task DownloadAndUnpackAsync(DebianPackage package, string directory, string unpackDir, Action<string>? onLine, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(package);
        ValidateName(package.Name);
        if (!VersionRegex().IsMatch(package.Version))
            throw new ArgumentException($"'{package.Version}' is not a Debian version.", nameof(package));
        Directory.CreateDirectory(directory);
        var args = new List<string>();
        // As root apt drops to the _apt user, which cannot write into the cache; it would fall back with a warning.
        if (Environment.IsPrivilegedProcess)
            args.AddRange(["-o", "APT::Sandbox::User=root"]);
        args.AddRange(["download", "-q", "--", package.ToString()]);
        (await HostProcess.RunAsync(new HostCommand(FindTool("apt-get", "apt"), args) { WorkingDirectory = directory, OnLine = onLine }, cancellationToken).ConfigureAwait(false)).EnsureSuccess();

        var debs = Directory.GetFiles(directory, package.Name + "_*.deb");
        if (debs.Length != 1)
            throw new InvalidOperationException($"apt-get download {package} left {debs.Length} matching .deb files in {directory}.");
        Directory.CreateDirectory(unpackDir);
        await HostProcess.OutputAsync(FindTool("dpkg-deb", "dpkg"), ["-x", "--", debs[0], unpackDir], onLine, null, cancellationToken).ConfigureAwait(false);
        File.Delete(debs[0]);
    }

    /// <summary>Stanzas of <c>apt-cache show</c> output, fields by name (continuation lines joined).</summary>
    internal static List<Dictionary<string, string>> ParseStanzas(string output)
    {
        var stanzas = new List<Dictionary<string, string>>();
        Dictionary<string, string>? fields = null;
        string? last = null;
        foreach (var line in output.Split('\n'))
        {
            if (line.Length == 0)
            {
                fields = null;
                last = null;
                continue;
            }

            if (line[0] is ' ' or '\t')
            {
                if (fields is not null && last is not null)
                    fields[last] += "\n" + line.Trim();
                continue;
            }

            var colon = line.IndexOf(':', StringComparison.Ordinal);
            if (colon <= 0)
                continue;
            if (fields is null)
            {
                fields = new Dictionary<string, string>(StringComparer.Ordinal);
                stanzas.Add(fields);
            }

            last = line[..colon];
            fields[last] = line[(colon + 1)..].Trim();
        }

        return stanzas;
    }

    /// <summary>First relation in a Depends field naming a package that starts with <paramref name="prefix"/>;
    /// its version is set only for an exact <c>(= V)</c> pin.</summary>
    internal static (string Name, string? Version)? FindDependency(string depends, string prefix)
    {
        foreach (var alternative in depends.Split([',', '|'], StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries))
        {
            var m = RelationRegex().Match(alternative);
            if (!m.Success || !m.Groups[1].Value.StartsWith(prefix, StringComparison.Ordinal))
                continue;
            return (m.Groups[1].Value, m.Groups[2].Value == "=" ? m.Groups[3].Value : null);
        }

        return null;
    }

    /// <summary>A host tool from PATH or the sbin directories (not always in a non-root PATH).</summary>
    public static string FindTool(string name, string debianPackage) =>
        HostPath.Find(name)
        ?? throw new InvalidOperationException($"{name} not found (install {debianPackage}); it is needed to build the VM kernel and initramfs.");

    private static void ValidateName(string name)
    {
        // Also keeps a name from being read as an option.
        if (!NameRegex().IsMatch(name))
            throw new ArgumentException($"'{name}' is not a Debian package name.", nameof(name));
    }
}
