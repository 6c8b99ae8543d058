using System.Net;
using Microsoft.Extensions.Time.Testing;

namespace SandboxVM.Egress.Tests;

[Trait("tier", "unit")]
public class EgressPolicyTests
{
    private static readonly TimeSpan ResolveTimeout = TimeSpan.FromSeconds(5);

    /// <summary>The deny list templates/websearch-tools.yaml had before egress shipped (address ranges as deny rules).</summary>
    private static readonly string[] TemplateDeny =
    [
        "0.0.0.0/8", "10.0.0.0/8", "100.64.0.0/10", "127.0.0.0/8", "169.254.0.0/16", "172.16.0.0/12", "192.168.0.0/16",
        "::/128", "::1/128", "::ffff:0:0/96", "fc00::/7", "fe80::/10",
        "metadata.google.internal", "metadata.goog", "localhost",
    ];

    private static Task<EgressDecision> Evaluate(EgressPolicy policy, string host, int port, MapResolver? resolver = null) =>
        policy.EvaluateAsync(host, port, resolver ?? new MapResolver(), ResolveTimeout, TestContext.Current.CancellationToken);

    [Theory]
    [InlineData("0.1.2.3", "this-network")]
    [InlineData("10.1.2.3", "private")]
    [InlineData("100.64.0.1", "carrier-grade NAT")]
    [InlineData("100.127.255.254", "carrier-grade NAT")]
    [InlineData("127.0.0.1", "loopback")]
    [InlineData("127.255.255.254", "loopback")]
    [InlineData("169.254.1.1", "link-local")]
    [InlineData("172.16.0.1", "private")]
    [InlineData("172.31.255.255", "private")]
    [InlineData("192.168.1.1", "private")]
    [InlineData("192.0.0.8", "IETF protocol assignments")]
    [InlineData("192.0.2.1", "documentation")]
    [InlineData("198.18.0.1", "benchmarking")]
    [InlineData("198.19.255.255", "benchmarking")]
    [InlineData("198.51.100.7", "documentation")]
    [InlineData("203.0.113.5", "documentation")]
    [InlineData("224.0.0.1", "multicast")]
    [InlineData("239.255.255.250", "multicast")]
    [InlineData("240.0.0.1", "reserved")]
    [InlineData("255.255.255.255", "reserved")]
    [InlineData("::", "unspecified")]
    [InlineData("::1", "loopback")]
    [InlineData("::1.2.3.4", "IPv4-compatible")]
    [InlineData("fe80::1", "link-local")]
    [InlineData("fc00::1", "unique-local")]
    [InlineData("fd12:3456::1", "unique-local")]
    [InlineData("ff02::1", "multicast")]
    [InlineData("2001:db8::1", "documentation")]
    [InlineData("2002:a00:1::1", "6to4")]
    [InlineData("100::1", "discard-only")]
    [InlineData("fec0::1", "site-local")]
    [InlineData("4000::1", "reserved (outside 2000::/3)")]
    [InlineData("::ffff:10.0.0.1", "private (10.0.0.0/8, IPv4-mapped)")]
    [InlineData("::ffff:127.0.0.1", "loopback (127.0.0.0/8, IPv4-mapped)")]
    [InlineData("64:ff9b::a00:1", "private (10.0.0.0/8, NAT64)")]
    public async Task Every_non_public_range_is_denied_as_private_address(string address, string kind)
    {
        var policy = EgressPolicy.Create([], []);
        Assert.Contains(kind, EgressAddressRanges.ClassifyNonPublic(IPAddress.Parse(address)));

        var d = await Evaluate(policy, address, 443);

        Assert.False(d.Allowed);
        Assert.Equal(EgressReason.PrivateAddress, d.Reason);
        Assert.Equal("private_address", d.ReasonCode);
        Assert.Equal(IPAddress.Parse(address), d.Address);
        Assert.Contains(":443", d.Message);
    }

