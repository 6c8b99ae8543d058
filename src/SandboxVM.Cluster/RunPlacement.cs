using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using Orleans.Placement;
using Orleans.Runtime;
using SandboxVM.Core.Pools;
using SandboxVM.Core.Runs;
using SandboxVM.Core.Templates;

namespace SandboxVM.Cluster;

/// <summary>What a node publishes for one-shot placement: ready pool clones by template, and its live sandboxes.</summary>
[GenerateSerializer, Immutable]
public sealed record NodeFigures([property: Id(0)] string Url, [property: Id(1)] IReadOnlyDictionary<string, int> Ready,
    [property: Id(2)] int Live, [property: Id(3)] bool Draining = false);

/// <summary>A node's latest figures (keyed by its silo address; in memory, on that node).</summary>
public interface INodeFiguresGrain : IGrainWithStringKey
{
    Task PublishAsync(NodeFigures figures);

    Task<NodeFigures?> GetAsync();
}

[PreferLocalPlacement]
internal sealed class NodeFiguresGrain : Grain, INodeFiguresGrain
{
    private NodeFigures? _figures;

    public Task PublishAsync(NodeFigures figures)
    {
        _figures = figures;
        return Task.CompletedTask;
    }

    public Task<NodeFigures?> GetAsync() => Task.FromResult(_figures);
}

/// <summary>
/// Where a one-shot run goes: a node with a ready pool clone of its template (the most ready), else the
/// node with the fewest live sandboxes; this node on a tie. Decided from figures every node publishes
/// once a second and this node reads once a second, so the choice adds no call to a run.
/// </summary>
internal sealed partial class RunPlacement(PoolManager pools, TemplateRegistry templates, VmTracker tracker,
    IGrainFactory grains, ILocalSiloDetails silo, IClusterMembershipService membership, ClusterNode node,
    ILogger<RunPlacement> logger) : BackgroundService
{
    private volatile IReadOnlyList<NodeFigures> _others = [];

    /// <summary>Each active node's last figures read (used only under <see cref="_refreshing"/>).</summary>
    private Dictionary<SiloAddress, NodeFigures> _last = [];
    private readonly SemaphoreSlim _refreshing = new(1, 1);

    /// <summary>This node's figures now.</summary>
    public NodeFigures Own() => new(node.Url.ToString(),
        templates.All.ToDictionary(t => t.Name, t => pools.Status(t.Name)?.Ready ?? 0, StringComparer.Ordinal), tracker.LiveCount, node.Draining);

    /// <summary>The URL of the node to run <paramref name="template"/> on, or null for this one.</summary>
    public string? Choose(string? template)
    {
        if (node.Draining)
        {
            return ChooseOther();
        }
        var own = Own();
        var others = _others;
        int Ready(NodeFigures f) => template is not null && f.Ready.TryGetValue(template, out int n) ? n : 0;
        if (Ready(own) > 0 || others.Count == 0)
        {
            return null;
        }
        var warm = others.Where(f => Ready(f) > 0).OrderByDescending(Ready).ThenBy(f => f.Live).FirstOrDefault();
        if (warm is not null)
        {
            return warm.Url;
        }
        var least = others.MinBy(f => f.Live)!;
        return least.Live < own.Live ? least.Url : null;
    }

    /// <summary>Another node that takes new work (the one with the fewest live sandboxes), or null when there is none.</summary>
    public string? ChooseOther() => _others.MinBy(f => f.Live)?.Url;

    /// <summary>Publishes this node's figures now (a drain: the others stop placing work here within their next read).</summary>
    public Task PublishNowAsync() => grains.GetGrain<INodeFiguresGrain>(silo.SiloAddress.ToParsableString()).PublishAsync(Own());

    /// <summary>
    /// Another node that takes new work for a draining node. When none is known the figures are read again at
    /// once (a node that joined or published since the last read, e.g. a drain moments after the cluster
    /// started): null only when there is still none.
    /// </summary>
    public async Task<string?> ChooseOtherNowAsync(CancellationToken cancellationToken)
    {
        if (ChooseOther() is { } known)
        {
            return known;
        }
        try
        {
            await RefreshAsync(cancellationToken);
        }
        catch (Exception e) when (e is not OperationCanceledException)
        {
            LogFiguresFailed(logger, e.Message);
        }
        return ChooseOther();
    }

    protected override async Task ExecuteAsync(CancellationToken stoppingToken)
    {
        using var timer = new PeriodicTimer(TimeSpan.FromSeconds(1));
        while (await timer.WaitForNextTickAsync(stoppingToken))
        {
            try
            {
                await RefreshAsync(stoppingToken);
            }
            catch (Exception e) when (e is not OperationCanceledException)
            {
                LogFiguresFailed(logger, e.Message);
            }
        }
    }

    /// <summary>Publishes this node's figures and reads every other active node's (one at a time: the loop and a draining node's call).</summary>
    private async Task RefreshAsync(CancellationToken cancellationToken)
    {
        await _refreshing.WaitAsync(cancellationToken);
        try
        {
            string self = silo.SiloAddress.ToParsableString();
            await grains.GetGrain<INodeFiguresGrain>(self).PublishAsync(Own());
            var active = membership.CurrentSnapshot.Members.Values
                .Where(m => m.Status == SiloStatus.Active && !m.SiloAddress.Equals(silo.SiloAddress))
                .Select(m => m.SiloAddress).ToList();
            var figures = await Task.WhenAll(active.Select(async address =>
            {
                try
                {
                    // Null: the grain was (re)activated and the node has not published since (within a second).
                    return await grains.GetGrain<INodeFiguresGrain>(address.ToParsableString()).GetAsync()
                        .WaitAsync(TimeSpan.FromSeconds(2), cancellationToken) ?? _last.GetValueOrDefault(address);
                }
                catch (Exception e) when (e is TimeoutException or OrleansException)
                {
                    // A read that timed out on a loaded host is not a node that left: its last figures stand
                    // until membership drops it.
                    return _last.GetValueOrDefault(address);
                }
            }));
            _last = active.Zip(figures).Where(p => p.Second is not null).ToDictionary(p => p.First, p => p.Second!);
            // A draining node takes no new work.
            _others = [.. figures.OfType<NodeFigures>().Where(f => !f.Draining)];
        }
        finally
        {
            _refreshing.Release();
        }
    }

    [LoggerMessage(Level = LogLevel.Warning, Message = "cluster: publishing or reading the nodes' figures failed (again in a second): {Error}")]
    private static partial void LogFiguresFailed(ILogger logger, string error);
}
