using System.Diagnostics;
using System.Formats.Tar;
using System.IO.Compression;
using System.Security.Cryptography;
using System.Text.Json;
using System.Text.Json.Nodes;
using SandboxVM.Images;

namespace SandboxVM.TestSupport;

/// <summary>
/// A small but real Linux image made from this host's files (no registry, no network): glibc's loader
/// and the libraries of the binaries copied in, busybox as /bin/sh, util-linux's prlimit and setpriv,
/// an /etc/passwd; written as a one-layer OCI image layout the way image tools write one.
/// </summary>
[System.Runtime.Versioning.UnsupportedOSPlatform("windows")]
internal static class OciTestImage
{
    private static readonly string[] _binaries = ["/usr/bin/prlimit", "/usr/bin/setpriv"];

    public static bool CanCreate => File.Exists("/bin/busybox") && _binaries.All(File.Exists) && File.Exists("/lib64/ld-linux-x86-64.so.2");

    /// <summary>Fills <paramref name="tree"/>; <paramref name="skip"/> names files to leave out (to make a broken image).</summary>
    public static async Task CreateTreeAsync(string tree, params string[] skip)
    {
        var files = new SortedSet<string>(StringComparer.Ordinal) { "/lib64/ld-linux-x86-64.so.2", "/bin/busybox" };
        foreach (var binary in _binaries)
        {
            files.Add(binary);
            foreach (var line in (await RunAsync("ldd", binary)).Split('\n'))
            {
                // "libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x...)"
                var arrow = line.IndexOf("=> /", StringComparison.Ordinal);
                if (arrow >= 0)
                    files.Add(line[(arrow + 3)..line.LastIndexOf(" (", StringComparison.Ordinal)]);
            }
        }
        // The agent links against libm too.
        files.Add("/lib/x86_64-linux-gnu/libm.so.6");
        foreach (var file in files.Where(f => !skip.Contains(f)))
        {
            var target = Path.Combine(tree, file.TrimStart('/'));
            Directory.CreateDirectory(Path.GetDirectoryName(target)!);
            var source = new FileInfo(file).ResolveLinkTarget(returnFinalTarget: true)?.FullName ?? file;
            File.Copy(source, target);
            File.SetUnixFileMode(target, File.GetUnixFileMode(source));
        }
        if (!skip.Contains("/bin/sh"))
            File.CreateSymbolicLink(Path.Combine(tree, "bin/sh"), "busybox");
        Directory.CreateDirectory(Path.Combine(tree, "etc"));
        if (!skip.Contains("/etc/passwd"))
            await File.WriteAllTextAsync(Path.Combine(tree, "etc/passwd"), "root:x:0:0:root:/root:/bin/sh\n");
        await File.WriteAllTextAsync(Path.Combine(tree, "etc/group"), "root:x:0:\n");
        await File.WriteAllTextAsync(Path.Combine(tree, "etc/marker"), Guid.NewGuid().ToString("N") + "\n");
    }

    /// <summary>Writes <paramref name="tree"/> as an OCI image layout at <paramref name="layout"/>, its image tagged <paramref name="tag"/>; returns the manifest digest.</summary>
    public static async Task<string> WriteLayoutAsync(string tree, string layout, string tag)
    {
        var blobs = Path.Combine(layout, "blobs", "sha256");
        Directory.CreateDirectory(blobs);
        await File.WriteAllTextAsync(Path.Combine(layout, "oci-layout"), """{"imageLayoutVersion":"1.0.0"}""");

        var tar = new MemoryStream();
        await TarFile.CreateFromDirectoryAsync(tree, tar, includeBaseDirectory: false);
        var diffId = "sha256:" + Convert.ToHexStringLower(SHA256.HashData(tar.ToArray()));
        var gz = new MemoryStream();
        await using (var zip = new GZipStream(gz, CompressionLevel.Fastest, leaveOpen: true))
            await zip.WriteAsync(tar.ToArray());
        var layer = await WriteBlobAsync(blobs, gz.ToArray());

        var config = await WriteBlobAsync(blobs, JsonSerializer.SerializeToUtf8Bytes(new JsonObject
        {
            ["architecture"] = "amd64",
            ["os"] = "linux",
            ["config"] = new JsonObject { ["Env"] = new JsonArray("PATH=/usr/bin:/bin") },
            ["rootfs"] = new JsonObject { ["type"] = "layers", ["diff_ids"] = new JsonArray(diffId) },
        }));
        var manifest = await WriteBlobAsync(blobs, JsonSerializer.SerializeToUtf8Bytes(new JsonObject
        {
            ["schemaVersion"] = 2,
            ["mediaType"] = "application/vnd.oci.image.manifest.v1+json",
            ["config"] = Descriptor("application/vnd.oci.image.config.v1+json", config),
            ["layers"] = new JsonArray(Descriptor("application/vnd.oci.image.layer.v1.tar+gzip", layer)),
        }));
        var entry = Descriptor("application/vnd.oci.image.manifest.v1+json", manifest);
        entry["annotations"] = new JsonObject { [OciLayout.RefNameAnnotation] = tag };
        await File.WriteAllTextAsync(Path.Combine(layout, "index.json"), new JsonObject
        {
            ["schemaVersion"] = 2,
            ["manifests"] = new JsonArray(entry),
        }.ToJsonString());
        return manifest.Digest;
    }

