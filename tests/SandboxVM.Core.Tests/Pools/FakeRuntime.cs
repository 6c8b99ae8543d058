using System.IO.Pipes;
using SandboxVM.Protocol;
using SandboxVM.Runtime;
using SandboxVM.Runtime.Agent;

namespace SandboxVM.Core.Tests.Pools;

/// <summary>A runtime whose sandboxes are in-process fake agents that answer hello and ping.</summary>
internal sealed class FakeRuntime : IVmRuntime
{
    private int _started;

    public string Name => "fake";
    public RuntimeCapabilities Capabilities { get; init; } = new(IsolationLevel.Vm, true, false, true);
    public string? Accel => null;
    public int Started => _started;
    public List<FakeVm> Vms { get; } = [];
    public Func<int, Exception?> FailStart { get; set; } = _ => null;

    /// <summary>Every start waits this long on <see cref="Clock"/> (a restore that takes time); zero: none.</summary>
    public TimeSpan StartDelay { get; set; }
    public TimeProvider Clock { get; set; } = TimeProvider.System;
    private int _pending;
    private int _maxPending;
    /// <summary>Starts under way now, and the most there were at once.</summary>
    public int Pending => Volatile.Read(ref _pending);
    public int MaxPending => Volatile.Read(ref _maxPending);

    /// <summary>Order of freezes, thaws and agent requests over every VM ("fake-1 freeze", "fake-1 reinit").</summary>
    public System.Collections.Concurrent.ConcurrentQueue<string> Events { get; } = new();

    public async Task<IVm> StartAsync(VmSpec spec, CancellationToken cancellationToken)
    {
        int n = Interlocked.Increment(ref _started);
        if (FailStart(n) is { } e)
        {
            throw e;
        }
        // The restore's timer is armed before the start counts as pending: a test that sees Pending and then
        // advances the clock must find the timer there (counted first, a start whose thread was slow to reach
        // Task.Delay armed it after the advance and waited for ever: PoolDemandTests under load).
        var delay = StartDelay > TimeSpan.Zero ? Task.Delay(StartDelay, Clock, cancellationToken) : Task.CompletedTask;
        int pending = Interlocked.Increment(ref _pending);
        int seen;
        while ((seen = Volatile.Read(ref _maxPending)) < pending && Interlocked.CompareExchange(ref _maxPending, pending, seen) != seen)
        {
        }
        try
        {
            await delay;
        }
        finally
        {
            Interlocked.Decrement(ref _pending);
        }
        var vm = new FakeVm($"fake-{n}", spec.TemplateName, Events);
        await vm.Agent.HelloAsync(cancellationToken);
        lock (Vms)
        {
            Vms.Add(vm);
        }
        return vm;
    }

    public Task<int> CleanupLeftoversAsync(CancellationToken cancellationToken) => Task.FromResult(0);

    /// <summary>When set, PrepareSnapshotAsync "saves" a snapshot (counted in <see cref="SnapshotsPrepared"/>); else it returns null.</summary>
    public bool MakesSnapshots { get; set; }

    /// <summary>What SnapshotExists answers: false plays a snapshot removed underneath the runtime.</summary>
    public volatile bool SnapshotPresent = true;

    private int _snapshotsPrepared;
    public int SnapshotsPrepared => _snapshotsPrepared;

    public Task<SnapshotInfo?> PrepareSnapshotAsync(VmSpec spec, Func<AgentClient, CancellationToken, Task>? warmup, CancellationToken cancellationToken)
    {
        if (!MakesSnapshots)
        {
            return Task.FromResult<SnapshotInfo?>(null);
        }
        int n = Interlocked.Increment(ref _snapshotsPrepared);
        SnapshotPresent = true;
        return Task.FromResult<SnapshotInfo?>(new SnapshotInfo("key", $"/fake/snapshots/{n}", Built: true, TimeSpan.Zero));
    }

    public bool SnapshotExists(SnapshotInfo snapshot) => SnapshotPresent;
}

