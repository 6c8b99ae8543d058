using Microsoft.Win32.SafeHandles;
using SandboxVM.Agent;
using SandboxVM.Agent.Files;
using SandboxVM.Agent.Native;
using SandboxVM.Agent.Operations;
using SandboxVM.Agent.Processes;

AgentOptions options;
try
{
    options = AgentOptions.Parse(args);
}
catch (ArgumentException e)
{
    AgentLog.Write(e.Message);
    return 2;
}

// Pipe pumps have threads of their own, but channel and file I/O block pool threads: on a 1-2 vCPU
// guest the default minimum would make a few concurrent operations wait for thread injection.
ThreadPool.GetMinThreads(out int workers, out int io);
ThreadPool.SetMinThreads(Math.Max(workers, 16), Math.Max(io, 16));

if (!Libc.TrySetChildSubreaper())
{
    AgentLog.Write("cannot become a child subreaper; orphans of a step go to init");
}
if (UserProcesses.IsGuestInit)
{
    GuestKernel.ProtectLinks();
}
try
{
    // Home is the user's: the agent creates it if missing (before any user code runs) and gives it
    // (not what is in it) to the user.
    await UserFiles.MakeDirectoryAsync(SandboxUser.Self, options.Home, parents: true);
    await UserFiles.GiveDirectoryAsync(options.Home, options.User);
    Environment.CurrentDirectory = options.Home;
}
catch (Exception e) when (AgentException.IsIo(e) || e is AgentException)
{
    AgentLog.Write($"cannot use home {options.Home}: {e.Message}");
}
await HomeSeeder.SeedAsync(options.SkelDir, options.Home, options.User);
if (options.User.Switches && !File.Exists(SandboxUser.SetprivPath))
{
    // Steps then fail to start (127): never silently as root.
    AgentLog.Write($"{SandboxUser.SetprivPath} is missing: no step can run as the sandbox user");
}
AgentLog.Write($"steps run as {options.User}");

var state = new AgentState(options, new ProcessSupervisor(options.User));
if (options.IsStdio)
{
    // Raw fds rather than System.Console streams: see AgentLog for why Console is avoided.
    using var input = new FileStream(new SafeFileHandle(0, ownsHandle: false), FileAccess.Read, bufferSize: 0);
    using var output = new FileStream(new SafeFileHandle(1, ownsHandle: false), FileAccess.Write, bufferSize: 0);
    await new AgentServer(state, input, output).RunAsync(CancellationToken.None);
    // The host is gone and so is the sandbox: no warm interpreter to keep.
    state.ForkServers.StopAll();
    state.Kernels.StopAll();
    return 0;
}

// A virtio-serial port reads end of file while no host is connected (and a snapshot clone gets a new
// host side), so on a device the agent serves connection after connection; exiting as PID 1 would
// panic the guest kernel. The port allows a single open, so one read/write handle backs both streams.
using var device = File.OpenHandle(options.Channel, FileMode.Open, FileAccess.ReadWrite);
using var deviceIn = new FileStream(device, FileAccess.Read, bufferSize: 0);
using var deviceOut = new FileStream(device, FileAccess.Write, bufferSize: 0);
while (true)
{
    await new AgentServer(state, deviceIn, deviceOut).RunAsync(CancellationToken.None);
    await Task.Delay(TimeSpan.FromMilliseconds(200), CancellationToken.None);
}
