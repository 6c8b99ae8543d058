using System.Net.Sockets;
using SandboxVM.Runtime;
using SandboxVM.Runtime.Agent;

namespace SandboxVM.Testing;

/// <summary>
/// A runtime whose sandboxes are <see cref="FakeAgent"/>s behind a real <see cref="AgentClient"/> on a Unix
/// socket pair: pools, runs, sessions and the HTTP endpoints above it run for real against a guest the
/// test scripts: the honest agent by default (files in a dictionary, an exec that prints and lists its
/// outputs), set up per sandbox by <see cref="Configure"/> before it answers hello (1-based start count).
/// </summary>
public sealed class FakeAgentRuntime : IVmRuntime
{
    private readonly List<FakeAgentVm> _vms = [];
    private int _started;

    public string Name => "fake";
    public RuntimeCapabilities Capabilities { get; } = new(IsolationLevel.Vm, false, false, true);
    public string? Accel => null;

    /// <summary>Called for every agent before it starts (its number, 1-based, and the agent).</summary>
    public Action<int, FakeAgent>? Configure { get; set; }

    /// <summary>Files every new sandbox starts with (guest path to content).</summary>
    public Dictionary<string, byte[]> InitialFiles { get; } = new(StringComparer.Ordinal);

    /// <summary>Awaited by every honest exec of every sandbox before it answers; tests hold runs open with it.</summary>
    public Func<Task> ExecGate { get; set; } = () => Task.CompletedTask;

    /// <summary>Execs every sandbox of this runtime has received.</summary>
    public int Execs => Vms.Sum(v => v.Guest.Execs);

    /// <summary>Limits of the host's AgentClient of every VM started from now on.</summary>
    public AgentClientLimits Limits { get; set; } = AgentClientLimits.Default;

    public IReadOnlyList<FakeAgentVm> Vms
    {
        get
        {
            lock (_vms)
            {
                return [.. _vms];
            }
        }
    }

    public async Task<IVm> StartAsync(VmSpec spec, CancellationToken cancellationToken)
    {
        int n = Interlocked.Increment(ref _started);
        var (host, guest) = FakeAgent.SocketPair();
        var agent = new FakeAgent(guest) { ExecGate = () => ExecGate() };
        foreach (var (path, content) in InitialFiles)
        {
            agent.Files[path] = content;
        }
        Configure?.Invoke(n, agent);
        agent.Start();
        var vm = new FakeAgentVm($"fake-{n}", spec.TemplateName, host, agent, Limits);
        lock (_vms)
        {
            _vms.Add(vm);
        }
        await vm.Agent.HelloAsync(cancellationToken);
        return vm;
    }

    public Task<int> CleanupLeftoversAsync(CancellationToken cancellationToken) => Task.FromResult(0);

    public async ValueTask DisposeAllAsync()
    {
        foreach (var vm in Vms)
        {
            await vm.DisposeAsync();
        }
    }
}

/// <summary>A sandbox of <see cref="FakeAgentRuntime"/>: disposing it is the kill (both ends of the channel close).</summary>
public sealed class FakeAgentVm : IVm
{
    private readonly Socket _host;
    private readonly NetworkStream _stream;
    private readonly TaskCompletionSource _exited = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private int _disposed;

    internal FakeAgentVm(string id, string template, Socket host, FakeAgent guest, AgentClientLimits limits)
    {
        Id = id;
        TemplateName = template;
        _host = host;
        Guest = guest;
        _stream = new NetworkStream(host, ownsSocket: false);
        Agent = new AgentClient(_stream, _stream, limits);
    }

    public string Id { get; }
    public string TemplateName { get; }
    public VmSource Source => VmSource.Boot;
    public AgentClient Agent { get; }
    public FakeAgent Guest { get; }
    public TimeSpan StartupTime => TimeSpan.Zero;
    public Task Exited => _exited.Task;

    /// <summary>True once the host ended this sandbox.</summary>
    public bool Killed => Volatile.Read(ref _disposed) != 0;

    public VmUsage ReadUsage() => new(0, null);

    public async ValueTask DisposeAsync()
    {
        if (Interlocked.Exchange(ref _disposed, 1) != 0)
        {
            return;
        }
        _exited.TrySetResult();
        try
        {
            _host.Shutdown(SocketShutdown.Both);
        }
        catch (SocketException)
        {
        }
        _host.Dispose();
        await Agent.DisposeAsync();
        await _stream.DisposeAsync();
        await Guest.DisposeAsync();
    }
}
