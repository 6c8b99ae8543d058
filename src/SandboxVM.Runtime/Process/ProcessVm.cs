using Microsoft.Extensions.Logging;
using SandboxVM.Runtime.Agent;
using SandboxVM.Runtime.Cgroups;

namespace SandboxVM.Runtime.Process;

internal sealed class ProcessVm : IVm
{
    private const int StderrKeep = 8 * 1024;

    private readonly System.Diagnostics.Process _process;
    private readonly Cgroup? _cgroup;
    private readonly Action? _released;
    private readonly ILogger _logger;
    private readonly TextTail _stderr = new(StderrKeep);
    private readonly Task _stderrPump;
    private readonly FreezeSwitch? _freeze;
    private int _disposed;

    /// <summary>Takes over <paramref name="process"/> and <paramref name="cgroup"/>; <paramref name="released"/> runs once
    /// everything of the sandbox is gone (it gives the sandbox's host uid back).</summary>
    public ProcessVm(string id, string templateName, System.Diagnostics.Process process, Cgroup? cgroup, Action? released, ILogger logger)
    {
        Id = id;
        TemplateName = templateName;
        _process = process;
        _cgroup = cgroup;
        _released = released;
        _logger = logger;
        Agent = new AgentClient(process.StandardOutput.BaseStream, process.StandardInput.BaseStream);
        Exited = process.WaitForExitAsync();
        _stderrPump = _stderr.PumpAsync(process.StandardError.BaseStream);
        // The cgroup freezer (v1 freezer hierarchy or v2 cgroup.freeze); without one, freezing is a no-op
        // and an idle sandbox's processes stay runnable (they sleep in the agent's read).
        if (cgroup is { CanFreeze: true })
        {
            _freeze = new FreezeSwitch(ct => cgroup.SetFrozenAsync(true, ct), ct => cgroup.SetFrozenAsync(false, ct));
        }
    }

    public bool IsFrozen => _freeze?.IsFrozen ?? false;

    public Task FreezeAsync(CancellationToken cancellationToken) => _freeze?.FreezeAsync(cancellationToken) ?? Task.CompletedTask;

    public Task ThawAsync(CancellationToken cancellationToken) => _freeze?.ThawAsync(cancellationToken) ?? Task.CompletedTask;

    public string Id { get; }
    public string TemplateName { get; }
    public VmSource Source => VmSource.Process;
    public AgentClient Agent { get; }
    public TimeSpan StartupTime { get; internal set; }
    public Task Exited { get; }

    public VmUsage ReadUsage() => new(_cgroup?.OomKillCount() ?? 0, _cgroup?.PeakMemoryBytes());

    /// <summary>Agent diagnostics (its stderr, bounded), for error reports.</summary>
    public string Diagnostics
    {
        get
        {
            return _stderr.ToString();
        }
    }

    internal async Task<string> StopAndGetDiagnosticsAsync()
    {
        await DisposeAsync();
        await _stderrPump.WaitAsync(TimeSpan.FromSeconds(1)).ContinueWith(_ => { }, TaskScheduler.Default);
        return Diagnostics.Trim();
    }

    public async ValueTask DisposeAsync()
    {
        if (Interlocked.Exchange(ref _disposed, 1) != 0)
        {
            return;
        }
        // Kill the whole cgroup first (every process the sandbox made), then bubblewrap itself.
        if (_cgroup is not null)
        {
            await _cgroup.DestroyAsync(CancellationToken.None);
        }
        if (!await HostProcess.KillTreeAndWaitAsync(_process, TimeSpan.FromSeconds(5)))
        {
            Log.KillFailed(_logger, Id, "bubblewrap did not exit within 5 s of SIGKILL");
        }
        if (_cgroup is not null)
        {
            // bubblewrap was in the group too; now that it is gone the directories can go.
            await _cgroup.DestroyAsync(CancellationToken.None);
        }
        if (_process.HasExited)
        {
            // Nothing runs as its uid any more (without a cgroup, a process that escaped the kill could).
            _released?.Invoke();
        }
        await Agent.DisposeAsync();
        _process.Dispose();
    }
}

internal static partial class Log
{
    [LoggerMessage(Level = LogLevel.Warning, Message = "sandbox {Id}: could not kill its process: {Reason}")]
    internal static partial void KillFailed(ILogger logger, string id, string reason);
}
