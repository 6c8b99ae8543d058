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
            foreach (var line in (await HostTools.RunAsync("ldd", binary)).Split('\n'))
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

    /// <summary>
    /// A read-only registry on a free loopback port serving one image layout over the distribution API, as
    /// much as a pull needs (<c>/v2/</c>, manifests by tag or digest, blobs); ended on dispose. Written
    /// here rather than running a registry package, whose install would start a system-wide service.
    /// </summary>
    public sealed class LayoutRegistry : IAsyncDisposable
    {
        private readonly System.Net.HttpListener _listener;
        private readonly string _layout;
        private readonly Task _loop;

        private LayoutRegistry(System.Net.HttpListener listener, string layout, int port)
        {
            _listener = listener;
            _layout = layout;
            Address = $"127.0.0.1:{port}";
            _loop = Task.Run(ServeAsync);
        }

        /// <summary><c>127.0.0.1:PORT</c>: the host part of references to this registry.</summary>
        public string Address { get; }

        /// <summary>Requests served, e.g. <c>GET /v2/mini/manifests/1.0</c>.</summary>
        public System.Collections.Concurrent.ConcurrentQueue<string> Requests { get; } = new();

        public static LayoutRegistry Start(string layout)
        {
            for (int attempt = 0; ; attempt++)
            {
                var probe = new System.Net.Sockets.TcpListener(System.Net.IPAddress.Loopback, 0);
                probe.Start();
                int port = ((System.Net.IPEndPoint)probe.LocalEndpoint).Port;
                probe.Stop();
                var listener = new System.Net.HttpListener();
                listener.Prefixes.Add($"http://127.0.0.1:{port}/");
                try
                {
                    listener.Start();
                    return new LayoutRegistry(listener, layout, port);
                }
                catch (System.Net.HttpListenerException) when (attempt < 5)
                {
                    listener.Close();  // the port was taken in between: another one
                }
            }
        }

        private async Task ServeAsync()
        {
            while (_listener.IsListening)
            {
                System.Net.HttpListenerContext context;
                try
                {
                    context = await _listener.GetContextAsync();
                }
                catch (Exception e) when (e is System.Net.HttpListenerException or ObjectDisposedException or InvalidOperationException)
                {
                    return;
                }
                try
                {
                    await AnswerAsync(context);
                }
                catch (Exception e) when (e is IOException or System.Net.HttpListenerException)
                {
                    // the client went away
                }
                finally
                {
                    context.Response.Close();
                }
            }
        }

        private async Task AnswerAsync(System.Net.HttpListenerContext context)
        {
            var request = context.Request;
            var response = context.Response;
            string path = request.Url!.AbsolutePath;
            Requests.Enqueue($"{request.HttpMethod} {path}");
            response.Headers["Docker-Distribution-API-Version"] = "registry/2.0";
            if (path == "/v2/")
            {
                response.StatusCode = 200;
                return;
            }
            // /v2/NAME/manifests/REFERENCE or /v2/NAME/blobs/DIGEST (NAME may contain slashes).
            int manifests = path.LastIndexOf("/manifests/", StringComparison.Ordinal);
            int blobs = path.LastIndexOf("/blobs/", StringComparison.Ordinal);
            string? digest = null;
            string contentType = "application/octet-stream";
            if (path.StartsWith("/v2/", StringComparison.Ordinal) && manifests > 4)
            {
                string reference = path[(manifests + "/manifests/".Length)..];
                digest = reference.StartsWith("sha256:", StringComparison.Ordinal) ? reference : TryResolve(reference);
                contentType = "application/vnd.oci.image.manifest.v1+json";
            }
            else if (path.StartsWith("/v2/", StringComparison.Ordinal) && blobs > 4)
            {
                digest = path[(blobs + "/blobs/".Length)..];
            }
            string? file = digest is { Length: 71 } && digest.StartsWith("sha256:", StringComparison.Ordinal) && digest[7..].All(char.IsAsciiHexDigitLower)
                ? Path.Combine(_layout, "blobs", "sha256", digest[7..])
                : null;
            if (file is null || !File.Exists(file))
            {
                response.StatusCode = 404;
                response.ContentType = "application/json";
                await response.OutputStream.WriteAsync("""{"errors":[{"code":"MANIFEST_UNKNOWN","message":"not here"}]}"""u8.ToArray());
                return;
            }
            byte[] content = await File.ReadAllBytesAsync(file);
            response.StatusCode = 200;
            response.ContentType = contentType;
            response.Headers["Docker-Content-Digest"] = digest;
            response.ContentLength64 = content.Length;
            if (request.HttpMethod != "HEAD")
                await response.OutputStream.WriteAsync(content);
        }

        private string? TryResolve(string tag)
        {
            try
            {
                return OciLayout.ResolveManifest(_layout, tag).Digest;
            }
            catch (InvalidDataException)
            {
                return null;
            }
        }

        public async ValueTask DisposeAsync()
        {
            // Close alone: after Stop, .NET's managed HttpListener.Close removes the prefixes a second time,
            // which binds the port again to look its listener up, and fails ("Address already in use") when
            // another test has taken the freed port meanwhile (seen in the fast tier).
            _listener.Close();
            await _loop;
        }
    }
}

/// <summary>Host programs the tests run (shared by the image and end-to-end tests).</summary>
internal static class HostTools
{
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
}
