using System.Globalization;
using System.Text;

namespace SandboxVM.Images;

// The base phase: mmdebstrap (or an OCI image unpacked), the sandbox user and directories, then the
// template's build steps.
public sealed partial class ImageBuilder
{
    private const string BuildPath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

    // Docs, man pages and translations are dead weight in a sandbox; licences stay.
    private static readonly string[] _dpkgFilters =
    [
        "path-exclude=/usr/share/man/*",
        "path-exclude=/usr/share/info/*",
        "path-exclude=/usr/share/doc/*",
        "path-include=/usr/share/doc/*/copyright",
        "path-exclude=/usr/share/locale/*/LC_MESSAGES/*.mo",
    ];

    private static readonly Dictionary<string, string> _buildEnvironment = new(StringComparer.Ordinal)
    {
        ["PATH"] = BuildPath,
        ["HOME"] = "/root",
        ["LANG"] = "C.UTF-8",
        ["DEBIAN_FRONTEND"] = "noninteractive",
    };

    private async Task BuildBaseAsync(ImageSpec spec, string key, string tmp, IProgress<string>? progress, CancellationToken cancellationToken)
    {
        if (!Environment.IsPrivilegedProcess)
            throw new InvalidOperationException("Building a rootfs needs root (mmdebstrap --mode=root or umoci keeping file owners, chroot, chown).");

        var started = DateTimeOffset.UtcNow;
        string? ociDigest = null;
        Directory.CreateDirectory(tmp);
        var tree = Path.Combine(tmp, "rootfs");
        var logStream = File.Create(Path.Combine(tmp, "build.log"));
        await using (logStream.ConfigureAwait(false))
        {
            var log = new StreamWriter(logStream, new UTF8Encoding(false)) { AutoFlush = true };
            await using (log.ConfigureAwait(false))
            {
                void OnLine(string line)
                {
                    log.WriteLine(line);
                    progress?.Report(line);
                }

                void Phase(string message)
                {
                    OnLine($"[base] {message}");
                    LogBaseStep(spec.Name, message);
                }

                if (spec.Oci is { } oci)
                    ociDigest = await UnpackOciAsync(oci, tmp, tree, OnLine, Phase, cancellationToken).ConfigureAwait(false);
                else
                    await DebootstrapAsync(spec, tree, OnLine, Phase, cancellationToken).ConfigureAwait(false);

                Phase($"user {ImageLayout.UserName} ({ImageLayout.UserId}:{ImageLayout.GroupId}) and directories");
                await PrepareLayoutAsync(tree, cancellationToken).ConfigureAwait(false);

                if (spec.BuildSteps.Count > 0)
                {
                    // Steps run as root of a user namespace whose ids are an unprivileged host range: the
                    // tree's owners move into that range for the steps and back afterwards.
                    var bwrap = HostPath.Find("bwrap")
                        ?? throw new InvalidOperationException("build steps need bubblewrap (apt-get install bubblewrap): they never run as host root");
                    var setpriv = HostPath.Find("setpriv")
                        ?? throw new InvalidOperationException("build steps need setpriv (util-linux)");
                    var unshare = HostPath.Find("unshare")
                        ?? throw new InvalidOperationException("build steps need unshare (util-linux)");
                    var idBase = (uint)_options.BuildStepIdBase + (uint)Random.Shared.Next(_options.BuildStepIdRanges) * BuildStepSandbox.IdCount;
                    var watch = System.Diagnostics.Stopwatch.StartNew();
                    var shifted = BuildStepSandbox.ShiftOwners(tree, 0, idBase, cancellationToken);
                    Phase($"build steps as root of a user namespace (host ids {idBase}..{idBase + BuildStepSandbox.IdCount - 1}; {shifted} owners shifted in {watch.ElapsedMilliseconds} ms)");
                    var stage = BuildStepSandbox.CreateStage();
                    try
                    {
                        for (var i = 0; i < spec.BuildSteps.Count; i++)
                        {
                            var step = spec.BuildSteps[i];
                            Phase($"build step {i + 1}/{spec.BuildSteps.Count}: {FirstLine(step)}");
                            var (file, args) = BuildStepSandbox.Command(unshare, bwrap, setpriv, tree, stage.FullName, step, idBase, _options.BuildStepsNetwork);
                            await HostProcess.OutputAsync(file, args, OnLine, _buildEnvironment, cancellationToken,
                                (process, ct) => BuildStepSandbox.MapIdsAsync(process, idBase, ct)).ConfigureAwait(false);
                        }
                    }
                    finally
                    {
                        // Empty outside the steps' mount namespaces.
                        stage.Delete();
                    }
                    watch.Restart();
                    shifted = BuildStepSandbox.ShiftOwners(tree, idBase, 0, cancellationToken);
                    Phase($"owners shifted back to host ids ({shifted} entries in {watch.ElapsedMilliseconds} ms)");
                }

                // Build steps may fill the skeleton as root; the agent copies it for uid 1000.
                TreeOps.EnsureRealDirectories(tree, "opt/sandboxvm", ImageLayout.SkelDir);
                await HostProcess.OutputAsync("chown", ["-R", "-h", $"{ImageLayout.UserId}:{ImageLayout.GroupId}", "--", Path.Combine(tree, ImageLayout.SkelDir.TrimStart('/'))],
                    OnLine, null, cancellationToken).ConfigureAwait(false);
            }
        }

        await WriteManifestAsync(Path.Combine(tmp, "image.json"), w =>
        {
            w.WriteString("phase", "base");
            w.WriteString("key", key);
            w.WriteString("name", spec.Name);
            w.WriteString("source_type", spec.SourceType);
            if (spec.Oci is { } oci)
            {
                w.WriteString(oci.LayoutPath is null ? "reference" : "layout", oci.LayoutPath ?? oci.Reference);
                w.WriteString("manifest_digest", ociDigest);
            }
            else
            {
                w.WriteString("suite", spec.Suite);
            }
            w.WriteStartArray("packages");
            foreach (var p in spec.Packages)
                w.WriteStringValue(p);
            w.WriteEndArray();
            w.WriteStartArray("build_steps");
            foreach (var s in spec.BuildSteps)
                w.WriteStringValue(s);
            w.WriteEndArray();
            w.WriteNumber("build_seconds", Math.Round((DateTimeOffset.UtcNow - started).TotalSeconds, 1));
        }, cancellationToken).ConfigureAwait(false);
    }

