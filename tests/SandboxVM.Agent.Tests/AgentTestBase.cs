using SandboxVM.Protocol;

namespace SandboxVM.Agent.Tests;

/// <summary>Gives each test its own agent process (xunit makes a class instance per test).</summary>
public abstract class AgentTestBase : IAsyncLifetime
{
    private AgentHarness? _agent;

    internal AgentHarness Agent => _agent ?? throw new InvalidOperationException("agent not started");

    protected static CancellationToken Ct => TestContext.Current.CancellationToken;

    public async ValueTask InitializeAsync()
    {
        _agent = await AgentHarness.StartAsync();
        await _agent.HelloAsync(Ct);
    }

    public async ValueTask DisposeAsync()
    {
        if (_agent is not null)
        {
            await _agent.DisposeAsync();
        }
        GC.SuppressFinalize(this);
    }

    /// <summary>An exec of <c>sh -c script</c> in the test's home, artifacts in its own outputs dir.</summary>
    internal ExecRequest Shell(string script, int timeoutMs = 10_000) => new()
    {
        Cwd = Agent.Home,
        OutputsDir = Agent.Outputs,
        Run = ["sh", "-c", script],
        RunTimeoutMs = timeoutMs,
    };
}
