using System.Net.Http.Json;
using System.Text.Json;
using Microsoft.AspNetCore.Hosting.Server;
using Microsoft.AspNetCore.Hosting.Server.Features;
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
        string agent = Environment.GetEnvironmentVariable("SANDBOXVM_AGENT") ?? Path.Combine(ServerFixture.RepoRoot(), "artifacts", "agent", "sandboxvm-agent");
        Assert.True(File.Exists(agent), $"the guest agent is not published at {agent}: run scripts/test.sh first");
        var dir = Directory.CreateTempSubdirectory("sbvm-oci-template-");
        try
        {
            await OciTestImage.CreateTreeAsync(Path.Combine(dir.FullName, "tree"));
            await OciTestImage.WriteLayoutAsync(Path.Combine(dir.FullName, "tree"), Path.Combine(dir.FullName, "image"), "v1");
            var templates = Directory.CreateDirectory(Path.Combine(dir.FullName, "templates"));
            // The layout path is relative to the template file.
            await File.WriteAllTextAsync(Path.Combine(templates.FullName, "busybox-shell.yaml"), """
                name: busybox-shell
                description: A shell from a small OCI image (busybox on glibc).
                source:
                  type: oci-layout
                  path: ../image
                  tag: v1
                language:
                  name: sh
                  source_file: main.sh
                  run: [/bin/sh, main.sh]
                vcpus: 1
                memory_mib: 256
                disk_mib: 64
                limits:
                  run_timeout_s: 30
                  max_timeout_s: 60
                  output_bytes: 65536
                  processes: 32
                  file_bytes: 1048576
                output: text
                network:
                  mode: none
                warmup:
                  strategy: cold
                """, Ct);

            await using var app = SandboxVM.Server.ServerApp.Build([], o =>
            {
                o.Runtime = runtime;
                o.Accel = "tcg";
                o.AgentPath = agent;
                o.BuildTemplatesOnStart = false;
                o.TemplateDirectories = [templates.FullName];
                // Its only template is this one: a collection at start would count every other cached image as unneeded.
                o.CacheGcOnStart = false;
            }, "http://127.0.0.1:0");
            await app.StartAsync(Ct);
            try
            {
                var catalog = app.Services.GetRequiredService<TemplateCatalog>();
                await catalog.EnsureBuiltAsync(catalog.Find("busybox-shell")!, null, Ct);
                using var http = new HttpClient
                {
                    BaseAddress = new Uri(app.Services.GetRequiredService<IServer>().Features.Get<IServerAddressesFeature>()!.Addresses.First()),
                    Timeout = TimeSpan.FromMinutes(3),
                };
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
