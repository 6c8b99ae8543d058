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

    public void Add(IVm vm) => _live[vm.Id] = vm;

    /// <summary>Ends a VM in the background.</summary>
    public void Release(IVm vm)
    {
        if (!_live.TryRemove(vm.Id, out _))
        {
            return;
        }
        Task t = DisposeQuietlyAsync(vm);
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

    [LoggerMessage(Level = LogLevel.Error, Message = "teardown of sandbox {Id} failed")]
    private static partial void LogTeardownFailed(ILogger logger, string id, Exception e);
}
