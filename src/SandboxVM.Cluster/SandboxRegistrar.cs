using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using Orleans.Runtime;
using SandboxVM.Core.Sessions;

namespace SandboxVM.Cluster;

/// <summary>
/// Keeps the cluster's sandbox grains in step with this node's sandboxes: a new one registered (the
/// grain then lives here), an ended one unregistered. Called before a create's answer goes out (so the
/// id works on every node as soon as the caller has it) and once a second for the ones that end alone.
/// </summary>
internal sealed partial class SandboxRegistrar(SessionManager sessions, IGrainFactory grains, ILocalSiloDetails silo,
    ClusterNode node, ILogger<SandboxRegistrar> logger) : BackgroundService
{
    private readonly HashSet<string> _registered = new(StringComparer.Ordinal);
    private readonly SemaphoreSlim _gate = new(1, 1);
    private volatile bool _frozen;

    /// <summary>
    /// A drain: from now on nothing is registered or unregistered (a sandbox handed to another node must
    /// keep its record; the ones that end with this node are lost, as with a node that dies).
    /// </summary>
    public async Task FreezeAsync(CancellationToken cancellationToken)
    {
        await _gate.WaitAsync(cancellationToken);
        _frozen = true;
        _gate.Release();
    }

    public async Task SyncAsync(CancellationToken cancellationToken)
    {
        await _gate.WaitAsync(cancellationToken);
        try
        {
            if (_frozen)
            {
                return;
            }
            var list = sessions.List();
            var live = list.Select(s => s.Id).ToHashSet(StringComparer.Ordinal);
            string self = silo.SiloAddress.ToParsableString();
            var place = new SandboxPlace(node.Url.ToString(), self);
            var added = list.Where(s => !_registered.Contains(s.Id))
                .Select(s => new NodeSandbox(s.Id, s.Owner, s.Template.Name, s.CreatedAt)).ToList();
            var removed = _registered.Where(id => !live.Contains(id)).ToList();
            if (added.Count == 0 && removed.Count == 0)
            {
                return;
            }
            // The node's list first: a sandbox whose grain exists is always on it, so it is listed as lost if the node dies.
            await grains.GetGrain<INodeSandboxesGrain>(self).SetAsync(added, removed).WaitAsync(cancellationToken);
            foreach (var sandbox in added)
            {
                await grains.GetGrain<ISandboxGrain>(sandbox.Id).RegisterAsync(place).WaitAsync(cancellationToken);
                _registered.Add(sandbox.Id);
            }
            foreach (string id in removed)
            {
                await grains.GetGrain<ISandboxGrain>(id).UnregisterAsync().WaitAsync(cancellationToken);
                _registered.Remove(id);
            }
        }
        finally
        {
            _gate.Release();
        }
    }

    protected override async Task ExecuteAsync(CancellationToken stoppingToken)
    {
        using var timer = new PeriodicTimer(TimeSpan.FromSeconds(1));
        while (await timer.WaitForNextTickAsync(stoppingToken))
        {
            try
            {
                await SyncAsync(stoppingToken);
            }
            catch (Exception e) when (e is not OperationCanceledException)
            {
                LogSyncFailed(logger, e.Message);
            }
        }
    }

    [LoggerMessage(Level = LogLevel.Warning, Message = "cluster: registering this node's sandboxes failed (retried in a second): {Error}")]
    private static partial void LogSyncFailed(ILogger logger, string error);
}
