using System.Diagnostics;
using System.Net;
using System.Net.Http.Headers;
using System.Net.Http.Json;
using System.Security.Cryptography;
using System.Text;
using System.Text.Json;

namespace SandboxVM.Cluster.Tests;

/// <summary>
/// The E2B door's credentials in a cluster: a sandbox's access token and the file URLs it signs hold on
/// every node and after the sandbox moved to another node (drain, shared state directory).
/// </summary>
[Trait("tier", "cluster")]
public sealed class E2bAcrossNodesTests
{
    private static CancellationToken Ct => TestContext.Current.CancellationToken;

    /// <summary>How long a caller keeps trying a call answered 503 (a node leaving, its sandbox being taken over).</summary>
    private static readonly TimeSpan RetryPatience = TimeSpan.FromSeconds(45);

    [Fact]
    public async Task A_sandboxs_token_and_signed_urls_work_through_any_node_and_after_it_moved()
    {
        await using var cluster = await TestCluster.StartOrSkipAsync(2);
        var nodeA = cluster.Nodes[0];
        using var a = E2b(cluster, 0);
        using var b = E2b(cluster, 1);
        JsonElement created;
        using (var response = await a.PostAsJsonAsync("e2b/sandboxes", new { templateID = TestCluster.Template, timeout = 300 }, Ct))
        {
            string text = await response.Content.ReadAsStringAsync(Ct);
            Assert.True(response.StatusCode == HttpStatusCode.Created, $"{(int)response.StatusCode}: {text}");
            created = JsonDocument.Parse(text).RootElement.Clone();
        }
        string id = created.GetProperty("sandboxID").GetString()!;
        string token = created.GetProperty("envdAccessToken").GetString()!;

        // The token given by A, through B (envd's upload, then its download).
        using (var written = await b.SendAsync(Envd(HttpMethod.Post, id, token, "/tmp/e2b.txt", "from-a\n"), Ct))
        {
            Assert.True(written.StatusCode == HttpStatusCode.OK, $"{(int)written.StatusCode}: {await written.Content.ReadAsStringAsync(Ct)}");
        }
        Assert.Equal("from-a\n", await ReadAsync(b, id, token, "/tmp/e2b.txt"));
        // A signed download URL through B (no sandbox named in it: B must find the signer), and a signed upload.
        string download = SignedUrl("/tmp/e2b.txt", "read", token);
        Assert.Equal("from-a\n", await SignedReadAsync(b, download));
        using (var upload = new HttpRequestMessage(HttpMethod.Post, SignedUrl("/tmp/up.txt", "write", token, expiration: DateTimeOffset.UtcNow.AddHours(1)))
        {
            Content = Octets("uploaded\n"),
        })
        using (var uploaded = await b.SendAsync(upload, Ct))
        {
            Assert.True(uploaded.StatusCode == HttpStatusCode.OK, $"{(int)uploaded.StatusCode}: {await uploaded.Content.ReadAsStringAsync(Ct)}");
        }
        Assert.Equal("uploaded\n", await ReadAsync(a, id, token, "/tmp/up.txt"));
        // A signature no sandbox made is refused on every node.
        using (var forged = await b.GetAsync(SignedUrl("/tmp/e2b.txt", "read", "not-the-token"), Ct))
        {
            Assert.Equal(HttpStatusCode.Unauthorized, forged.StatusCode);
        }

        // Paused (through B), its node drained: the sandbox waits in the shared directory, held by no node.
        using (var paused = await b.PostAsync($"e2b/sandboxes/{id}/pause", null, Ct))
        {
            Assert.True(paused.StatusCode == HttpStatusCode.NoContent, $"{(int)paused.StatusCode}: {await paused.Content.ReadAsStringAsync(Ct)}");
        }
        using (var admin = nodeA.Client(TestCluster.Admin))
        using (var drained = await admin.PostAsync("v1/admin/drain", null, Ct))
        {
            string body = await drained.Content.ReadAsStringAsync(Ct);
            Assert.True(drained.StatusCode == HttpStatusCode.OK, body);
            Assert.Contains(id, JsonDocument.Parse(body).RootElement.GetProperty("moved").EnumerateArray().Select(e => e.GetString()));
        }
        using (var exit = new CancellationTokenSource(TimeSpan.FromSeconds(60)))
        {
            await nodeA.Process.WaitForExitAsync(exit.Token);
        }

        // Sandbox.connect(id) through B resumes it there, with the token the SDK already has.
        var clock = Stopwatch.StartNew();
        while (true)
        {
            using var connected = await b.PostAsJsonAsync($"e2b/v2/sandboxes/{id}/connect", new { timeout = 300 }, Ct);
            string text = await connected.Content.ReadAsStringAsync(Ct);
            if (connected.StatusCode == HttpStatusCode.ServiceUnavailable && clock.Elapsed < RetryPatience)
            {
                await Task.Delay(connected.Headers.RetryAfter?.Delta ?? TimeSpan.FromSeconds(1), Ct);
                continue;
            }
            Assert.True(connected.StatusCode == HttpStatusCode.Created, $"{(int)connected.StatusCode}: {text}");
            Assert.Equal(token, JsonDocument.Parse(text).RootElement.GetProperty("envdAccessToken").GetString());
            Assert.Equal(cluster.Nodes[1].Url.ToString(), connected.Headers.GetValues("SandboxVM-Node").Single());
            break;
        }
        Assert.Equal("from-a\n", await ReadAsync(b, id, token, "/tmp/e2b.txt"));
        Assert.Equal("uploaded\n", await SignedReadAsync(b, SignedUrl("/tmp/up.txt", "read", token)));
        Assert.Equal("from-a\n", await SignedReadAsync(b, download));
    }

