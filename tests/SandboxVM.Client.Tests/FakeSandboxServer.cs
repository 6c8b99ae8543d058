using System.Net;
using System.Net.Http.Headers;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;

namespace SandboxVM.Client.Tests;

/// <summary>
/// An in-memory stand-in for the sandbox part of the API (docs/API.md): sandboxes, files, artifacts and runs, with no
/// network. Records every request (method, path and query as sent, headers, body bytes) for assertions.
/// </summary>
internal sealed class FakeSandboxServer : HttpMessageHandler
{
    private readonly Dictionary<string, JsonObject> _sandboxes = [];
    private int _nextId;

    /// <summary>A request as received; ContentLength is the body's length as the client declared it (null: sent chunked), taken before reading it.</summary>
    public sealed record Recorded(HttpMethod Method, string PathAndQuery, HttpRequestMessage Request, byte[]? Body, HttpContent? Content, long? ContentLength);

    public List<Recorded> Requests { get; } = [];

    /// <summary>Files per sandbox: path as the client sent it → bytes.</summary>
    public Dictionary<string, byte[]> Files { get; } = [];

    /// <summary>Artifacts of every sandbox: relative path → (mime, bytes).</summary>
    public Dictionary<string, (string Mime, byte[] Bytes)> Artifacts { get; } = [];

    /// <summary>Upload limit, like the server's 100 MB, but small.</summary>
    public int MaxUploadBytes { get; set; } = 1024 * 1024;

    /// <summary>What a run answers: JSON RunResult for a JSON request; the SSE text for an event-stream request.</summary>
    public string RunResultJson { get; set; } = """{"stdout":"1\n","output":"1\n","exit_code":0,"status":"ok","result":"1","state_reset":true}""";

    public Func<Stream>? RunEventStream { get; set; }

    /// <summary>Answers the next DELETE of a sandbox with this response instead (once).</summary>
    public HttpResponseMessage? NextDeleteResponse { get; set; }

    /// <summary>Called with each request before its body is read (to see what the client did before sending).</summary>
    public Action<HttpRequestMessage>? BeforeBody { get; set; }

    public Recorded Last => Requests[^1];

    public SandboxClient Client(string baseUrl = "http://sandbox.test:8000", string? apiKey = null) =>
        new(new SandboxClientOptions { BaseUrl = baseUrl, ApiKey = apiKey, HttpMessageHandler = this });

    public SandboxCreateOptions Options(double? timeoutS = null) =>
        new() { BaseUrl = "http://sandbox.test:8000", HttpMessageHandler = this, TimeoutS = timeoutS };

    public int Count(HttpMethod method, string pathPrefix) =>
        Requests.Count(r => r.Method == method && r.PathAndQuery.StartsWith(pathPrefix, StringComparison.Ordinal));

    protected override async Task<HttpResponseMessage> SendAsync(HttpRequestMessage request, CancellationToken cancellationToken)
    {
        BeforeBody?.Invoke(request);
        var length = request.Content?.Headers.ContentLength;
        byte[]? body = request.Content is null ? null : await request.Content.ReadAsByteArrayAsync(cancellationToken);
        var pathAndQuery = request.RequestUri!.PathAndQuery;
        Requests.Add(new Recorded(request.Method, pathAndQuery, request, body, request.Content, length));
        var response = Route(request, body);
        response.RequestMessage = request;
        return response;
    }

