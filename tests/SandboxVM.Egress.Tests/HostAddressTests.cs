using System.Net;
using System.Net.NetworkInformation;

namespace SandboxVM.Egress.Tests;

/// <summary>
/// The host's own addresses are not a way out: a public address of the host reaches the host's
/// services (the API itself, a database bound to 0.0.0.0) as surely as loopback does.
/// </summary>
[Trait("tier", "unit")]
public class HostAddressTests
{
    private static Task<EgressDecision> Evaluate(EgressPolicy policy, string host, int port, MapResolver? resolver = null) =>
        policy.EvaluateAsync(host, port, resolver ?? new MapResolver(), TimeSpan.FromSeconds(5), TestContext.Current.CancellationToken);

    // 93.184.216.34 plays a public address the host has on one of its interfaces.
    private static readonly HostAddresses _host = HostAddresses.Fixed([IPAddress.Parse("93.184.216.34"), IPAddress.Parse("2606:2800:220:1::1")]);

    [Theory]
    [InlineData("93.184.216.34")]
    [InlineData("::ffff:93.184.216.34")]
    [InlineData("[2606:2800:220:1::1]")]
    [InlineData("host.test")]
    public async Task APublicAddressOfTheHost_IsDenied_ByAddressOrByName(string target)
    {
        var policy = EgressPolicy.Create([], [], null, _host);
        var resolver = new MapResolver().Add("host.test", "93.184.216.34");

        var d = await Evaluate(policy, target, 443, resolver);

        Assert.False(d.Allowed);
        Assert.Equal(EgressReason.PrivateAddress, d.Reason);
        Assert.Contains("an address of this host", d.Message);
    }

    [Fact]
    public async Task ANameAllowRule_DoesNotOpenTheHost()
    {
        var policy = EgressPolicy.Create(["*.example.com"], [], null, _host);
        var resolver = new MapResolver().Add("www.example.com", "93.184.216.34");

        Assert.Equal(EgressReason.PrivateAddress, (await Evaluate(policy, "www.example.com", 443, resolver)).Reason);
    }

    [Fact]
    public async Task AnAddressAllowRuleNamingIt_OpensIt()
    {
        var policy = EgressPolicy.Create(["93.184.216.34:8080"], [], [8080], _host);

        Assert.True((await Evaluate(policy, "93.184.216.34", 8080)).Allowed);
        Assert.Equal(EgressReason.PrivateAddress, (await Evaluate(policy, "2606:2800:220:1::1", 8080)).Reason);
    }

    [Fact]
    public async Task OtherPublicAddresses_AreStillAllowed()
    {
        var policy = EgressPolicy.Create([], [], null, _host);

        Assert.True((await Evaluate(policy, "93.184.216.35", 443)).Allowed);
    }

    [Fact]
    public void TheSystemList_HoldsEveryInterfaceAddress()
    {
        var expected = NetworkInterface.GetAllNetworkInterfaces()
            .SelectMany(i => i.GetIPProperties().UnicastAddresses)
            .Select(u => u.Address.AddressFamily == System.Net.Sockets.AddressFamily.InterNetworkV6 ? new IPAddress(u.Address.GetAddressBytes()) : u.Address)
            .ToList();

        Assert.Contains(IPAddress.Loopback, HostAddresses.System.Current);
        Assert.NotEmpty(expected);
        foreach (var address in expected)
        {
            Assert.True(HostAddresses.System.Contains(address), $"{address} is on an interface but not in the host's list");
        }
    }

    [Fact]
    public async Task ByDefault_APolicyDeniesTheHostsOwnAddresses()
    {
        var policy = EgressPolicy.Create([], []);
        Assert.Same(HostAddresses.System, policy.Host);
        foreach (var address in HostAddresses.System.Current)
        {
            Assert.False((await Evaluate(policy, address.ToString(), 443)).Allowed, $"{address} is the host's own");
        }
    }
}
