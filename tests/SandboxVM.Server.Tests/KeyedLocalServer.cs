using SandboxVM.Testing;

namespace SandboxVM.Server.Tests;

/// <summary>
/// The real server on loopback with API keys (alice, bob and what <see cref="Configure"/> adds) and the local agent's
/// sandboxes with <see cref="LocalAgentServer.Templates"/> plus the fixture's own: the set-up of the fixtures whose
/// tests drive the server through another protocol's client (MCP, E2B). Skips where the local agent cannot run.
/// </summary>
public abstract class KeyedLocalServer<TSelf> : IAsyncLifetime where TSelf : KeyedLocalServer<TSelf>
{
    private readonly TestKeys _keys = new();
    private LoopbackServer? _server;

    public LocalAgentRuntime Runtime { get; private set; } = null!;

    public Uri BaseUri => _server!.BaseUri;

    public HttpClient Http => _server!.Http;

    /// <summary>The fixture's keys (default: alice, bob, an admin) and templates (name to YAML) before the server starts.</summary>
    private protected virtual void Configure(TestKeys keys, Dictionary<string, string> templates) => keys.WithDefaults();

    public async ValueTask InitializeAsync()
    {
        if (LocalAgentRuntime.UnavailableReason is not null)
        {
            return;
        }
        Runtime = new LocalAgentRuntime();
        var templates = LocalAgentServer.Templates();
        Configure(_keys, templates);
        _server = await LoopbackServer.StartAsync(Runtime, templates, o =>
        {
            o.HostTimeoutMarginS = 2;
            o.ApiKeysFile = _keys.Path;
        });
    }

    public TSelf OrSkip()
    {
        Assert.SkipWhen(LocalAgentRuntime.UnavailableReason is not null, $"local agent runtime: {LocalAgentRuntime.UnavailableReason}");
        return (TSelf)this;
    }

    /// <summary>
    /// Why <paramref name="imports"/> fail in this server's sandboxes of <paramref name="template"/> (the local agent runs
    /// the host's python3, with the sandbox's PATH), or null: asked of a sandbox, not of this process's python3.
    /// </summary>
    public async Task<string?> ModulesMissingAsync(string template, string imports, CancellationToken ct)
    {
        using var client = new SandboxVM.Client.SandboxClient(BaseUri.ToString(), TestKeys.Alice);
        var probe = await client.RunAsync(new SandboxVM.Client.RunRequest { Template = template, Code = "import " + imports }, ct);
        return probe.Status == SandboxVM.Client.RunStatus.Ok ? null
            : probe.Stderr.Contains("No module named", StringComparison.Ordinal)
                ? $"a module of {imports} is not installed on this host (scripts/install-deps.sh installs python3-matplotlib and python3-pandas): {probe.Stderr.Trim()}"
                : throw new InvalidOperationException($"the probe of {imports} failed: {probe.Status} {probe.Error} {probe.Stderr}");
    }

    public async ValueTask DisposeAsync()
    {
        if (_server is not null)
        {
            await _server.DisposeAsync();
        }
        if (Runtime is not null)
        {
            await Runtime.DisposeAsync();
        }
        _keys.Dispose();
        GC.SuppressFinalize(this);
    }
}
