using Microsoft.Extensions.Logging;
using Orleans.Placement;
using Orleans.Runtime;
using SandboxVM.Core.Sessions;

namespace SandboxVM.Cluster;

/// <summary>Where a sandbox lives: the owning node's HTTP API and its silo; <see cref="Lost"/> once that node is dead.</summary>
[GenerateSerializer, Immutable]
public sealed record SandboxPlace([property: Id(0)] string Url, [property: Id(1)] string Silo, [property: Id(2)] bool Lost = false);

/// <summary>One sandbox of the cluster, keyed by its (opaque) id.</summary>
public interface ISandboxGrain : IGrainWithStringKey
{
    /// <summary>Called by the node that holds the VM: records it as the owner (kept in Redis).</summary>
    Task RegisterAsync(SandboxPlace place);

    /// <summary>The sandbox ended on its node.</summary>
    Task UnregisterAsync();

    /// <summary>
    /// The owner; lost when the owner is dead; null for an id no node registered. A sandbox paused in the
    /// shared state directory by a node that died or left is first adopted by the node this activation is on.
    /// </summary>
    Task<SandboxPlace?> LocateAsync();

    /// <summary>Called by a draining owner once the sandbox is paused in the shared state directory and let go: the next call's node adopts it.</summary>
    Task HandOffAsync();
}

/// <summary>
/// Activated by the owning node's first call (prefer-local placement) and kept there while the sandbox
/// lives: the grain directory then says which node holds the VM, and dies with it. The record in Redis
/// outlives the node, so a later call tells a lost sandbox from an unknown one. The directory keeps one
/// activation per id in the cluster and a grain takes one call at a time, so of two nodes asking at once
/// for a sandbox to adopt, one adopts it and the other is told where it now is.
/// </summary>
[PreferLocalPlacement]
[Immovable]
[CollectionAgeLimit(AlwaysActive = true)]
internal sealed partial class SandboxGrain(
    [PersistentState(SandboxGrain.StateName, ClusterExtension.StorageName)] IPersistentState<SandboxRecord> record,
    ILocalSiloDetails silo, IClusterMembershipService membership, SessionManager sessions, ClusterNode node,
    IGrainFactory grains, ILogger<SandboxGrain> logger) : Grain, ISandboxGrain
{
    /// <summary>The name of the sandbox's record in the grain storage (also read by the router without the grain).</summary>
    public const string StateName = "place";

    public async Task RegisterAsync(SandboxPlace place)
    {
        record.State = new SandboxRecord { Url = place.Url, Silo = place.Silo };
        await record.WriteStateAsync();
    }

    public async Task HandOffAsync()
    {
        if (record.RecordExists)
        {
            record.State.HandedOff = true;
            await record.WriteStateAsync();
        }
        DeactivateOnIdle();
    }

    public async Task UnregisterAsync()
    {
        await record.ClearStateAsync();
        DeactivateOnIdle();
    }

    public async Task<SandboxPlace?> LocateAsync()
    {
        if (!record.RecordExists || record.State.Url is null || record.State.Silo is null)
        {
            // An id no node holds: answered here, then gone, so this node does not keep it.
            DeactivateOnIdle();
            return null;
        }
        string self = silo.SiloAddress.ToParsableString();
        var place = new SandboxPlace(record.State.Url, record.State.Silo);
        if (record.State.Silo == self && !record.State.HandedOff)
        {
            return place;
        }
        // Activated away from the owner: the owner's activation is gone, with its node when it died or left.
        var owner = SiloAddress.FromParsableString(record.State.Silo);
        bool ownerGone = record.State.HandedOff || membership.CurrentSnapshot.GetSiloStatus(owner) is SiloStatus.Dead or SiloStatus.None;
        if (record.State.HandedOff && node.Draining)
        {
            // This node handed it off and is leaving: a call that reached this activation before it went is
            // not told "lost" (the sandbox is in the shared directory); the router answers 503 with
            // Retry-After, and the next call activates the grain on a node that adopts it. Seen in CI: a
            // run through another node right after the drain answered 410 sandbox_lost.
            DeactivateOnIdle();
            throw new OrleansException($"sandbox '{this.GetPrimaryKeyString()}' is being handed to another node; try again");
        }
        if (ownerGone && !node.Draining && sessions.AdoptPaused(this.GetPrimaryKeyString()))
        {
            // Paused in the shared directory: this node holds it from now on (this activation stays here).
            string id = this.GetPrimaryKeyString();
            record.State = new SandboxRecord { Url = node.Url.ToString(), Silo = self };
            await record.WriteStateAsync();
            // Off the old node's list, so a dead node does not list it as lost as well.
            await grains.GetGrain<INodeSandboxesGrain>(owner.ToParsableString()).SetAsync([], [id]);
            LogAdopted(logger, id, place.Url);
            return new SandboxPlace(node.Url.ToString(), self);
        }
        DeactivateOnIdle();
        if (ownerGone)
        {
            LogLost(logger, this.GetPrimaryKeyString(), record.State.Silo);
            return place with { Lost = true };
        }
        return place;
    }

    [LoggerMessage(Level = LogLevel.Warning, Message = "sandbox {Id} is lost: its node {Silo} is dead")]
    private static partial void LogLost(ILogger logger, string id, string silo);

    [LoggerMessage(Level = LogLevel.Information, Message = "sandbox {Id}, paused in the shared state directory by {Owner}, is held by this node now")]
    private static partial void LogAdopted(ILogger logger, string id, string owner);
}

/// <summary>The stored part of <see cref="SandboxGrain"/>.</summary>
[GenerateSerializer]
public sealed class SandboxRecord
{
    [Id(0)] public string? Url { get; set; }
    [Id(1)] public string? Silo { get; set; }

    /// <summary>Its node paused it into the shared state directory and left it there for another node (drain).</summary>
    [Id(2)] public bool HandedOff { get; set; }
}