    public static bool HasTool(string name) =>
        (Environment.GetEnvironmentVariable("PATH") ?? "").Split(':').Any(d => d.Length > 0 && File.Exists(Path.Combine(d, name)));

    /// <summary>Runs a tool to its end; its stdout, or an exception with its stderr when it fails.</summary>
    public static async Task<string> RunAsync(string file, params string[] args)
    {
        var psi = new ProcessStartInfo(file) { RedirectStandardOutput = true, RedirectStandardError = true };
        foreach (var a in args)
            psi.ArgumentList.Add(a);
        using var p = Process.Start(psi)!;
        var stdout = p.StandardOutput.ReadToEndAsync();
        var stderr = p.StandardError.ReadToEndAsync();
        await p.WaitForExitAsync();
        if (p.ExitCode != 0)
            throw new InvalidOperationException($"{file} {string.Join(' ', args)} failed ({p.ExitCode}): {await stderr}");
        return await stdout;
    }

    private static JsonObject Descriptor(string mediaType, (string Digest, long Size) blob) => new()
    {
        ["mediaType"] = mediaType,
        ["digest"] = blob.Digest,
        ["size"] = blob.Size,
    };

    private static async Task<(string Digest, long Size)> WriteBlobAsync(string blobs, byte[] content)
    {
        var hex = Convert.ToHexStringLower(SHA256.HashData(content));
        await File.WriteAllBytesAsync(Path.Combine(blobs, hex), content);
        return ("sha256:" + hex, content.Length);
    }

    /// <summary>A Docker distribution registry on a free loopback port, storing in a temp dir; ended on dispose.</summary>
    public sealed class LoopbackRegistry : IAsyncDisposable
    {
        private readonly Process _process;
        private readonly string _dir;

        private LoopbackRegistry(Process process, string dir, int port)
        {
            _process = process;
            _dir = dir;
            Address = $"127.0.0.1:{port}";
        }

        public string Address { get; }

        public static bool Available => HasTool("docker-registry");

        public static async Task<LoopbackRegistry> StartAsync()
        {
            var dir = Directory.CreateTempSubdirectory("sbvm-registry-").FullName;
            var listener = new System.Net.Sockets.TcpListener(System.Net.IPAddress.Loopback, 0);
            listener.Start();
            int port = ((System.Net.IPEndPoint)listener.LocalEndpoint).Port;
            listener.Stop();
            var config = Path.Combine(dir, "config.yml");
            await File.WriteAllTextAsync(config, $"""
                version: 0.1
                log:
                  level: error
                storage:
                  filesystem:
                    rootdirectory: {dir}/data
                http:
                  addr: 127.0.0.1:{port}
                """);
            var psi = new ProcessStartInfo("docker-registry") { RedirectStandardOutput = true, RedirectStandardError = true };
            psi.ArgumentList.Add("serve");
            psi.ArgumentList.Add(config);
            var process = Process.Start(psi)!;
            process.OutputDataReceived += (_, _) => { };
            process.ErrorDataReceived += (_, _) => { };
            process.BeginOutputReadLine();
            process.BeginErrorReadLine();
            var registry = new LoopbackRegistry(process, dir, port);
            using var http = new HttpClient { Timeout = TimeSpan.FromSeconds(2) };
            for (int i = 0; i < 100 && !process.HasExited; i++)
            {
                try
                {
                    if ((await http.GetAsync($"http://{registry.Address}/v2/")).IsSuccessStatusCode)
                        return registry;
                }
                catch (HttpRequestException)
                {
                }
                await Task.Delay(100);
            }
            await registry.DisposeAsync();
            throw new InvalidOperationException("docker-registry did not start on " + registry.Address);
        }

        public async ValueTask DisposeAsync()
        {
            if (!_process.HasExited)
            {
                _process.Kill();
                await _process.WaitForExitAsync(CancellationToken.None);
            }
            _process.Dispose();
            Directory.Delete(_dir, recursive: true);
        }
    }
}