    [Theory]
    [InlineData("93.184.216.34")]
    [InlineData("172.15.255.255")]
    [InlineData("172.32.0.0")]
    [InlineData("100.63.255.255")]
    [InlineData("100.128.0.0")]
    [InlineData("11.0.0.1")]
    [InlineData("198.20.0.1")]
    [InlineData("2606:4700::1111")]
    [InlineData("::ffff:93.184.216.34")]
    [InlineData("64:ff9b::5db8:d822")]
    public async Task Public_addresses_are_allowed_when_the_allow_list_is_empty(string address)
    {
        Assert.Null(EgressAddressRanges.ClassifyNonPublic(IPAddress.Parse(address)));
        var d = await Evaluate(EgressPolicy.Create([], []), address, 443);
        Assert.True(d.Allowed, d.Message);
        Assert.Equal(EgressReason.Allowed, d.Reason);
        Assert.Equal(IPAddress.Parse(address), d.Address);
    }

    [Theory]
    [InlineData("169.254.169.254")]
    [InlineData("169.254.170.2")]
    [InlineData("fd00:ec2::254")]
    [InlineData("::ffff:169.254.169.254")]
    [InlineData("100.100.100.200")]
    public async Task Metadata_addresses_are_denied_even_when_an_allow_rule_covers_them(string address)
    {
        var policy = EgressPolicy.Create(["169.254.0.0/16", "fd00::/8", "100.64.0.0/10", "::ffff:0:0/96", address], []);
        var d = await Evaluate(policy, address, 80);
        Assert.Equal(EgressReason.MetadataEndpoint, d.Reason);
        Assert.Contains("metadata", d.Message);
    }

    [Theory]
    [InlineData("metadata.google.internal")]
    [InlineData("METADATA.Google.Internal.")]
    [InlineData("metadata.goog")]
    [InlineData("instance-data.ec2.internal")]
    public async Task Metadata_names_are_denied_without_resolving(string name)
    {
        var resolver = new MapResolver().Add(name.ToLowerInvariant().TrimEnd('.'), "93.184.216.34");
        var d = await Evaluate(EgressPolicy.Create(["*.internal", "metadata.goog"], []), name, 80, resolver);
        Assert.Equal(EgressReason.MetadataEndpoint, d.Reason);
        Assert.Equal(0, resolver.Calls);
    }

    [Fact]
    public async Task A_name_resolving_to_a_private_address_is_denied()
    {
        var resolver = new MapResolver().Add("private.test", "10.1.2.3");
        var d = await Evaluate(EgressPolicy.Create([], []), "private.test", 443, resolver);
        Assert.Equal(EgressReason.PrivateAddress, d.Reason);
        Assert.Equal(IPAddress.Parse("10.1.2.3"), d.Address);
        Assert.Contains("private.test:443 (10.1.2.3)", d.Message);
        Assert.Equal(1, resolver.Calls);
    }

    [Fact]
    public async Task A_name_allow_rule_does_not_override_the_address_check()
    {
        var resolver = new MapResolver().Add("internal.example.com", "192.168.7.7").Add("www.example.com", "93.184.216.34");
        var policy = EgressPolicy.Create(["*.example.com"], []);
        Assert.Equal(EgressReason.PrivateAddress, (await Evaluate(policy, "internal.example.com", 443, resolver)).Reason);
        Assert.True((await Evaluate(policy, "www.example.com", 443, resolver)).Allowed);
    }

    [Fact]
    public async Task Every_resolved_address_must_pass()
    {
        var resolver = new MapResolver().Add("mixed.test", "93.184.216.34", "10.0.0.1");
        var d = await Evaluate(EgressPolicy.Create([], []), "mixed.test", 443, resolver);
        Assert.Equal(EgressReason.PrivateAddress, d.Reason);
        Assert.Equal(IPAddress.Parse("10.0.0.1"), d.Address);
        Assert.Equal(2, d.Addresses.Count);
    }