    /// <summary>A client of node <paramref name="node"/>'s root with alice's key in E2B's header.</summary>
    internal static HttpClient E2b(TestCluster cluster, int node)
    {
        var http = new HttpClient { BaseAddress = cluster.Nodes[node].Url, Timeout = TimeSpan.FromSeconds(60) };
        http.DefaultRequestHeaders.Add("X-API-KEY", TestCluster.Alice);
        return http;
    }

    private static ByteArrayContent Octets(string text)
    {
        var content = new ByteArrayContent(Encoding.UTF8.GetBytes(text));
        content.Headers.ContentType = new MediaTypeHeaderValue("application/octet-stream");
        return content;
    }

    /// <summary>An envd <c>/files</c> call as the SDK makes it: the sandbox in a header, its token in another.</summary>
    private static HttpRequestMessage Envd(HttpMethod method, string id, string token, string path, string? upload = null)
    {
        var request = new HttpRequestMessage(method, "e2b/files?path=" + Uri.EscapeDataString(path));
        request.Headers.Add("E2b-Sandbox-Id", id);
        request.Headers.Add("X-Access-Token", token);
        if (upload is not null)
        {
            request.Content = Octets(upload);
        }
        return request;
    }

    private static async Task<string> ReadAsync(HttpClient http, string id, string token, string path)
    {
        using var response = await http.SendAsync(Envd(HttpMethod.Get, id, token, path), Ct);
        string text = await response.Content.ReadAsStringAsync(Ct);
        Assert.True(response.StatusCode == HttpStatusCode.OK, $"{(int)response.StatusCode}: {text}");
        return text;
    }

    private static async Task<string> SignedReadAsync(HttpClient http, string url)
    {
        using var response = await http.GetAsync(url, Ct);
        string text = await response.Content.ReadAsStringAsync(Ct);
        Assert.True(response.StatusCode == HttpStatusCode.OK, $"{(int)response.StatusCode}: {text}");
        return text;
    }

    /// <summary>
    /// What the SDK's <c>downloadUrl()</c>/<c>uploadUrl()</c> build (e2b 2.51.0, <c>getSignature</c>): <c>/files</c> at the
    /// origin's root, <c>v1_</c> + unpadded base64 of SHA-256(<c>path:operation:user:token[:expiration]</c>).
    /// </summary>
    private static string SignedUrl(string path, string operation, string token, string user = "user", DateTimeOffset? expiration = null)
    {
        string? until = expiration?.ToUnixTimeSeconds().ToString(System.Globalization.CultureInfo.InvariantCulture);
        string raw = $"{path}:{operation}:{user}:{token}" + (until is null ? "" : ":" + until);
        string signature = "v1_" + Convert.ToBase64String(SHA256.HashData(Encoding.UTF8.GetBytes(raw))).TrimEnd('=');
        return $"files?path={Uri.EscapeDataString(path)}&username={user}&signature={Uri.EscapeDataString(signature)}"
            + (until is null ? "" : "&signature_expiration=" + until);
    }
}
