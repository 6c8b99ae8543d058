using System.Net.Http.Json;
using System.Text.Json;
using Microsoft.Extensions.DependencyInjection;
using SandboxVM.Core.Catalog;
using SandboxVM.Core.Singletons;
using SandboxVM.Runtime;

namespace SandboxVM.Functional.Tests;

/// <summary>
/// websearch-tools' way out, end to end: Python in the singleton sandbox fetches the loopback test site and
/// searches its SearXNG-compatible endpoint through the agent's proxy, the agent channel and the host's
/// egress gateway; denied destinations come back with their reason; code templates have no way out.
/// Only 127.0.0.1 is ever contacted.
/// </summary>
public abstract class EgressScenarios(ServerFixture server)
{
    private static CancellationToken Ct => TestContext.Current.CancellationToken;

    private async Task<JsonElement> RunJsonAsync(string template, string code)
    {
        var r = await server.RunAsync(new { template, code, timeout_s = 90 }, Ct);
        Assert.True(r.Status == "ok", r.ToString());
        string last = r.Stdout.TrimEnd().Split('\n')[^1];
        return JsonDocument.Parse(last).RootElement;
    }

    [Fact]
    public async Task Websearch_FetchAndSearch_ThroughTheHost()
    {
        string site = server.Site.BaseUrl;
        string code = $$"""
            import json, subprocess, sys, websearch
            page = websearch.fetch("{{site}}/page")
            redirected = websearch.fetch("{{site}}/redirect/3")
            large = websearch.fetch("{{site}}/large")
            try:
                websearch.fetch("{{site}}/redirect/9")
                too_many = None
            except websearch.WebsearchError as e:
                too_many = e.code
            try:
                websearch.fetch("{{site}}/slow", timeout=2)
                slow = None
            except websearch.WebsearchError as e:
                slow = e.code
            hits = websearch.search("sandbox egress", max_results=3)
            cli = subprocess.run([sys.executable, "-m", "websearch", "fetch", "{{site}}/page"], capture_output=True, text=True)
            cli_search = subprocess.run([sys.executable, "-m", "websearch", "search", "cli query", "--max-results", "2"], capture_output=True, text=True)
            print(json.dumps({"page": page, "redirected": {k: redirected[k] for k in ("status", "final_url", "title")},
                              "large": {k: large[k] for k in ("truncated", "bytes", "status")}, "too_many": too_many, "slow": slow,
                              "hits": hits, "cli": [cli.returncode, json.loads(cli.stdout)["title"]],
                              "cli_search": [cli_search.returncode, len(json.loads(cli_search.stdout)["results"])]}))
            """;
        var o = await RunJsonAsync("websearch-tools", code);

        var page = o.GetProperty("page");
        Assert.Equal(200, page.GetProperty("status").GetInt32());
        Assert.Equal(EgressTestSite.PageTitle, page.GetProperty("title").GetString());
        string text = page.GetProperty("text").GetString()!;
        Assert.Contains(EgressTestSite.PageText, text);
        Assert.Contains("Main heading", text);
        Assert.DoesNotContain("script text", text);
        Assert.DoesNotContain("Footer text", text);
        Assert.DoesNotContain("Navigation", text);
        var links = page.GetProperty("links").EnumerateArray().Select(l => l.GetProperty("url").GetString()).ToList();
        Assert.Contains($"{site}/other", links);
        Assert.Contains($"{site}/abs", links);
        Assert.StartsWith("text/html", page.GetProperty("content_type").GetString());

        var redirected = o.GetProperty("redirected");
        Assert.Equal($"{site}/page", redirected.GetProperty("final_url").GetString());
        Assert.Equal(EgressTestSite.PageTitle, redirected.GetProperty("title").GetString());
        Assert.True(o.GetProperty("large").GetProperty("truncated").GetBoolean());
        Assert.Equal(5 * 1024 * 1024, o.GetProperty("large").GetProperty("bytes").GetInt32());
        Assert.Equal("fetch_failed", o.GetProperty("too_many").GetString());
        Assert.Equal("timeout", o.GetProperty("slow").GetString());

        var hits = o.GetProperty("hits").GetProperty("results").EnumerateArray().ToList();
        Assert.Equal(3, hits.Count);
        Assert.Equal("Result 1 for sandbox egress", hits[0].GetProperty("title").GetString());
        Assert.Equal("https://example.org/1", hits[0].GetProperty("url").GetString());
        Assert.Equal("Snippet 1 about sandbox egress", hits[0].GetProperty("snippet").GetString());

        Assert.Equal(0, o.GetProperty("cli")[0].GetInt32());
        Assert.Equal(EgressTestSite.PageTitle, o.GetProperty("cli")[1].GetString());
        Assert.Equal(0, o.GetProperty("cli_search")[0].GetInt32());
        Assert.Equal(2, o.GetProperty("cli_search")[1].GetInt32());
    }