    [Fact]
    public async Task Wildcards_match_subdomains_only()
    {
        var resolver = new MapResolver()
            .Add("a.example.com", "93.184.216.34").Add("a.b.example.com", "93.184.216.34")
            .Add("example.com", "93.184.216.34").Add("badexample.com", "93.184.216.34").Add("example.com.evil.test", "93.184.216.34");
        var policy = EgressPolicy.Create(["*.example.com"], []);
        Assert.True((await Evaluate(policy, "a.example.com", 443, resolver)).Allowed);
        Assert.True((await Evaluate(policy, "A.B.Example.COM.", 443, resolver)).Allowed);
        Assert.Equal(EgressReason.NotInAllowList, (await Evaluate(policy, "example.com", 443, resolver)).Reason);
        Assert.Equal(EgressReason.NotInAllowList, (await Evaluate(policy, "badexample.com", 443, resolver)).Reason);
        Assert.Equal(EgressReason.NotInAllowList, (await Evaluate(policy, "example.com.evil.test", 443, resolver)).Reason);
    }

    [Fact]
    public async Task With_an_allow_list_only_matching_public_destinations_are_allowed()
    {
        var resolver = new MapResolver().Add("api.example.com", "93.184.216.34").Add("other.test", "93.184.216.35");
        var policy = EgressPolicy.Create(["api.example.com", "8.8.8.0/24"], []);
        Assert.True((await Evaluate(policy, "api.example.com", 443, resolver)).Allowed);
        Assert.True((await Evaluate(policy, "8.8.8.8", 443, resolver)).Allowed);
        var d = await Evaluate(policy, "other.test", 443, resolver);
        Assert.Equal(EgressReason.NotInAllowList, d.Reason);
        Assert.Equal("not_in_allow_list", d.ReasonCode);
    }

    [Fact]
    public async Task Deny_beats_allow_for_names_and_addresses()
    {
        var resolver = new MapResolver().Add("bad.example.com", "93.184.216.34").Add("good.example.com", "93.184.216.40");
        var policy = EgressPolicy.Create(["*.example.com", "127.0.0.1", "93.184.216.0/24"], ["bad.example.com", "127.0.0.0/8", "93.184.216.40"]);

        var byName = await Evaluate(policy, "bad.example.com", 443, resolver);
        Assert.Equal(EgressReason.DeniedByRule, byName.Reason);
        Assert.Contains("'bad.example.com'", byName.Message);
        Assert.Equal(0, resolver.Calls); // a name denied by rule is never resolved

        Assert.Equal(EgressReason.DeniedByRule, (await Evaluate(policy, "127.0.0.1", 443, resolver)).Reason);
        var byAddress = await Evaluate(policy, "good.example.com", 443, resolver);
        Assert.Equal(EgressReason.DeniedByRule, byAddress.Reason);
        Assert.Equal("denied_by_rule", byAddress.ReasonCode);
    }

    [Fact]
    public async Task An_address_allow_rule_makes_a_loopback_port_reachable()
    {
        var resolver = new MapResolver().Add("loop.test", "127.0.0.1");
        var policy = EgressPolicy.Create(["127.0.0.1"], [], [80, 443, 18080]);
        Assert.True((await Evaluate(policy, "127.0.0.1", 18080, resolver)).Allowed);
        Assert.True((await Evaluate(policy, "loop.test", 18080, resolver)).Allowed);
        Assert.Equal(EgressReason.PortNotAllowed, (await Evaluate(policy, "127.0.0.1", 18081, resolver)).Reason);
        Assert.Equal(EgressReason.PrivateAddress, (await Evaluate(policy, "127.0.0.2", 18080, resolver)).Reason);
    }

    [Fact]
    public async Task Ports_default_to_80_and_443()
    {
        var resolver = new MapResolver().Add("example.com", "93.184.216.34");
        var policy = EgressPolicy.Create([], []);
        Assert.Equal([80, 443], policy.AllowedPorts.Order());
        Assert.True((await Evaluate(policy, "example.com", 80, resolver)).Allowed);
        var d = await Evaluate(policy, "example.com", 22, resolver);
        Assert.Equal(EgressReason.PortNotAllowed, d.Reason);
        Assert.Contains("port 22", d.Message);
        Assert.Equal(1, resolver.Calls); // only the first: the port is checked before resolving
    }

