using System.CommandLine;
using SandboxVM.Server;

namespace SandboxVM.Cli;

internal static class ServeCommand
{
    public static Command Create()
    {
        var url = new Option<string>("--url") { Description = "Address to listen on", DefaultValueFactory = _ => ServerApp.DefaultUrl };
        var runtime = new Option<string?>("--runtime") { Description = "auto (default), process, qemu or firecracker" };
        var command = new Command("serve", "Start the SandboxVM server (binds 127.0.0.1:8000 by default)") { url, runtime };
        command.SetAction(async (parse, ct) =>
        {
            string? requested = parse.GetValue(runtime);
            var app = ServerApp.Build([], o =>
            {
                if (requested is not null)
                {
                    o.Runtime = requested;
                }
            }, parse.GetValue(url));
            // The host handles SIGINT/SIGTERM itself and stops every sandbox before it exits.
            await app.RunAsync();
            return 0;
        });
        return command;
    }
}
