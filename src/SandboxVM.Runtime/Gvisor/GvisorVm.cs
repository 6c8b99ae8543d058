using Microsoft.Extensions.Logging;
using SandboxVM.Runtime.Agent;
using SandboxVM.Runtime.Cgroups;

namespace SandboxVM.Runtime.Gvisor;

/// <summary>
/// One gVisor sandbox: the <c>runsc run</c> (or <c>runsc restore</c>) process whose stdin and stdout are
/// the agent's channel (runsc hands its own stdio to the container's init, and a restore hands the
/// restoring process's stdio to the restored init), its cgroup and its bundle directory. Disposing it
/// kills every process of the sandbox (the cgroup), lets runsc forget the container and removes the bundle.
/// </summary>
public sealed class GvisorVm : IVm
{
    private const int StderrKeep = 16 * 1024;

    private readonly System.Diagnostics.Process _process;
    private readonly Cgroup? _cgroup;
    private readonly string _bundleDir;
    private readonly Func<string, Task> _forget;
    private readonly ILogger _logger;
    private readonly TextTail _stderr = new(StderrKeep);
    private readonly Task _stderrPump;
    private readonly TaskCompletionSource _cleanedUp = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private int _disposed;
    // Read before the cgroup goes: a run that failed is judged (OOM or not) after its sandbox was ended.
    private VmUsage? _finalUsage;
    private FreezeSwitch? _freeze;

    internal GvisorVm(string id, string templateName, VmSource source, System.Diagnostics.Process process, Cgroup? cgroup,
        string bundleDir, Func<string, Task> forget, ILogger logger)
    {
        Id = id;
        TemplateName = templateName;
        Source = source;
        _process = process;
        _cgroup = cgroup;
        _bundleDir = bundleDir;
        _forget = forget;
        _logger = logger;
        Agent = new AgentClient(process.StandardOutput.BaseStream, process.StandardInput.BaseStream);
        Exited = process.WaitForExitAsync();
        _stderrPump = _stderr.PumpAsync(process.StandardError.BaseStream);
    }

    /// <summary>The container id (also the cgroup's name).</summary>
    public string Id { get; }
    public string TemplateName { get; }
    public VmSource Source { get; }
    public AgentClient Agent { get; }
    public TimeSpan StartupTime { get; internal set; }
    public Task Exited { get; }

    /// <summary>Host pid of the runsc process that holds the agent's channel.</summary>
    public int ProcessId => _process.Id;

    /// <summary>
    /// Pauses (true) or resumes the container through runsc; set by the runtime. Used only without a
    /// freezable cgroup: a runsc-paused sentry still used 4.3% of a core idle, as much as a running idle
    /// one (4.4%), where the cgroup freezer brings the whole sandbox (sentry, gofer, runsc) to 0
    /// (10 s of /proc utime+stime per sandbox cgroup, load average 58; bench/results/idle-*.md).
    /// </summary>
    internal Func<string, bool, CancellationToken, Task>? SetPaused
    {
        init => _freeze = _cgroup is { CanFreeze: true } group
            ? new FreezeSwitch(ct => group.SetFrozenAsync(true, ct), ct => group.SetFrozenAsync(false, ct))
            : value is null ? null : new FreezeSwitch(ct => value(Id, true, ct), ct => value(Id, false, ct));
    }

    public bool IsFrozen => _freeze?.IsFrozen ?? false;

    public Task FreezeAsync(CancellationToken cancellationToken) => _freeze?.FreezeAsync(cancellationToken) ?? Task.CompletedTask;

    public Task ThawAsync(CancellationToken cancellationToken) => _freeze?.ThawAsync(cancellationToken) ?? Task.CompletedTask;

    public VmUsage ReadUsage() => _finalUsage ?? new(_cgroup?.OomKillCount() ?? 0, _cgroup?.PeakMemoryBytes());

    /// <summary>runsc's and the agent's stderr (the agent's goes through runsc), last bytes, for error reports.</summary>
    public string Diagnostics
    {
        get
        {
            string text = _stderr.ToString().Trim();
            return text.Length > 0 ? "runsc: " + text : "runsc: (nothing on stderr)";
        }
    }

    /// <summary>Waits (bounded) until runsc has exited and its stderr is read to the end.</summary>
    internal async Task WaitExitedAsync(TimeSpan timeout)
    {
        await Exited.WaitAsync(timeout);
        await _stderrPump.WaitAsync(TimeSpan.FromSeconds(1)).ContinueWith(_ => { }, TaskScheduler.Default);
    }

    public async ValueTask DisposeAsync()
    {
        if (Interlocked.Exchange(ref _disposed, 1) != 0)
        {
            return;
        }
        // The cgroup holds everything of the sandbox (runsc, the sentry, its stub processes, the gofer):
        // SIGKILL to all of them at once, whatever state the sentry is in.
        if (_cgroup is not null)
        {
            _finalUsage = ReadUsage();
            await _cgroup.DestroyAsync(CancellationToken.None);
        }
        else
        {
            // Without a cgroup, runsc delete is what kills the sandbox: awaited.
            await ForgetAsync();
        }
        if (!await HostProcess.KillTreeAndWaitAsync(_process, TimeSpan.FromSeconds(5)))
        {
            GvisorLog.KillFailed(_logger, Id, "runsc did not exit within 5 s of SIGKILL");
        }
        if (_cgroup is not null)
        {
            // Now that every process is gone the directories can go.
            await _cgroup.DestroyAsync(CancellationToken.None);
        }
        await Agent.DisposeAsync();
        await _stderrPump.WaitAsync(TimeSpan.FromSeconds(1)).ContinueWith(_ => { }, TaskScheduler.Default);
        _process.Dispose();
        // Every process of the sandbox is dead now (its memory freed); what is left is runsc's record of it.
        // `runsc delete` polls (every 100 ms) until the sentry's and the gofer's pids are gone, and killed with
        // runsc run, their parent, they are zombies until the host's init reaps them: 1.2-1.9 s per DELETE of an
        // idle sandbox on this host (strace of the server). So that part does not hold up the caller.
        if (_cgroup is null)
        {
            RemoveBundle();
            _cleanedUp.TrySetResult();
        }
        else
        {
            _ = Task.Run(async () =>
            {
                await ForgetAsync();
                RemoveBundle();
                _cleanedUp.TrySetResult();
            });
        }
    }

    /// <summary>
    /// Done when runsc has forgotten the ended sandbox and its bundle is gone (after <see cref="DisposeAsync"/>,
    /// which returns once every process of the sandbox is dead); never faults.
    /// </summary>
    public Task CleanedUp => _cleanedUp.Task;

    private async Task ForgetAsync()
    {
        try
        {
            // runsc's state files for the container (and, without a cgroup, the kill of the sandbox itself).
            await _forget(Id);
        }
        catch (Exception e) when (e is not OutOfMemoryException)
        {
            GvisorLog.KillFailed(_logger, Id, e.Message);
        }
    }

    private void RemoveBundle()
    {
        try
        {
            if (Directory.Exists(_bundleDir))
            {
                Directory.Delete(_bundleDir, recursive: true);
            }
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            GvisorLog.CleanupFailed(_logger, _bundleDir, e.Message);
        }
    }
}
