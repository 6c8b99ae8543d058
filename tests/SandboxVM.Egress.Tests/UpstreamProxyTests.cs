using System.Net;

namespace SandboxVM.Egress.Tests;

[Trait("tier", "unit")]
public class UpstreamProxyTests
{
    private static Func<string, string?> Env(params (string Key, string Value)[] vars) =>
        name => vars.FirstOrDefault(v => v.Key == name).Value;

    [Fact]
    public void No_proxy_variable_means_no_proxy() => Assert.Null(UpstreamProxy.FromEnvironment(Env(("HTTP_PROXY", "http://10.0.0.1:3128"))));

    [Fact]
    public void Lower_case_wins_and_NO_PROXY_is_read()
    {
        var p = UpstreamProxy.FromEnvironment(Env(("https_proxy", "http://proxy.test:3128"), ("HTTPS_PROXY", "http://other.test:1"), ("NO_PROXY", "internal.test")))!;
        Assert.Equal("proxy.test", p.Host);
        Assert.Equal(3128, p.Port);
        Assert.True(p.Bypasses("a.internal.test", IPAddress.Parse("93.184.216.34"), 443));
        Assert.False(p.Bypasses("example.com", IPAddress.Parse("93.184.216.34"), 443));
    }

    [Fact]
    public void Upper_case_is_used_when_lower_case_is_absent()
    {
        var p = UpstreamProxy.FromEnvironment(Env(("HTTPS_PROXY", "10.9.9.9:8080"), ("no_proxy", "10.0.0.0/8,.corp.test:8443")))!;
        Assert.Equal("10.9.9.9", p.Host);
        Assert.Equal(8080, p.Port);
        Assert.True(p.Bypasses("x.test", IPAddress.Parse("10.1.1.1"), 443));
        Assert.True(p.Bypasses("a.corp.test", null, 8443));
        Assert.False(p.Bypasses("a.corp.test", null, 443));
    }

    [Fact]
    public void Credentials_are_kept_out_of_the_uri_and_errors()
    {
        var p = UpstreamProxy.Parse("http://me:secret@proxy.test:3128");
        Assert.DoesNotContain("secret", p.Uri.ToString());
        Assert.DoesNotContain("secret", p.ToString());
        var e = Assert.Throws<FormatException>(() => UpstreamProxy.Parse("https://me:secret@proxy.test:3128"));
        Assert.DoesNotContain("secret", e.Message);
        Assert.Contains("only http://", e.Message);
    }

    [Fact]
    public void As_a_web_proxy_it_follows_NO_PROXY()
    {
        var p = UpstreamProxy.Parse("http://127.0.0.1:3128", "search.test").AsWebProxy();
        Assert.Null(p.GetProxy(new Uri("http://search.test/x")));
        Assert.Equal(new Uri("http://127.0.0.1:3128/"), p.GetProxy(new Uri("http://other.test/x")));
    }
}