    private async Task DebootstrapAsync(ImageSpec spec, string tree, Action<string> onLine, Action<string> phase, CancellationToken cancellationToken)
    {
        var mmdebstrap = HostPath.Find("mmdebstrap") ?? throw new InvalidOperationException("mmdebstrap not found in PATH (apt-get install mmdebstrap).");
        phase($"mmdebstrap {spec.Suite} minbase + {spec.Packages.Count} packages");
        var args = MmdebstrapArguments(spec, tree);
        // A private mount namespace: whatever mmdebstrap mounts into the tree (proc, dev, sys)
        // disappears with it, even if it is killed halfway.
        var unshare = HostPath.Find("unshare");
        if (unshare is not null)
            await HostProcess.OutputAsync(unshare, ["--mount", "--propagation", "private", "--", mmdebstrap, .. args], onLine, null, cancellationToken).ConfigureAwait(false);
        else
            await HostProcess.OutputAsync(mmdebstrap, args, onLine, null, cancellationToken).ConfigureAwait(false);
    }

    private List<string> MmdebstrapArguments(ImageSpec spec, string tree)
    {
        var args = new List<string>
        {
            "--mode=root",
            "--variant=minbase",
            "--format=directory",
            "--aptopt=APT::Install-Recommends \"false\"",
            "--aptopt=APT::Install-Suggests \"false\"",
        };
        args.AddRange(_dpkgFilters.Select(f => "--dpkgopt=" + f));
        if (spec.Packages.Count > 0)
            args.Add("--include=" + string.Join(',', spec.Packages.Distinct(StringComparer.Ordinal).Order(StringComparer.Ordinal)));
        args.Add(spec.Suite);
        args.Add(tree);
        // Explicit sources: without them mmdebstrap may read sources from stdin.
        args.Add($"deb {_options.DebianMirror} {spec.Suite} main");
        if (spec.Suite is not ("sid" or "unstable" or "experimental" or "rc-buggy"))
        {
            args.Add($"deb {_options.DebianMirror} {spec.Suite}-updates main");
            args.Add($"deb {_options.DebianSecurityMirror} {spec.Suite}-security main");
        }

        return args;
    }

