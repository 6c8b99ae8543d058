using System.Diagnostics;
using SandboxVM.Runtime.Process;

namespace SandboxVM.Runtime.Gvisor;

// Pause, resume and fork of one running sandbox: runsc checkpoint into an image directory (the sentry's
// memory holds the processes, the tmpfs /tmp and home and the agent's channel), runsc restore from it.
public sealed partial class GvisorRuntime : ISandboxSaver
{
    public async Task<SavedSandbox> SaveAsync(IVm vm, VmSpec spec, string directory, bool keepRunning, CancellationToken cancellationToken)
    {
        if (vm is not GvisorVm gvm || !_live.ContainsKey(gvm.Id))
        {
            throw new ArgumentException($"sandbox {vm.Id} is not a live sandbox of this gvisor runtime", nameof(vm));
        }
        var clock = Stopwatch.StartNew();
        string imageDir = Path.Combine(directory, ImageDirName);
        Directory.CreateDirectory(imageDir);
        // As for a template: the host stays attached (the agent sits in a read that a restore restarts on
        // the new runsc's pipes). Without --leave-running the checkpoint ends the sandbox.
        var (code, output) = await _runsc.RunAsync(_runsc.CheckpointArguments(imageDir, gvm.Id, keepRunning), _options.CommandTimeout, cancellationToken);
        if (code != 0 || !File.Exists(Path.Combine(imageDir, "checkpoint.img")))
        {
            throw new InvalidOperationException($"runsc checkpoint of {gvm.Id} exited {code}: {output}");
        }
        if (!keepRunning)
        {
            await gvm.WaitExitedAsync(_options.CommandTimeout);
        }
        long bytes = Directory.EnumerateFiles(imageDir).Sum(f => new FileInfo(f).Length);
        GvisorLog.SandboxSaved(_logger, gvm.Id, spec.TemplateName, clock.ElapsedMilliseconds, bytes, keepRunning);
        return new SavedSandbox(directory, bytes, clock.Elapsed);
    }

    public async Task<IVm> RestoreSavedAsync(VmSpec spec, string directory, CancellationToken cancellationToken)
    {
        ValidateSpec(spec);
        if (!File.Exists(Path.Combine(directory, ImageDirName, "checkpoint.img")))
        {
            throw new SandboxStartException($"no saved sandbox in {directory}");
        }
        return await RestoreAsync(spec, directory, Stopwatch.StartNew(), cancellationToken);
    }
}