    private HttpResponseMessage Route(HttpRequestMessage request, byte[]? body)
    {
        var uri = request.RequestUri!;
        var segments = uri.AbsolutePath.Trim('/').Split('/');
        var query = ParseQuery(uri.Query);
        var method = request.Method;
        if (segments is not ["v1", "sandboxes", ..])
        {
            return FakeHandler.Problem(HttpStatusCode.NotFound, "not_found");
        }

        if (segments.Length == 2)
        {
            if (method == HttpMethod.Get)
            {
                return Json(HttpStatusCode.OK, new JsonObject { ["sandboxes"] = new JsonArray(_sandboxes.Values.Select(s => (JsonNode)s.DeepClone()).ToArray()) });
            }

            var create = JsonNode.Parse(body!)!.AsObject();
            var id = "sb-" + ++_nextId;
            var info = new JsonObject
            {
                ["id"] = id,
                ["template"] = create["template"]!.GetValue<string>(),
                ["state"] = "running",
                ["created_at"] = "2026-11-28T21:30:00.123Z",
                ["expires_at"] = "2026-11-28T21:35:00.123Z",
                ["last_activity_at"] = "2026-11-28T21:30:00.123Z",
                ["timeout_s"] = create["timeout_s"]?.GetValue<double>() ?? 300,
                ["idle_timeout_s"] = create["idle_timeout_s"]?.GetValue<double>() ?? 60,
                ["metadata"] = create["metadata"]?.DeepClone() ?? new JsonObject(),
                ["runtime"] = "qemu",
                ["vm_source"] = "pool",
                ["startup_ms"] = 12.5,
            };
            _sandboxes[id] = info;
            return Json(HttpStatusCode.Created, info);
        }

        var sandboxId = Uri.UnescapeDataString(segments[2]);
        if (!_sandboxes.TryGetValue(sandboxId, out var sandbox))
        {
            return FakeHandler.Problem(HttpStatusCode.NotFound, "sandbox_not_found", detail: $"No sandbox '{sandboxId}'.");
        }

        switch (segments[3..])
        {
            case [] when method == HttpMethod.Get:
                return Json(HttpStatusCode.OK, sandbox);
            case [] when method == HttpMethod.Delete:
                if (NextDeleteResponse is { } canned)
                {
                    NextDeleteResponse = null;
                    return canned;
                }

                _sandboxes.Remove(sandboxId);
                return new HttpResponseMessage(HttpStatusCode.NoContent);
            case ["keepalive"]:
                var seconds = body is { Length: > 0 } ? JsonNode.Parse(body)!["timeout_s"]!.GetValue<double>() : 300;
                sandbox["expires_at"] = new DateTimeOffset(2026, 11, 28, 21, 30, 0, TimeSpan.Zero).AddSeconds(seconds).ToString("O");
                return Json(HttpStatusCode.OK, sandbox);
            case ["run"]:
                if (request.Headers.Accept.Any(a => a.MediaType == "text/event-stream") && RunEventStream is { } events)
                {
                    var content = new StreamContent(events());
                    content.Headers.ContentType = new MediaTypeHeaderValue("text/event-stream");
                    return new HttpResponseMessage(HttpStatusCode.OK) { Content = content };
                }

                return FakeHandler.Response(HttpStatusCode.OK, RunResultJson);
            case ["files"]:
                return FileCall(method, query, body);
            case ["files", "mkdir"]:
                return Json(HttpStatusCode.OK, FileInfo(query["path"], "directory", 4096));
            case ["artifacts"]:
                return Json(HttpStatusCode.OK, new JsonObject
                {
                    ["artifacts"] = new JsonArray(Artifacts.Select(a => (JsonNode)new JsonObject
                    {
                        ["path"] = a.Key, ["mime"] = a.Value.Mime, ["size"] = a.Value.Bytes.Length, ["sha256"] = "00",
                    }).ToArray()),
                });
            case ["artifacts", ..]:
                var artifactPath = string.Join('/', segments[4..].Select(Uri.UnescapeDataString));
                if (!Artifacts.TryGetValue(artifactPath, out var artifact))
                {
                    return FakeHandler.Problem(HttpStatusCode.NotFound, "file_not_found");
                }

                var bytes = new ByteArrayContent(artifact.Bytes);
                bytes.Headers.ContentType = new MediaTypeHeaderValue(artifact.Mime);
                return new HttpResponseMessage(HttpStatusCode.OK) { Content = bytes };
            default:
                return FakeHandler.Problem(HttpStatusCode.NotFound, "not_found");
        }
    }

    private HttpResponseMessage FileCall(HttpMethod method, Dictionary<string, string> query, byte[]? body)
    {
        var path = query["path"];
        if (path.Contains('\0', StringComparison.Ordinal) || path.StartsWith("/proc", StringComparison.Ordinal))
        {
            return FakeHandler.Problem(HttpStatusCode.BadRequest, "invalid_path", "path");
        }

        if (method == HttpMethod.Put)
        {
            if (body!.Length > MaxUploadBytes)
            {
                return FakeHandler.Problem(HttpStatusCode.RequestEntityTooLarge, "file_too_large");
            }

            Files[path] = body;
            return Json(HttpStatusCode.OK, FileInfo(path, "file", body.Length));
        }

        if (method == HttpMethod.Get && query.ContainsKey("list"))
        {
            var prefix = path == "." ? "" : path.TrimEnd('/') + "/";
            var entries = Files.Where(f => f.Key.StartsWith(prefix, StringComparison.Ordinal) && !f.Key[prefix.Length..].Contains('/', StringComparison.Ordinal))
                .Select(f => (JsonNode)FileInfo(f.Key, "file", f.Value.Length)).ToArray();
            return Json(HttpStatusCode.OK, new JsonObject { ["path"] = path, ["entries"] = new JsonArray(entries) });
        }

        if (!Files.TryGetValue(path, out var content))
        {
            return FakeHandler.Problem(HttpStatusCode.NotFound, "file_not_found", "path", $"No file '{path}'.");
        }

        if (method == HttpMethod.Delete)
        {
            Files.Remove(path);
            return new HttpResponseMessage(HttpStatusCode.NoContent);
        }

        var octets = new ByteArrayContent(content);
        octets.Headers.ContentType = new MediaTypeHeaderValue("application/octet-stream");
        return new HttpResponseMessage(HttpStatusCode.OK) { Content = octets };
    }

    private static JsonObject FileInfo(string path, string kind, long size) => new()
    {
        ["path"] = path.StartsWith('/') ? path : "/home/sandbox/" + path,
        ["name"] = path.Split('/')[^1],
        ["kind"] = kind,
        ["size"] = size,
        ["mtime"] = "2026-11-28T21:30:00Z",
    };

    private static Dictionary<string, string> ParseQuery(string query)
    {
        var result = new Dictionary<string, string>();
        foreach (var pair in query.TrimStart('?').Split('&', StringSplitOptions.RemoveEmptyEntries))
        {
            var parts = pair.Split('=', 2);
            result[Uri.UnescapeDataString(parts[0])] = parts.Length > 1 ? Uri.UnescapeDataString(parts[1].Replace('+', ' ')) : "";
        }

        return result;
    }

    private static HttpResponseMessage Json(HttpStatusCode status, JsonNode node) =>
        new(status) { Content = new StringContent(node.ToJsonString(), Encoding.UTF8, "application/json") };
}
