using System.Net;
using Microsoft.Extensions.Logging.Abstractions;
using SandboxVM.Core.Egress;
using SandboxVM.Core.Templates;
using SandboxVM.Egress;

namespace SandboxVM.Core.Tests.Egress;

[Trait("tier", "unit")]
public sealed class EgressBridgeTests
{
    private static readonly TemplateDefinition _websearch = TemplateRegistry.LoadFile(Path.Combine(RepoRoot(), "templates", "websearch-tools.yaml"));

    private static Task<EgressDecision> Evaluate(EgressPolicy policy, string host, int port) =>
        policy.EvaluateAsync(host, port, new MapResolver(), TimeSpan.FromSeconds(5), TestContext.Current.CancellationToken);

    [Theory]
    [InlineData("127.0.0.1", 80, "private_address")]
    [InlineData("10.0.0.1", 443, "private_address")]
    [InlineData("169.254.169.254", 80, "metadata_endpoint")]
    [InlineData("metadata.google.internal", 80, "denied_by_rule")]
    [InlineData("localhost", 80, "denied_by_rule")]
    [InlineData("private.test", 80, "private_address")]
    [InlineData("127.0.0.1", 8080, "port_not_allowed")]
    [InlineData("93.184.216.34", 443, "allowed")]
    public async Task DefaultPolicy_OfWebsearchTools(string host, int port, string reason)
    {
        var bridge = new EgressBridge(new SandboxVmOptions(), NullLoggerFactory.Instance);
        Assert.Equal(reason, (await Evaluate(bridge.PolicyFor(_websearch), host, port)).ReasonCode);
    }

    [Fact]
    public async Task EgressAllow_OpensExactlyTheNamedAddressAndPort()
    {
        var bridge = new EgressBridge(new SandboxVmOptions { EgressAllow = ["127.0.0.1:8080"] }, NullLoggerFactory.Instance);
        var policy = bridge.PolicyFor(_websearch);
        Assert.Equal("allowed", (await Evaluate(policy, "127.0.0.1", 8080)).ReasonCode);
        Assert.Equal("private_address", (await Evaluate(policy, "127.0.0.1", 80)).ReasonCode);
        Assert.Equal("port_not_allowed", (await Evaluate(policy, "127.0.0.2", 8080)).ReasonCode);
        Assert.Equal("denied_by_rule", (await Evaluate(policy, "localhost", 8080)).ReasonCode);
    }

    [Fact]
    public async Task EgressPorts_AreAddedToTheTemplatePorts()
    {
        var bridge = new EgressBridge(new SandboxVmOptions { EgressPorts = [8443] }, NullLoggerFactory.Instance);
        var policy = bridge.PolicyFor(_websearch);
        Assert.Equal(new HashSet<int> { 80, 443, 8443 }, policy.AllowedPorts.ToHashSet());
        Assert.Equal("allowed", (await Evaluate(policy, "93.184.216.34", 8443)).ReasonCode);
    }

    private sealed class MapResolver : IEgressResolver
    {
        public Task<IReadOnlyList<IPAddress>> ResolveAsync(string host, CancellationToken cancellationToken) => host switch
        {
            "private.test" => Task.FromResult<IReadOnlyList<IPAddress>>([IPAddress.Parse("10.1.2.3")]),
            _ => throw new InvalidOperationException("no DNS in tests"),
        };
    }

    private static string RepoRoot()
    {
        for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir is not null; dir = dir.Parent)
        {
            if (File.Exists(Path.Combine(dir.FullName, "SandboxVM.slnx")))
            {
                return dir.FullName;
            }
        }
        throw new InvalidOperationException("repository root not found");
    }
}
