using System.Net.Http.Json;
using System.Text.Json;
using Microsoft.Extensions.DependencyInjection;
using SandboxVM.Core.Catalog;
using SandboxVM.TestSupport;

namespace SandboxVM.Functional.Tests;

/// <summary>
/// Failures a caller provokes or meets (an image that cannot be found or built, a sandbox that cannot
/// start, one whose VM died) are explained without host paths: not the image cache, the template
/// directory, the checkout or the agent binary. The server log keeps the details.
/// </summary>
[Collection(ProcessServer.Collection)]
[System.Runtime.Versioning.UnsupportedOSPlatform("windows")]
[Trait("tier", "vm")]
public sealed class HostPathErrorTests
{
    private static CancellationToken Ct => TestContext.Current.CancellationToken;

    [Fact]
    public async Task FailuresOfImagesAndSandboxes_ReachTheCaller_WithoutHostPaths()
    {
        Assert.SkipUnless(Environment.IsPrivilegedProcess && HostTools.HasTool("umoci") && HostTools.HasTool("skopeo") && OciTestImage.CanCreate,
            "needs root, umoci, skopeo, busybox-static and util-linux (scripts/install-deps.sh)");
        string agent = OciTemplateServer.Agent();
        var dir = Directory.CreateTempSubdirectory("sbvm-host-paths-");
        // Sandboxes run as unprivileged uids that must reach the image cache inside it.
        File.SetUnixFileMode(dir.FullName, (UnixFileMode)0b111_101_101);
        string cache = Path.Combine(dir.FullName, "cache");
        string[] hostPaths = [dir.FullName, cache, "/var/cache/sandboxvm", "/dev/shm/sandboxvm", "/run/sandboxvm", ServerFixture.RepoRoot(), agent];
        void AssertNoHostPath(string what, string text)
        {
            foreach (string p in hostPaths)
            {
                Assert.False(text.Contains(p, StringComparison.Ordinal), $"{what} names the host path {p}: {text}");
            }
        }
        try
        {
            await OciTestImage.CreateTreeAsync(Path.Combine(dir.FullName, "tree"));
            await OciTestImage.WriteLayoutAsync(Path.Combine(dir.FullName, "tree"), Path.Combine(dir.FullName, "image"), "v1");
            var templates = Directory.CreateDirectory(Path.Combine(dir.FullName, "templates"));
            await File.WriteAllTextAsync(Path.Combine(templates.FullName, "busybox-shell.yaml"),
                OciTemplateServer.Yaml("busybox-shell", "A shell from a small OCI image.", "type: oci-layout", "path: ../image", "tag: v1"), Ct);
            await File.WriteAllTextAsync(Path.Combine(templates.FullName, "missing-layout.yaml"),
                OciTemplateServer.Yaml("missing-layout", "Its OCI layout is not there.", "type: oci-layout", "path: ../no-such-layout"), Ct);
            await File.WriteAllTextAsync(Path.Combine(templates.FullName, "unreachable-image.yaml"),
                OciTemplateServer.Yaml("unreachable-image", "Its registry does not answer.", "type: oci", "reference: 127.0.0.1:9/nothing/here:1", "tls_verify: false"), Ct);

            await using var app = OciTemplateServer.Build("process", agent, templates.FullName, cache);
            await app.StartAsync(Ct);
            try
            {
                var catalog = app.Services.GetRequiredService<TemplateCatalog>();
                var busybox = catalog.Find("busybox-shell")!;
                await catalog.EnsureBuiltAsync(busybox, null, Ct);
                using var http = OciTemplateServer.Client(app);

                // A template whose image cannot be found: listed as unavailable, and a run of it refused.
                string listing = await http.GetStringAsync("/v1/templates", Ct);
                Assert.Contains("no-such-layout", listing, StringComparison.Ordinal);
                AssertNoHostPath("GET /v1/templates", listing);
                AssertNoHostPath("a run of missing-layout", await RunAsync(http, "missing-layout", "echo hi"));

                // A template whose image cannot be built (the registry does not answer).
                string unbuildable = await RunAsync(http, "unreachable-image", "echo hi");
                Assert.Contains("could not be", unbuildable, StringComparison.Ordinal);
                AssertNoHostPath("a run of unreachable-image", unbuildable);

                // A sandbox whose VM dies during a run, then a file read in it.
                string id = JsonDocument.Parse(await PostAsync(http, "/v1/sandboxes", new { template = "busybox-shell" })).RootElement.GetProperty("id").GetString()!;
                string died = await PostAsync(http, $"/v1/sandboxes/{id}/run", new { code = "kill -9 -1; sleep 5" });
                Assert.Contains("sandbox_error", died, StringComparison.Ordinal);
                AssertNoHostPath("a run whose VM died", died);
                using (var gone = await http.GetAsync($"/v1/sandboxes/{id}/files?path=main.sh", Ct))
                {
                    AssertNoHostPath("a file read of a dead sandbox", await gone.Content.ReadAsStringAsync(Ct));
                }

                // A failing start: the built image disappeared from the cache under a running server.
                Assert.Contains("\"ok\"", await RunAsync(http, "busybox-shell", "echo hi"), StringComparison.Ordinal);
                string rootfs = catalog.TryGetBuilt(busybox)!;
                await HostTools.RunAsync("rm", "-rf", "--one-file-system", "--", rootfs);
                string failed = await RunAsync(http, "busybox-shell", "echo hi");
                Assert.Contains("sandbox_error", failed, StringComparison.Ordinal);
                AssertNoHostPath("a run that could not start", failed);
                string refused = await PostAsync(http, "/v1/sandboxes", new { template = "busybox-shell" });
                Assert.Contains("sandbox_start_failed", refused, StringComparison.Ordinal);
                AssertNoHostPath("a sandbox that could not start", refused);
            }
            finally
            {
                await app.StopAsync(CancellationToken.None);
            }
        }
        finally
        {
            await HostTools.RunAsync("rm", "-rf", "--one-file-system", "--", dir.FullName);
        }
    }

    private static Task<string> RunAsync(HttpClient http, string template, string code) => PostAsync(http, "/v1/run", new { template, code });

    /// <summary>The body of the answer, whatever its status (a problem or a result).</summary>
    private static async Task<string> PostAsync(HttpClient http, string path, object body)
    {
        using var response = await http.PostAsJsonAsync(path, body, ServerFixture.Json, Ct);
        return await response.Content.ReadAsStringAsync(Ct);
    }
}