    [Fact]
    public async Task Port_rules_open_and_close_single_ports()
    {
        var resolver = new MapResolver().Add("api.example.com", "93.184.216.34").Add("www.example.com", "93.184.216.35");
        var policy = EgressPolicy.Create(["api.example.com:8443", "[2606:4700::1111]:853", "www.example.com"], ["www.example.com:80"]);
        Assert.True((await Evaluate(policy, "api.example.com", 8443, resolver)).Allowed);
        Assert.Equal(EgressReason.NotInAllowList, (await Evaluate(policy, "api.example.com", 443, resolver)).Reason);
        Assert.True((await Evaluate(policy, "2606:4700::1111", 853, resolver)).Allowed);
        Assert.True((await Evaluate(policy, "[2606:4700::1111]", 853, resolver)).Allowed);
        Assert.Equal(EgressReason.PortNotAllowed, (await Evaluate(policy, "www.example.com", 8443, resolver)).Reason);
        Assert.Equal(EgressReason.DeniedByRule, (await Evaluate(policy, "www.example.com", 80, resolver)).Reason);
        Assert.True((await Evaluate(policy, "www.example.com", 443, resolver)).Allowed);
    }

    [Fact]
    public async Task The_template_deny_list_denies_mapped_addresses_but_not_all_of_IPv4()
    {
        var policy = EgressPolicy.Create([], TemplateDeny);
        var resolver = new MapResolver().Add("example.com", "93.184.216.34").Add("localhost", "127.0.0.1");
        Assert.True((await Evaluate(policy, "example.com", 443, resolver)).Allowed);
        Assert.Equal(EgressReason.DeniedByRule, (await Evaluate(policy, "::ffff:93.184.216.34", 443, resolver)).Reason);
        Assert.Equal(EgressReason.DeniedByRule, (await Evaluate(policy, "::ffff:10.0.0.1", 443, resolver)).Reason);
        Assert.Equal(EgressReason.DeniedByRule, (await Evaluate(policy, "localhost", 443, resolver)).Reason);
        Assert.Equal(EgressReason.DeniedByRule, (await Evaluate(policy, "169.254.169.254", 80, resolver)).Reason);
        Assert.Equal(EgressReason.PrivateAddress, (await Evaluate(policy, "192.0.2.1", 443, resolver)).Reason);
    }

    [Fact]
    public async Task An_address_rule_matches_the_IPv4_address_inside_a_mapped_IPv6_address()
    {
        var policy = EgressPolicy.Create([], ["93.184.216.34"]);
        Assert.Equal(EgressReason.DeniedByRule, (await Evaluate(policy, "::ffff:93.184.216.34", 443)).Reason);
        Assert.True((await Evaluate(policy, "93.184.216.35", 443)).Allowed);
    }

    [Fact]
    public async Task Resolution_failures_are_resolve_failed()
    {
        var policy = EgressPolicy.Create([], []);
        var resolver = new MapResolver().Add("empty.test");
        Assert.Equal(EgressReason.ResolveFailed, (await Evaluate(policy, "unknown.test", 443, resolver)).Reason);
        Assert.Equal(EgressReason.ResolveFailed, (await Evaluate(policy, "empty.test", 443, resolver)).Reason);

        var time = new FakeTimeProvider();
        var slow = new MapResolver { Delay = Timeout.InfiniteTimeSpan }.Add("slow.test", "93.184.216.34");
        var resolving = policy.EvaluateAsync("slow.test", 443, slow, TimeSpan.FromSeconds(5), time, TestContext.Current.CancellationToken);
        Assert.False(resolving.IsCompleted);
        time.Advance(TimeSpan.FromSeconds(5));
        var d = await resolving.WaitAsync(TimeSpan.FromSeconds(20), TestContext.Current.CancellationToken);
        Assert.Equal(EgressReason.ResolveFailed, d.Reason);
        Assert.Contains("longer than", d.Message);
    }

