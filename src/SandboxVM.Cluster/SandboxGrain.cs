using Microsoft.Extensions.Logging;
using Orleans.Placement;
using Orleans.Runtime;

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

    /// <summary>The owner; lost when the owner is dead; null for an id no node registered.</summary>
    Task<SandboxPlace?> LocateAsync();
}

/// <summary>
/// Activated by the owning node's first call (prefer-local placement) and kept there while the sandbox
/// lives: the grain directory then says which node holds the VM, and dies with it. The record in Redis
/// outlives the node, so a later call tells a lost sandbox from an unknown one.
/// </summary>
[PreferLocalPlacement]
[Immovable]
[CollectionAgeLimit(AlwaysActive = true)]
internal sealed partial class SandboxGrain(
    [PersistentState("place", ClusterExtension.StorageName)] IPersistentState<SandboxRecord> record,
    ILocalSiloDetails silo, IClusterMembershipService membership, ILogger<SandboxGrain> logger) : Grain, ISandboxGrain
{
    public async Task RegisterAsync(SandboxPlace place)
    {
        record.State = new SandboxRecord { Url = place.Url, Silo = place.Silo };
        await record.WriteStateAsync();
    }

    public async Task UnregisterAsync()
    {
        await record.ClearStateAsync();
        DeactivateOnIdle();
    }

    public Task<SandboxPlace?> LocateAsync()
    {
        if (!record.RecordExists || record.State.Url is null || record.State.Silo is null)
        {
            // An id no node holds: answered here, then gone, so this node does not keep it.
            DeactivateOnIdle();
            return Task.FromResult<SandboxPlace?>(null);
        }
        var place = new SandboxPlace(record.State.Url, record.State.Silo);
        if (record.State.Silo == silo.SiloAddress.ToParsableString())
        {
            return Task.FromResult<SandboxPlace?>(place);
        }
        // Activated away from the owner: the owner's activation is gone, with its node when it died.
        DeactivateOnIdle();
        var owner = SiloAddress.FromParsableString(record.State.Silo);
        var status = membership.CurrentSnapshot.GetSiloStatus(owner);
        if (status is SiloStatus.Dead or SiloStatus.None)
        {
            LogLost(logger, this.GetPrimaryKeyString(), record.State.Silo);
            return Task.FromResult<SandboxPlace?>(place with { Lost = true });
        }
        return Task.FromResult<SandboxPlace?>(place);
    }

    [LoggerMessage(Level = LogLevel.Warning, Message = "sandbox {Id} is lost: its node {Silo} is dead")]
    private static partial void LogLost(ILogger logger, string id, string silo);
}

/// <summary>The stored part of <see cref="SandboxGrain"/>.</summary>
[GenerateSerializer]
public sealed class SandboxRecord
{
    [Id(0)] public string? Url { get; set; }
    [Id(1)] public string? Silo { get; set; }
}