    [Fact]
    public async Task Websearch_DeniedDestinations_ReportTheReason()
    {
        string code = $$"""
            import json, subprocess, sys, websearch
            out = {}
            for url in ["http://127.0.0.1/", "http://127.0.0.1:{{server.Site.Port + 1}}/", "http://10.0.0.1/", "http://169.254.169.254/latest/meta-data/",
                        "http://{{TestResolver.PrivateName}}/", "https://10.0.0.1/", "http://localhost:{{server.Site.Port}}/page"]:
                try:
                    websearch.fetch(url, timeout=20)
                    out[url] = None
                except websearch.WebsearchError as e:
                    out[url] = [e.code, e.reason, e.message]
            cli = subprocess.run([sys.executable, "-m", "websearch", "fetch", "http://10.0.0.1/"], capture_output=True, text=True)
            out["cli"] = [cli.returncode, json.loads(cli.stdout)]
            print(json.dumps(out))
            """;
        var o = await RunJsonAsync("websearch-tools", code);

        void Denied(string url, string reason)
        {
            var e = o.GetProperty(url);
            Assert.True(e.ValueKind == JsonValueKind.Array, $"{url} was fetched: {o}");
            Assert.Equal("egress_denied", e[0].GetString());
            Assert.Equal(reason, e[1].GetString());
            Assert.False(string.IsNullOrEmpty(e[2].GetString()));
        }
        Denied("http://127.0.0.1/", "private_address");
        Denied($"http://127.0.0.1:{server.Site.Port + 1}/", "port_not_allowed");
        Denied("http://10.0.0.1/", "private_address");
        Denied("http://169.254.169.254/latest/meta-data/", "metadata_endpoint");
        Denied($"http://{TestResolver.PrivateName}/", "private_address");
        Denied("https://10.0.0.1/", "private_address");
        Denied($"http://localhost:{server.Site.Port}/page", "denied_by_rule");

        var cli = o.GetProperty("cli");
        Assert.Equal(2, cli[0].GetInt32());
        Assert.Equal("egress_denied", cli[1].GetProperty("error").GetProperty("code").GetString());
        Assert.Equal("private_address", cli[1].GetProperty("error").GetProperty("reason").GetString());
    }

    [Fact]
    public async Task CodeTemplate_HasNoWayOut()
    {
        string code = $$"""
            import json, os, socket
            def attempt(port):
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=3).close()
                    return "connected"
                except OSError as e:
                    return type(e).__name__
            print(json.dumps({"proxy": [k for k in os.environ if "proxy" in k.lower()],
                              "site": attempt({{server.Site.Port}}), "agent_proxy": attempt(3128)}))
            """;
        var o = await RunJsonAsync("python-data-analysis", code);
        Assert.Empty(o.GetProperty("proxy").EnumerateArray());
        Assert.NotEqual("connected", o.GetProperty("site").GetString());
        Assert.NotEqual("connected", o.GetProperty("agent_proxy").GetString());
    }

