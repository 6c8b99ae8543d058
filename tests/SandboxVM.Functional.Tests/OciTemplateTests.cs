using System.Net.Http.Json;
using System.Text.Json;
using Microsoft.Extensions.DependencyInjection;
using SandboxVM.Core.Catalog;
using SandboxVM.TestSupport;

namespace SandboxVM.Functional.Tests;

/// <summary>
/// A template whose rootfs is an OCI image (a layout on this host) runs code like a built-in one:
/// through the real server, on the process runtime and in a QEMU VM.
/// </summary>
[Collection(QemuServer.Collection)]
[System.Runtime.Versioning.UnsupportedOSPlatform("windows")]
[Trait("tier", "vm")]
public sealed class OciTemplateTests
{
    private static CancellationToken Ct => TestContext.Current.CancellationToken;

    [Theory]
    [InlineData("process")]
    [InlineData("qemu")]
    public async Task CodeRuns_InATemplateBuiltFromAnOciImageLayout(string runtime)
    {
        Assert.SkipUnless(Environment.IsPrivilegedProcess && HostTools.HasTool("umoci") && OciTestImage.CanCreate,
            "needs root, umoci, busybox-static and util-linux (scripts/install-deps.sh)");
        string agent = OciTemplateServer.Agent();
        var dir = Directory.CreateTempSubdirectory("sbvm-oci-template-");
        try
        {
            await OciTestImage.CreateTreeAsync(Path.Combine(dir.FullName, "tree"));
            await OciTestImage.WriteLayoutAsync(Path.Combine(dir.FullName, "tree"), Path.Combine(dir.FullName, "image"), "v1");
            var templates = Directory.CreateDirectory(Path.Combine(dir.FullName, "templates"));
            // The layout path is relative to the template file.
            await File.WriteAllTextAsync(Path.Combine(templates.FullName, "busybox-shell.yaml"),
                OciTemplateServer.Yaml("busybox-shell", "A shell from a small OCI image (busybox on glibc).", "type: oci-layout", "path: ../image", "tag: v1"), Ct);

            await using var app = OciTemplateServer.Build(runtime, agent, templates.FullName);
            await app.StartAsync(Ct);
            try
            {
                var catalog = app.Services.GetRequiredService<TemplateCatalog>();
                await catalog.EnsureBuiltAsync(catalog.Find("busybox-shell")!, null, Ct);
                using var http = OciTemplateServer.Client(app);
                const string code = "echo \"$(cat /etc/marker | wc -c) bytes of marker\"; id -u; busybox uname -s";
                using var response = await http.PostAsJsonAsync("/v1/run", new { template = "busybox-shell", code }, Ct);
                string body = await response.Content.ReadAsStringAsync(Ct);
                Assert.True(response.IsSuccessStatusCode, body);
                var result = JsonDocument.Parse(body).RootElement;
                Assert.True(result.GetProperty("status").GetString() == "ok", body);
                var lines = result.GetProperty("stdout").GetString()!.Split('\n');
                Assert.Equal("33 bytes of marker", lines[0]);
                Assert.NotEqual("0", lines[1]);  // the sandbox user, never root
                Assert.Equal("Linux", lines[2]);
                Assert.Equal(runtime == "qemu" ? "boot" : "process", result.GetProperty("metrics").GetProperty("vm_source").GetString());
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
}
