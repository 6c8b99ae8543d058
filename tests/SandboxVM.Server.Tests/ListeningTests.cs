using Microsoft.AspNetCore.Http;
using SandboxVM.Core;
using SandboxVM.Egress;

namespace SandboxVM.Server.Tests;

/// <summary>Which listen addresses count as this machine only, and the Host names a server answers by default.</summary>
[Trait("tier", "unit")]
public class ListeningTests
{
    [Theory]
    [InlineData("http://127.0.0.1:8000", true)]
    [InlineData("http://127.0.0.2:8000", true)]
    [InlineData("http://localhost:8000", true)]
    [InlineData("http://[::1]:8000", true)]
    [InlineData("http://unix:/run/sandboxvm.sock", true)]
    [InlineData("http://0.0.0.0:8000", false)]
    [InlineData("http://[::]:8000", false)]
    [InlineData("http://*:8000", false)]
    [InlineData("http://+:8000", false)]
    [InlineData("http://192.0.2.2:8000", false)]
    [InlineData("http://sandbox.example:8000", false)]
    public void IsLoopback(string url, bool loopback) => Assert.Equal(loopback, Listening.IsLoopback(url));

    [Fact]
    public void OnLoopback_OnlyLoopbackNamesAreAnswered()
    {
        var hosts = AllowedHosts.For(new SandboxVmOptions(), ["http://127.0.0.1:8000"]);

        Assert.True(hosts.Allows(new HostString("localhost:8000")));
        Assert.True(hosts.Allows(new HostString("[::1]:8000")));
        Assert.False(hosts.Allows(new HostString(Environment.MachineName)));
        Assert.False(hosts.Allows(new HostString("")));
    }

    [Fact]
    public void BeyondLoopback_TheHostsNameAndEveryInterfaceAddressAreAnsweredToo()
    {
        var hosts = AllowedHosts.For(new SandboxVmOptions(), ["http://0.0.0.0:8000"]);

        Assert.True(hosts.Allows(new HostString(Environment.MachineName)));
        foreach (var address in HostAddresses.System.Current)
        {
            string host = address.AddressFamily == System.Net.Sockets.AddressFamily.InterNetworkV6 ? $"[{address}]" : address.ToString();
            Assert.True(hosts.Allows(new HostString(host + ":8000")), host);
        }
        Assert.False(hosts.Allows(new HostString("evil.example")));
    }
}
