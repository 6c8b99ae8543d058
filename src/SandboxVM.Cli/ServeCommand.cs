using System.CommandLine;
using SandboxVM.Server;

namespace SandboxVM.Cli;

internal static class ServeCommand
{
    public static Command Create()
    {
        var url = new Option<string>("--url") { Description = "Address to listen on", DefaultValueFactory = _ => ServerApp.DefaultUrl };
        var runtime = new Option<string?>("--runtime") { Description = "auto (default), process, qemu or firecracker" };
        var keysFile = new Option<string?>("--keys-file")
        {
            Description = "API keys file (default: $SANDBOXVM_API_KEYS_FILE); `sandboxvm keys new --file` writes entries",
        };
        var insecure = new Option<bool>("--insecure-no-auth")
        {
            Description = "Listen beyond loopback without API keys: anyone who can reach the port runs code. A trusted network only",
        };
        var cluster = new Option<string?>("--cluster")
        {
            Description = "Join the cluster whose membership is in this Redis (redis://HOST:PORT; SandboxVM:Cluster); " +
                "the other nodes reach this one at SandboxVM:ClusterAdvertiseUrl (default: --url)",
        };
        var sharedState = new Option<string?>("--shared-state")
        {
            Description = "A directory every node of the cluster mounts (e.g. NFS; SandboxVM:SharedStateDir): paused sandboxes live there "
                + "and resume on another node when theirs died or was drained",
        };
        var command = new Command("serve", "Start the SandboxVM server (binds 127.0.0.1:8000 by default)") { url, runtime, keysFile, insecure, cluster, sharedState };
        command.SetAction(async (parse, ct) =>
        {
            string? requested = parse.GetValue(runtime);
            Microsoft.AspNetCore.Builder.WebApplication app;
            try
            {
                app = ServerApp.Build([], o =>
                {
                    if (requested is not null)
                    {
                        o.Runtime = requested;
                    }
                    if (parse.GetValue(keysFile) is { } file)
                    {
                        o.ApiKeysFile = file;
                    }
                    o.InsecureNoAuth |= parse.GetValue(insecure);
                    if (parse.GetValue(sharedState) is { } shared)
                    {
                        o.SharedStateDir = Path.GetFullPath(shared);
                    }
                }, parse.GetValue(url), extension: new SandboxVM.Cluster.ClusterExtension(parse.GetValue(cluster)));
            }
            catch (InvalidOperationException e)
            {
                // Refusals that say what to do (keys, listen address): the message, not a stack trace.
                await Console.Error.WriteLineAsync("sandboxvm: " + e.Message);
                return 2;
            }
            // The host handles SIGINT/SIGTERM itself and stops every sandbox before it exits.
            await app.RunAsync();
            return 0;
        });
        return command;
    }
}
