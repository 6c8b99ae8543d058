using System.Collections.Concurrent;
using Microsoft.Extensions.Logging;
using SandboxVM.Runtime;

namespace SandboxVM.Core.Runs;

/// <summary>
/// Owns every live sandbox of this server. A finished run hands its VM back and the teardown happens
/// off the request path; shutdown waits for every teardown and kills whatever is still alive.
/// </summary>
public sealed partial class VmTracker : IAsyncDisposable
{
    private readonly ConcurrentDictionary<string, IVm> _live = new();
    private readonly ConcurrentDictionary<Task, byte> _teardowns = new();
    private readonly ILogger<VmTracker> _logger;

    public VmTracker(ILogger<VmTracker> logger) => _logger = logger;

    public int LiveCount => _live.Count;

    /// <summary>
    /// Tracks a started VM. When its agent channel ends while the VM is live (the host closed it because
    /// the guest broke the protocol or stopped reading, or the agent went away), nobody can use the VM
    /// any more: it is killed at once, whoever holds it (its run fails, its session ends).
    /// </summary>
    public void Add(IVm vm)
    {
        _live[vm.Id] = vm;
        _ = vm.Agent.Completion.ContinueWith(_ => KillIfLiveAsync(vm), CancellationToken.None, TaskContinuationOptions.None, TaskScheduler.Default).Unwrap();
    }

    private async Task KillIfLiveAsync(IVm vm)
    {
        if (_live.ContainsKey(vm.Id))
        {
            LogAgentClosed(_logger, vm.Id, vm.Agent.FailureReason ?? "the agent closed its channel");
            await KillAsync(vm);
        }
    }

    /// <summary>Ends a VM in the background.</summary>
    public void Release(IVm vm)
    {
        if (!_live.TryRemove(vm.Id, out _))
        {
            return;
        }
        // Not inline: up to its first wait a runtime's teardown (gVisor: reading the cgroup, SIGKILL to every
        // process of the sandbox) would run on the caller's thread, before a run's answer goes out.
        Task t = Task.Run(() => DisposeQuietlyAsync(vm), CancellationToken.None);
        _teardowns[t] = 0;
        _ = t.ContinueWith(done => _teardowns.TryRemove(done, out _), TaskScheduler.Default);
    }

    /// <summary>Ends a VM now (it misbehaved or its run was abandoned).</summary>
    public async Task KillAsync(IVm vm)
    {
        _live.TryRemove(vm.Id, out _);
        await DisposeQuietlyAsync(vm);
    }

    private async Task DisposeQuietlyAsync(IVm vm)
    {
        try
        {
            await vm.DisposeAsync();
        }
        catch (Exception e)
        {
            LogTeardownFailed(_logger, vm.Id, e);
        }
    }

    public async ValueTask DisposeAsync()
    {
        foreach (var vm in _live.Values)
        {
            Release(vm);
        }
        await Task.WhenAll(_teardowns.Keys);
    }

    [LoggerMessage(Level = LogLevel.Warning, Message = "sandbox {Id} killed: its agent channel ended: {Reason}")]
    private static partial void LogAgentClosed(ILogger logger, string id, string reason);

    [LoggerMessage(Level = LogLevel.Error, Message = "teardown of sandbox {Id} failed")]
    private static partial void LogTeardownFailed(ILogger logger, string id, Exception e);
}
