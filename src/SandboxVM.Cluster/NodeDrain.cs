using Microsoft.Extensions.Logging;
using SandboxVM.Core;
using SandboxVM.Core.Runs;
using SandboxVM.Core.Sessions;

namespace SandboxVM.Cluster;

/// <summary>
/// <c>POST /v1/admin/drain</c> (<c>sandboxvm node drain</c>): this node takes no new work (placement skips
/// it, its edge relays new calls to the others), pauses each of its sandboxes into the shared state
/// directory and lets go of it (its grain is marked handed off and deactivated), so the next call on it,
/// through any node, adopts and resumes it there. The caller then stops the node, which leaves the cluster.
/// </summary>
internal sealed partial class NodeDrain(SessionManager sessions, SandboxRegistrar registrar, RunPlacement placement,
    ClusterNode node, IGrainFactory grains, SandboxVmOptions options, ILogger<NodeDrain> logger)
{
    /// <summary>Hand-offs at once: each is a pause (a runtime checkpoint) on a 2-core node; more only queue on the CPU.</summary>
    private const int Parallelism = 2;

    private int _started;

    public sealed record NotMoved(string Id, string Code, string Detail);

    public sealed record Outcome(IReadOnlyList<string> Moved, IReadOnlyList<NotMoved> NotMoved);

    public async Task<Outcome> DrainAsync()
    {
        if (options.SharedStateDir is null)
        {
            throw new RunRequestException(ProblemCodes.SharedStateRequired, null,
                "this node has no shared state directory (SandboxVM:SharedStateDir, serve --shared-state): its sandboxes cannot move to other nodes",
                RefusalKind.Conflict);
        }
        if (Interlocked.Exchange(ref _started, 1) != 0)
        {
            throw new RunRequestException(ClusterProblemCodes.AlreadyDraining, null, "this node is draining already", RefusalKind.Conflict);
        }
        node.Draining = true;
        await placement.PublishNowAsync();
        await registrar.FreezeAsync(CancellationToken.None);
        var list = sessions.List();
        LogDraining(logger, list.Count);
        var moved = new List<string>();
        var notMoved = new List<NotMoved>();
        // Not the caller's token: a client that goes away must not leave sandboxes half handed over.
        await Parallel.ForEachAsync(list, new ParallelOptions { MaxDegreeOfParallelism = Parallelism }, async (session, _) =>
        {
            try
            {
                await sessions.HandOffAsync(session.Id, CancellationToken.None);
                try
                {
                    await grains.GetGrain<ISandboxGrain>(session.Id).HandOffAsync();
                }
                catch (Exception e) when (e is not RunRequestException)
                {
                    // Its image is in the shared directory all the same: adopted once this node has left.
                    LogHandOffUnrecorded(logger, session.Id, e.Message);
                }
                lock (moved)
                {
                    moved.Add(session.Id);
                }
            }
            catch (RunRequestException e)
            {
                LogNotMoved(logger, session.Id, e.Message);
                lock (moved)
                {
                    notMoved.Add(new NotMoved(session.Id, e.Code, e.Message));
                }
            }
        });
        LogDrained(logger, moved.Count, notMoved.Count);
        return new Outcome(moved, notMoved);
    }

    [LoggerMessage(Level = LogLevel.Warning, Message = "cluster: draining this node: {Count} sandboxes to hand to the other nodes")]
    private static partial void LogDraining(ILogger logger, int count);

    [LoggerMessage(Level = LogLevel.Warning, Message = "cluster: sandbox {Id} could not be handed off and ends with this node: {Reason}")]
    private static partial void LogNotMoved(ILogger logger, string id, string reason);

    [LoggerMessage(Level = LogLevel.Warning, Message = "cluster: sandbox {Id} is paused in the shared directory but its grain was not told ({Error}); another node adopts it once this one has left")]
    private static partial void LogHandOffUnrecorded(ILogger logger, string id, string error);

    [LoggerMessage(Level = LogLevel.Warning, Message = "cluster: drained: {Moved} sandboxes handed off, {NotMoved} not; this node stops")]
    private static partial void LogDrained(ILogger logger, int moved, int notMoved);
}
