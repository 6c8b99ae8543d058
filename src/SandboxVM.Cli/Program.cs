using System.CommandLine;
using SandboxVM.Cli;

var root = new RootCommand("SandboxVM: run AI-generated code in sandboxes")
{
    ServeCommand.Create(),
    RunCommand.Create(),
    SandboxCommand.Create(),
    TemplatesCommand.Create(),
    CacheCommand.Create(),
    DoctorCommand.Create(),
    KeysCommand.Create(),
    McpCommand.Create(),
    NodeCommand.Create(),
};
// Signals are left to the commands (serve stops its sandboxes on SIGTERM) instead of a forced exit.
return await root.Parse(args).InvokeAsync(new InvocationConfiguration { ProcessTerminationTimeout = null });