    [Fact]
    public async Task ToolsRest_FetchAndSearch_RunInTheSingleton_AndDenialsCarryTheReason()
    {
        using var fetch = await server.Http.PostAsJsonAsync("/v1/tools/fetch", new { url = server.Site.BaseUrl + "/page" }, Ct);
        using var search = await server.Http.PostAsJsonAsync("/v1/tools/search", new { query = "sandbox vm", max_results = 3 }, Ct);
        using var denied = await server.Http.PostAsJsonAsync("/v1/tools/fetch", new { url = "http://169.254.169.254/latest/meta-data/" }, Ct);
        string metrics = await server.Http.GetStringAsync("/metrics", Ct);

        var page = await fetch.Content.ReadFromJsonAsync<JsonElement>(Ct);
        Assert.True(fetch.IsSuccessStatusCode, page.ToString());
        Assert.Equal(EgressTestSite.PageTitle, page.GetProperty("title").GetString());
        Assert.Contains(EgressTestSite.PageText, page.GetProperty("text").GetString());
        var hits = await search.Content.ReadFromJsonAsync<JsonElement>(Ct);
        Assert.True(search.IsSuccessStatusCode, hits.ToString());
        Assert.Equal(3, hits.GetProperty("results").GetArrayLength());
        Assert.Contains("sandbox vm", hits.GetProperty("results")[0].GetProperty("snippet").GetString());
        var problem = await denied.Content.ReadFromJsonAsync<JsonElement>(Ct);
        Assert.Equal(System.Net.HttpStatusCode.Forbidden, denied.StatusCode);
        Assert.Equal("egress_denied", problem.GetProperty("code").GetString());
        Assert.Equal("metadata_endpoint", problem.GetProperty("reason").GetString());
        // Every egress decision is counted: the allowed fetch and the denied one.
        Assert.Matches("sandboxvm_egress_connections\\{[^}]*decision=\"allowed\"", metrics);
        Assert.Matches("sandboxvm_egress_connections\\{[^}]*reason=\"metadata_endpoint\"", metrics);
    }

    [Fact]
    public async Task Websearch_SingletonKilled_IsRestartedWithItsWayOut()
    {
        var singletons = server.Services.GetRequiredService<SingletonManager>();
        var template = server.Services.GetRequiredService<TemplateCatalog>().Find("websearch-tools")!;
        string fetch = $$"""
            import json, websearch
            print(json.dumps({"title": websearch.fetch("{{server.Site.BaseUrl}}/page")["title"]}))
            """;
        Assert.Equal(EgressTestSite.PageTitle, (await RunJsonAsync("websearch-tools", fetch)).GetProperty("title").GetString());
        IVm first = await singletons.UseAsync(template, (vm, _) => Task.FromResult(vm), Ct);
        int restarts = singletons.Status(template.Name)!.Restarts;

        await first.DisposeAsync();

        Assert.Equal(EgressTestSite.PageTitle, (await RunJsonAsync("websearch-tools", fetch)).GetProperty("title").GetString());
        IVm second = await singletons.UseAsync(template, (vm, _) => Task.FromResult(vm), Ct);
        Assert.NotEqual(first.Id, second.Id);
        Assert.True(singletons.Status(template.Name)!.Restarts > restarts);
    }
}

[Collection(ProcessServer.Collection)]
[Trait("tier", "vm")]
public sealed class ProcessEgressTests(ProcessServer server) : EgressScenarios(server);

[Collection(QemuServer.Collection)]
[Trait("tier", "vm")]
public sealed class QemuEgressTests(QemuServer server) : EgressScenarios(server);

[Collection(GvisorServer.Collection)]
[Trait("tier", "vm")]
public sealed class GvisorEgressTests(GvisorServer server) : EgressScenarios(server.OrSkip());
