using System.CommandLine;
using System.Net.Http.Headers;
using System.Text.Json;

namespace SandboxVM.Cli;

/// <summary><c>sandboxvm node drain</c>: a cluster node hands its sandboxes to the others and leaves (docs/CLUSTER.md).</summary>
internal static class NodeCommand
{
    public static Command Create() => new("node", "Cluster nodes (a server started with serve --cluster)") { DrainCommand() };

    private static Command DrainCommand()
    {
        var url = Common.UrlOption();
        var apiKey = Common.ApiKeyOption();
        var command = new Command("drain",
            "Stop the node at --url taking new work, pause each of its sandboxes into the shared state directory and stop it; "
            + "each sandbox resumes on another node at its next call. Needs an admin key")
        {
            url, apiKey,
        };
        command.SetAction(async (parse, ct) =>
        {
            // A drain pauses every sandbox of the node one or two at a time: minutes under TCG.
            using var http = new HttpClient { Timeout = TimeSpan.FromMinutes(30) };
            using var request = new HttpRequestMessage(HttpMethod.Post, parse.GetValue(url)!.TrimEnd('/') + "/v1/admin/drain");
            if (parse.GetValue(apiKey) is { Length: > 0 } key)
            {
                request.Headers.Authorization = new AuthenticationHeaderValue("Bearer", key);
            }
            string body;
            HttpResponseMessage response;
            try
            {
                response = await http.SendAsync(request, ct);
                body = await response.Content.ReadAsStringAsync(ct);
            }
            catch (HttpRequestException e)
            {
                await Console.Error.WriteLineAsync($"sandboxvm: {request.RequestUri} does not answer: {e.Message}");
                return 2;
            }
            using (response)
            {
                JsonElement root;
                try
                {
                    root = JsonDocument.Parse(body).RootElement;
                }
                catch (JsonException)
                {
                    await Console.Error.WriteLineAsync($"sandboxvm: HTTP {(int)response.StatusCode}: {body}");
                    return 2;
                }
                if (!response.IsSuccessStatusCode)
                {
                    string detail = root.TryGetProperty("detail", out var d) ? d.GetString() ?? "" : body;
                    string code = root.TryGetProperty("code", out var c) ? $" ({c.GetString()})" : "";
                    await Console.Error.WriteLineAsync($"sandboxvm: HTTP {(int)response.StatusCode}{code}: {detail}");
                    return 2;
                }
                foreach (var id in root.GetProperty("moved").EnumerateArray())
                {
                    Console.WriteLine($"moved\t{id.GetString()}");
                }
                int notMoved = 0;
                foreach (var n in root.GetProperty("not_moved").EnumerateArray())
                {
                    notMoved++;
                    Console.WriteLine($"not moved\t{n.GetProperty("id").GetString()}\t{n.GetProperty("code").GetString()}: {n.GetProperty("detail").GetString()}");
                }
                await Console.Error.WriteLineAsync($"sandboxvm: node {root.GetProperty("node").GetString()} drained; it stops now");
                // Sandboxes that could not move end with the node: say so in the exit code.
                return notMoved == 0 ? 0 : 1;
            }
        });
        return command;
    }
}
