using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;
using SandboxVM.Cluster;
using SandboxVM.Core;
using SandboxVM.Core.Pools;
using SandboxVM.Core.Runs;
using SandboxVM.Runtime;
using SandboxVM.Server;
using SandboxVM.Testing;

// A cluster node for the tests: `SandboxVM.Cluster.Node STATE_DIR [configuration arguments]`, e.g.
// --urls http://127.0.0.1:PORT --SandboxVM:Cluster redis://127.0.0.1:PORT --SandboxVM:ClusterSiloPort PORT.
// Its sandboxes are the real agent as local processes (a pause keeps their files: FileSavingRuntime); its
// templates are below; its state is STATE_DIR.
// With SANDBOXVM_CLUSTER_NODE_RUNTIME=gvisor it is a plain server on the gVisor runtime instead: the templates of
// SANDBOXVM_CLUSTER_NODE_TEMPLATES, the host's image cache, the agent of SANDBOXVM_AGENT, no pools (the one drain test that needs a real pause).
if (Environment.GetEnvironmentVariable("SANDBOXVM_CLUSTER_NODE_RUNTIME") == "gvisor")
{
    string state = args[0];
    var gvisor = ServerApp.Build(args[1..], o =>
    {
        o.Runtime = "gvisor";
        o.TemplateDirectories = [Environment.GetEnvironmentVariable("SANDBOXVM_CLUSTER_NODE_TEMPLATES")
            ?? throw new InvalidOperationException("SANDBOXVM_CLUSTER_NODE_TEMPLATES (the templates directory) is not set")];
        o.StateDir = Path.Combine(state, "state");
        o.BuildTemplatesOnStart = false;
        o.CacheGcOnStart = false;
        o.Pools = false;
        o.StartSingletonsWithServer = false;
    }, extension: new ClusterExtension());
    await gvisor.RunAsync();
    return 0;
}
if (LocalAgentRuntime.UnavailableReason is { } why)
{
    await Console.Error.WriteLineAsync("local agent runtime unavailable: " + why);
    return 3;
}
string dir = args[0];
Directory.CreateDirectory(Path.Combine(dir, "templates"));
await File.WriteAllTextAsync(Path.Combine(dir, "templates", "local-sh.yaml"), """
    name: local-sh
    source: {type: debian, suite: bookworm, packages: []}
    language:
      name: shell
      source_file: main.sh
      run: [sh, main.sh]
    limits:
      run_timeout_s: 20
      max_timeout_s: 60
    warmup:
      strategy: cold
    """);
await using var local = new LocalAgentRuntime();
// Pausable (files only), so paused sandboxes can move between nodes through SandboxVM:SharedStateDir.
var runtime = new FileSavingRuntime(local);
var app = ServerApp.Build(args[1..], o =>
{
    o.TemplateDirectories = [Path.Combine(dir, "templates")];
    o.CacheDir = Path.Combine(dir, "cache");
    o.StateDir = Path.Combine(dir, "state");
    o.BuildTemplatesOnStart = false;
    o.CacheGcOnStart = false;
    o.Pools = false;
    o.StartSingletonsWithServer = false;
}, configureServices: s =>
{
    s.AddSingleton<IVmRuntime>(runtime);
    s.AddSingleton(new RuntimeChoice(runtime.Name, null, "tests"));
    s.AddSingleton(sp => new PoolManager(runtime, new TemplateSpecs(), sp.GetRequiredService<VmTracker>(), sp.GetRequiredService<ILogger<PoolManager>>()));
}, extension: new ClusterExtension());
await app.RunAsync();
return 0;
