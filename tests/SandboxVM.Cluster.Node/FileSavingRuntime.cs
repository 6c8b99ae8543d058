using System.Diagnostics;
using SandboxVM.Runtime;
using SandboxVM.Testing;

/// <summary>
/// The local agent runtime with a pause for the cluster tests: a save copies the sandbox's /tmp and /home
/// (files only: no processes, no memory) into the image, a restore starts a new sandbox and copies them
/// back. Enough to see a paused sandbox move between nodes through a shared directory; the real runtimes
/// save the whole machine (docs/CLUSTER.md says what each carries over). Not a product runtime.
/// </summary>
internal sealed class FileSavingRuntime(LocalAgentRuntime inner) : IVmRuntime, ISandboxSaver
{
    private static readonly string[] Trees = ["tmp", "home"];

    public string Name => inner.Name;
    public RuntimeCapabilities Capabilities => inner.Capabilities;
    public string? Accel => inner.Accel;

    public Task<IVm> StartAsync(VmSpec spec, CancellationToken cancellationToken) => inner.StartAsync(spec, cancellationToken);

    public Task<int> CleanupLeftoversAsync(CancellationToken cancellationToken) => inner.CleanupLeftoversAsync(cancellationToken);

    public async Task<SavedSandbox> SaveAsync(IVm vm, VmSpec spec, string directory, bool keepRunning, CancellationToken cancellationToken)
    {
        var clock = Stopwatch.StartNew();
        string root = ((LocalAgentVm)vm).RootPath;
        foreach (string tree in Trees)
        {
            await CopyAsync(Path.Combine(root, tree), Path.Combine(directory, tree), cancellationToken);
        }
        if (!keepRunning)
        {
            await vm.DisposeAsync();
        }
        long bytes = Directory.EnumerateFiles(directory, "*", SearchOption.AllDirectories).Sum(f => new FileInfo(f).Length);
        return new SavedSandbox(directory, bytes, clock.Elapsed);
    }

    public async Task<IVm> RestoreSavedAsync(VmSpec spec, string directory, CancellationToken cancellationToken)
    {
        var vm = await inner.StartAsync(spec, cancellationToken);
        try
        {
            string root = ((LocalAgentVm)vm).RootPath;
            foreach (string tree in Trees)
            {
                await CopyAsync(Path.Combine(directory, tree), Path.Combine(root, tree), cancellationToken);
            }
            return vm;
        }
        catch
        {
            await vm.DisposeAsync();
            throw;
        }
    }

    /// <summary>cp -a of a tree's contents (owners, modes and times kept) into an existing or new directory.</summary>
    private static async Task CopyAsync(string from, string to, CancellationToken cancellationToken)
    {
        Directory.CreateDirectory(to);
        using var cp = Process.Start(new ProcessStartInfo("/bin/cp", ["-a", "--", from + "/.", to])
        {
            RedirectStandardError = true,
            UseShellExecute = false,
        })!;
        string error = await cp.StandardError.ReadToEndAsync(cancellationToken);
        await cp.WaitForExitAsync(cancellationToken);
        if (cp.ExitCode != 0)
        {
            throw new IOException($"cp -a {from} {to} failed: {error.Trim()}");
        }
    }
}