    /// <summary>Adds the unprivileged user and the directories the agent and runtimes mount over.</summary>
    private static async Task PrepareLayoutAsync(string tree, CancellationToken cancellationToken)
    {
        if (OperatingSystem.IsWindows())
            throw new PlatformNotSupportedException("Images are built on Linux only.");
        TreeOps.EnsureRealDirectories(tree, "etc", "home", "tmp");
        var etc = Path.Combine(tree, "etc");
        var user = ImageLayout.UserName;
        var uid = ImageLayout.UserId.ToString(CultureInfo.InvariantCulture);
        var gid = ImageLayout.GroupId.ToString(CultureInfo.InvariantCulture);

        // Written directly rather than with useradd: no dependency on the passwd package, same result everywhere.
        var passwd = await File.ReadAllLinesAsync(Path.Combine(etc, "passwd"), cancellationToken).ConfigureAwait(false);
        if (!passwd.Any(l => l.StartsWith(user + ":", StringComparison.Ordinal)))
        {
            if (passwd.Select(l => l.Split(':')).FirstOrDefault(f => f.Length > 2 && f[2] == uid) is { } taken)
                throw new InvalidOperationException($"uid {uid} is already used by '{taken[0]}' in the rootfs.");
            await AppendLineAsync(Path.Combine(etc, "passwd"), $"{user}:x:{uid}:{gid}:SandboxVM:{ImageLayout.HomeDir}:/bin/bash", cancellationToken).ConfigureAwait(false);
            await AppendLineAsync(Path.Combine(etc, "group"), $"{user}:x:{gid}:", cancellationToken).ConfigureAwait(false);
            // Locked password: nobody logs in, the agent switches to the uid directly.
            await AppendLineAsync(Path.Combine(etc, "shadow"), $"{user}:!::0:99999:7:::", cancellationToken).ConfigureAwait(false);
            await AppendLineAsync(Path.Combine(etc, "gshadow"), $"{user}:!::", cancellationToken).ConfigureAwait(false);
        }

        // mmdebstrap copies the build host's resolv.conf and hostname in; an image must not carry them.
        // Unlink first so that a symlink there is replaced, never followed out of the tree.
        var fileMode = UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.GroupRead | UnixFileMode.OtherRead;
        foreach (var (name, content) in new[]
        {
            ("hostname", "sandbox\n"),
            ("hosts", "127.0.0.1\tlocalhost\n127.0.1.1\tsandbox\n::1\tlocalhost ip6-localhost ip6-loopback\n"),
            ("resolv.conf", "# No DNS inside the sandbox: network access, where allowed, goes through the host's proxy.\n"),
        })
        {
            var path = Path.Combine(etc, name);
            File.Delete(path);
            await File.WriteAllTextAsync(path, content, cancellationToken).ConfigureAwait(false);
            File.SetUnixFileMode(path, fileMode);
        }

        var rw = UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute
            | UnixFileMode.GroupRead | UnixFileMode.GroupExecute | UnixFileMode.OtherRead | UnixFileMode.OtherExecute;
        string[] owned = [ImageLayout.HomeDir, ImageLayout.OutputsDir, ImageLayout.SkelDir];
        foreach (var dir in owned.Append(ImageLayout.BinDir))
            Directory.CreateDirectory(Path.Combine(tree, dir.TrimStart('/')), rw);
        await HostProcess.OutputAsync("chown", ["-h", $"{uid}:{gid}", "--", .. owned.Select(d => Path.Combine(tree, d.TrimStart('/')))],
            null, null, cancellationToken).ConfigureAwait(false);
    }

    private static async Task AppendLineAsync(string path, string line, CancellationToken cancellationToken)
    {
        var text = File.Exists(path) ? await File.ReadAllTextAsync(path, cancellationToken).ConfigureAwait(false) : "";
        var prefix = text.Length > 0 && !text.EndsWith('\n') ? "\n" : "";
        await File.AppendAllTextAsync(path, prefix + line + "\n", cancellationToken).ConfigureAwait(false);
    }

    private static string FirstLine(string step)
    {
        var line = step.Trim().Split('\n')[0];
        return line.Length > 100 ? line[..100] + "..." : line;
    }
}