    [Theory]
    [InlineData("", 443)]
    [InlineData("exa mple.com", 443)]
    [InlineData("a..b", 443)]
    [InlineData("-a.com", 443)]
    [InlineData("ex\u00e4mple.com", 443)]
    [InlineData("example.com/path", 443)]
    [InlineData("[example.com]", 443)]
    [InlineData("1.2.3.4.5", 443)]
    [InlineData("1.2.3.4:80", 443)]
    [InlineData("[::1]:443", 443)]
    [InlineData("example.com:443", 443)]
    [InlineData("example.com", 0)]
    [InlineData("example.com", 70000)]
    public async Task Invalid_requests_are_denied(string host, int port)
    {
        var resolver = new MapResolver().Add("example.com", "93.184.216.34");
        var d = await Evaluate(EgressPolicy.Create([], []), host, port, resolver);
        Assert.Equal(EgressReason.InvalidRequest, d.Reason);
        Assert.Equal(0, resolver.Calls);
    }

    [Theory]
    [InlineData("2130706433")]
    [InlineData("127.1")]
    [InlineData("[::1]")]
    [InlineData("[::ffff:7f00:1]")]
    public async Task Numeric_host_forms_are_judged_as_the_address_they_are(string host)
    {
        var resolver = new MapResolver();
        var d = await Evaluate(EgressPolicy.Create([], []), host, 443, resolver);
        Assert.Equal(EgressReason.PrivateAddress, d.Reason);
        Assert.Equal(0, resolver.Calls);
    }

    [Theory]
    [InlineData("example.com", EgressRuleKind.Host, null)]
    [InlineData("*.example.com", EgressRuleKind.Wildcard, null)]
    [InlineData("Example.COM:8443", EgressRuleKind.Host, 8443)]
    [InlineData("10.0.0.1", EgressRuleKind.Address, null)]
    [InlineData("10.0.0.1:22", EgressRuleKind.Address, 22)]
    [InlineData("2001:db8::1", EgressRuleKind.Address, null)]
    [InlineData("[2001:db8::1]:443", EgressRuleKind.Address, 443)]
    [InlineData("10.0.0.0/8", EgressRuleKind.Network, null)]
    [InlineData("10.0.0.0/8:443", EgressRuleKind.Network, 443)]
    [InlineData("10.0.0.1/8", EgressRuleKind.Network, null)]
    [InlineData("fc00::/7", EgressRuleKind.Network, null)]
    [InlineData("[fc00::/7]:443", EgressRuleKind.Network, 443)]
    public void Rules_parse(string text, EgressRuleKind kind, int? port)
    {
        var rule = EgressRule.Parse(text);
        Assert.Equal(kind, rule.Kind);
        Assert.Equal(port, rule.Port);
        Assert.Equal(text, rule.Text);
    }

    [Theory]
    [InlineData("")]
    [InlineData("exa mple.com")]
    [InlineData("*.")]
    [InlineData("*")]
    [InlineData("10.0.0.0/33")]
    [InlineData("example.com:0")]
    [InlineData("example.com:99999")]
    [InlineData("example.com:http")]
    [InlineData("[::1")]
    [InlineData("[example.com]:80")]
    [InlineData("http://example.com")]
    public void Bad_rules_are_rejected_with_the_rule_in_the_message(string text)
    {
        var e = Assert.Throws<FormatException>(() => EgressPolicy.Create([text], []));
        Assert.Contains($"'{text}'", e.Message);
    }

    [Fact]
    public void Bad_ports_are_rejected() =>
        Assert.Throws<ArgumentOutOfRangeException>(() => EgressPolicy.Create([], [], [443, 0]));

    [Fact]
    public async Task An_empty_port_list_allows_only_ports_named_by_allow_rules()
    {
        var resolver = new MapResolver().Add("api.example.com", "93.184.216.34");
        var policy = EgressPolicy.Create(["api.example.com:8443"], [], []);
        Assert.True((await Evaluate(policy, "api.example.com", 8443, resolver)).Allowed);
        Assert.Equal(EgressReason.PortNotAllowed, (await Evaluate(policy, "api.example.com", 443, resolver)).Reason);
    }
}
