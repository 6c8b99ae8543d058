using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting.Server;
using Microsoft.AspNetCore.Hosting.Server.Features;
using Microsoft.Extensions.DependencyInjection;

namespace SandboxVM.Functional.Tests;

/// <summary>
/// A real server of its own whose templates are written by the test (shell templates on small OCI
/// images, see <see cref="SandboxVM.TestSupport.OciTestImage"/>), for tests that need templates or a
/// cache the shared fixtures do not have.
/// </summary>
internal static class OciTemplateServer
{
    /// <summary>The agent the tests put into images: SANDBOXVM_AGENT, or the checkout's published one.</summary>
    public static string Agent()
    {
        string agent = Environment.GetEnvironmentVariable("SANDBOXVM_AGENT") ?? Path.Combine(ServerFixture.RepoRoot(), "artifacts", "agent", "sandboxvm-agent");
        Assert.True(File.Exists(agent), $"the guest agent is not published at {agent}: run scripts/test.sh first");
        return agent;
    }

    /// <summary>
    /// A template running <c>/bin/sh main.sh</c> on a small budget; <paramref name="source"/> is the
    /// YAML of its <c>source:</c> mapping, one member a line.
    /// </summary>
    public static string Yaml(string name, string description, params string[] source) => $"""
        name: {name}
        description: {description}
        source:
        {string.Join("\n", source.Select(s => "  " + s))}
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
        """;

    /// <summary>
    /// A server on a loopback port with exactly the templates of <paramref name="templates"/> (none built
    /// at start, no cache collection: the cache is shared unless <paramref name="cacheDir"/> names another).
    /// </summary>
    public static WebApplication Build(string runtime, string agent, string templates, string? cacheDir = null) =>
        SandboxVM.Server.ServerApp.Build([], o =>
        {
            o.Runtime = runtime;
            o.Accel = "tcg";
            o.AgentPath = agent;
            o.BuildTemplatesOnStart = false;
            o.TemplateDirectories = [templates];
            // Its only templates are these: a collection at start would count every other cached image as unneeded.
            o.CacheGcOnStart = false;
            if (cacheDir is not null)
            {
                o.CacheDir = cacheDir;
            }
        }, "http://127.0.0.1:0");

    /// <summary>An HTTP client of a started server.</summary>
    public static HttpClient Client(WebApplication app) => new()
    {
        BaseAddress = new Uri(app.Services.GetRequiredService<IServer>().Features.Get<IServerAddressesFeature>()!.Addresses.First()),
        Timeout = TimeSpan.FromMinutes(3),
    };
}