internal sealed class FakeVm : IVm
{
    private readonly AnonymousPipeServerStream _toAgent = new(PipeDirection.Out);
    private readonly AnonymousPipeServerStream _fromAgent = new(PipeDirection.In);
    private readonly AnonymousPipeClientStream _agentIn;
    private readonly AnonymousPipeClientStream _agentOut;
    private readonly TaskCompletionSource _exited = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private readonly Task _agentLoop;

    private readonly System.Collections.Concurrent.ConcurrentQueue<string>? _events;

    public FakeVm(string id, string template, System.Collections.Concurrent.ConcurrentQueue<string>? events = null)
    {
        _events = events;
        Id = id;
        TemplateName = template;
        _agentIn = new AnonymousPipeClientStream(PipeDirection.In, _toAgent.ClientSafePipeHandle);
        _agentOut = new AnonymousPipeClientStream(PipeDirection.Out, _fromAgent.ClientSafePipeHandle);
        Agent = new AgentClient(_fromAgent, _toAgent);
        _agentLoop = Task.Run(ServeAsync);
    }

    public string Id { get; }
    public string TemplateName { get; }
    public VmSource Source => VmSource.Restore;
    public AgentClient Agent { get; }
    public TimeSpan StartupTime => TimeSpan.Zero;
    public Task Exited => _exited.Task;
    public bool Disposed { get; private set; }
    /// <summary>When set, the fake agent stops answering pings (a hung guest).</summary>
    public volatile bool Hung;
    private int _requests;
    /// <summary>Requests (ping, reinit...) the fake agent has received.</summary>
    public int Requests => Volatile.Read(ref _requests);

    /// <summary>Every request the fake agent received, in order.</summary>
    public System.Collections.Concurrent.ConcurrentQueue<AgentRequest> Received { get; } = new();

    public VmUsage ReadUsage() => new(0, null);

    private volatile bool _frozen;
    /// <summary>When set, a thaw fails (the VM is lost).</summary>
    public volatile bool FailThaw;
    public bool IsFrozen => _frozen;

    public Task FreezeAsync(CancellationToken cancellationToken)
    {
        _events?.Enqueue(Id + " freeze");
        _frozen = true;
        return Task.CompletedTask;
    }

    public Task ThawAsync(CancellationToken cancellationToken)
    {
        if (FailThaw)
        {
            throw new InvalidOperationException("thaw failed");
        }
        _events?.Enqueue(Id + " thaw");
        _frozen = false;
        return Task.CompletedTask;
    }

    public void Die() => _exited.TrySetResult();

    private async Task ServeAsync()
    {
        var reader = new FrameReader(_agentIn);
        var writer = new FrameWriter(_agentOut);
        try
        {
            while (true)
            {
                var r = await reader.ReadAsync();
                if (r.Outcome == ReadOutcome.EndOfStream)
                {
                    return;
                }
                if (r.Frame.Type == FrameType.Hello)
                {
                    await writer.WriteJsonAsync(FrameType.HelloReply, 0, new HelloReply { ProtocolVersion = ProtocolInfo.Version }, ProtocolJson.Default.HelloReply);
                }
                else if (r.Frame.Type == FrameType.Request)
                {
                    Interlocked.Increment(ref _requests);
                    var request = System.Text.Json.JsonSerializer.Deserialize(r.Frame.Payload.Span, ProtocolJson.Default.AgentRequest)!;
                    _events?.Enqueue($"{Id} {request.Op}{(_frozen ? " while frozen" : "")}");
                    Received.Enqueue(request);
                    if (!Hung)
                    {
                        await writer.WriteJsonAsync(FrameType.Response, r.Frame.Id, new OkBody(), ProtocolJson.Default.OkBody);
                    }
                }
            }
        }
        catch (IOException)
        {
        }
    }

    public async ValueTask DisposeAsync()
    {
        Disposed = true;
        _exited.TrySetResult();
        _toAgent.Dispose();
        _agentOut.Dispose();
        await Agent.DisposeAsync();
        _agentIn.Dispose();
        _fromAgent.Dispose();
        await _agentLoop.WaitAsync(TimeSpan.FromSeconds(2)).ContinueWith(_ => { }, TaskScheduler.Default);
    }
}
