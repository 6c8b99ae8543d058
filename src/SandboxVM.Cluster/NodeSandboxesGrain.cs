using Orleans.Placement;

namespace SandboxVM.Cluster;

/// <summary>A sandbox as its node's list keeps it: enough to list it as lost when the node dies.</summary>
[GenerateSerializer, Immutable]
public sealed record NodeSandbox([property: Id(0)] string Id, [property: Id(1)] string Owner, [property: Id(2)] string Template,
    [property: Id(3)] DateTimeOffset CreatedAt);

/// <summary>The sandboxes of one node (keyed by its silo address), kept in Redis so they outlive it.</summary>
public interface INodeSandboxesGrain : IGrainWithStringKey
{
    Task SetAsync(IReadOnlyList<NodeSandbox> added, IReadOnlyList<string> removed);

    Task<IReadOnlyList<NodeSandbox>> ListAsync(string owner);

    /// <summary>Every sandbox id of the node, whoever owns it (to find the sandbox that signed an E2B file URL).</summary>
    Task<IReadOnlyList<string>> IdsAsync();
}

[PreferLocalPlacement]
internal sealed class NodeSandboxesGrain(
    [PersistentState("sandboxes", ClusterExtension.StorageName)] IPersistentState<NodeSandboxesRecord> record) : Grain, INodeSandboxesGrain
{
    public async Task SetAsync(IReadOnlyList<NodeSandbox> added, IReadOnlyList<string> removed)
    {
        foreach (string id in removed)
        {
            record.State.Sandboxes.Remove(id);
        }
        foreach (var sandbox in added)
        {
            record.State.Sandboxes[sandbox.Id] = sandbox;
        }
        await record.WriteStateAsync();
    }

    public Task<IReadOnlyList<NodeSandbox>> ListAsync(string owner) =>
        Task.FromResult<IReadOnlyList<NodeSandbox>>([.. record.State.Sandboxes.Values.Where(s => s.Owner == owner).OrderBy(s => s.CreatedAt)]);

    public Task<IReadOnlyList<string>> IdsAsync() => Task.FromResult<IReadOnlyList<string>>([.. record.State.Sandboxes.Keys]);
}

[GenerateSerializer]
public sealed class NodeSandboxesRecord
{
    [Id(0)] public Dictionary<string, NodeSandbox> Sandboxes { get; set; } = new(StringComparer.Ordinal);
}
