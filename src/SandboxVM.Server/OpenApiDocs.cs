using System.Globalization;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Mvc;
using Microsoft.AspNetCore.Mvc.ApiExplorer;
using Microsoft.AspNetCore.OpenApi;
using Microsoft.AspNetCore.Routing;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.OpenApi;

namespace SandboxVM.Server;

/// <summary>
/// The OpenAPI document of the REST API at <c>/openapi/v1.json</c> (Microsoft.AspNetCore.OpenApi). Most handlers
/// read and write JSON through <see cref="HttpContext"/> (for the problems of a bad body), so the framework sees no
/// types: <see cref="Shapes"/> names each operation's request and answers, applied by an operation transformer.
/// Routes of other protocols are left out (<see cref="IsOtherProtocol"/>); a test checks every other route is in
/// the document and every documented operation answers.
/// </summary>
internal static class OpenApiDocs
{
    public const string DocumentPath = "/openapi/v1.json";

    /// <summary>
    /// Not REST: MCP (JSON-RPC) and E2B's API are their own protocols with their own documents (the E2B SDK's signed file
    /// URLs come to /files at the root), and the document itself.
    /// </summary>
    public static bool IsOtherProtocol(string route) =>
        IsUnder(route, Mcp.McpEndpoint.Path) || IsUnder(route, E2b.E2bEndpoints.Prefix) || IsUnder(route, E2b.E2bEnvd.SignedFilesPath) || IsUnder(route, "/openapi");

    private static bool IsUnder(string route, string prefix)
    {
        string path = "/" + route.TrimStart('/');
        return path == prefix || path.StartsWith(prefix + "/", StringComparison.Ordinal);
    }

    /// <summary>One operation's body and answers: <c>null</c> type for a body without schema, <see cref="Binary"/> for raw bytes.</summary>
    internal sealed record Shape(Type? Request, int Status, Type? Response, string? ResponseType = "application/json", int[]? Problems = null);

    /// <summary>Raw bytes (file contents, proxied answers).</summary>
    internal sealed class Binary;

    private static readonly int[] s_one = [400, 404, 409, 429];
    private static readonly int[] s_general = [400, 429];

    /// <summary>Each operation by "METHOD /route".</summary>
    internal static readonly Dictionary<string, Shape> Shapes = new(StringComparer.Ordinal)
    {
        ["GET /healthz"] = new(null, 200, typeof(StatusBody)),
        ["GET /readyz"] = new(null, 200, typeof(ReadyBody)),
        // prometheus-net maps it for every method.
        ["ANY /metrics"] = new(null, 200, typeof(string), "text/plain", [403]),
        ["GET /v1/templates"] = new(null, 200, typeof(TemplateListBody)),
        ["GET /v1/templates/{name}"] = new(null, 200, typeof(TemplateInfo), Problems: [404]),
        ["POST /v1/run"] = new(typeof(RunRequestBody), 200, typeof(RunResultBody), Problems: [400, 413, 415, 422, 429, 503]),
        ["POST /v1/sandboxes"] = new(typeof(CreateSandboxBody), 201, typeof(SandboxInfo), Problems: [400, 404, 415, 429, 503]),
        ["GET /v1/sandboxes"] = new(null, 200, typeof(SandboxListBody), Problems: s_general),
        ["GET /v1/sandboxes/{id}"] = new(null, 200, typeof(SandboxInfo), Problems: [404]),
        ["DELETE /v1/sandboxes/{id}"] = new(null, 204, null, null, [404]),
        ["PATCH /v1/sandboxes/{id}"] = new(typeof(PatchSandboxBody), 200, typeof(SandboxInfo), Problems: [400, 404, 415]),
        ["POST /v1/sandboxes/{id}/keepalive"] = new(typeof(KeepAliveRequest), 200, typeof(SandboxInfo), Problems: [400, 404, 415]),
        ["POST /v1/sandboxes/{id}/pause"] = new(null, 200, typeof(SandboxInfo), Problems: s_one),
        ["POST /v1/sandboxes/{id}/resume"] = new(null, 200, typeof(SandboxInfo), Problems: s_one),
        ["POST /v1/sandboxes/{id}/fork"] = new(typeof(ForkBody), 201, typeof(SandboxListBody), Problems: s_one),
        ["POST /v1/sandboxes/{id}/snapshots"] = new(typeof(SnapshotBody), 201, typeof(SnapshotDto), Problems: s_one),
        ["POST /v1/sandboxes/{id}/run"] = new(typeof(RunRequestBody), 200, typeof(RunResultBody), Problems: [400, 404, 409, 415, 429, 503]),
        ["PUT /v1/sandboxes/{id}/files"] = new(typeof(Binary), 200, typeof(FileInfoDto), Problems: [400, 404, 413]),
        ["GET /v1/sandboxes/{id}/files"] = new(null, 200, typeof(Binary), "application/octet-stream", [400, 404]),
        ["DELETE /v1/sandboxes/{id}/files"] = new(null, 204, null, null, [400, 404]),
        ["POST /v1/sandboxes/{id}/files/mkdir"] = new(null, 200, typeof(FileInfoDto), Problems: [400, 404]),
        ["GET /v1/sandboxes/{id}/artifacts"] = new(null, 200, typeof(ArtifactListBody), Problems: [404]),
        ["GET /v1/sandboxes/{id}/artifacts/{path}"] = new(null, 200, typeof(Binary), "application/octet-stream", [400, 404]),
        ["POST /v1/sandboxes/{id}/commands"] = new(typeof(CommandEndpoints.CommandRequestBody), 200, typeof(CommandEndpoints.CommandBody), Problems: [400, 404, 409, 415, 429]),
        ["GET /v1/sandboxes/{id}/commands"] = new(null, 200, typeof(CommandEndpoints.CommandListBody), Problems: [404]),
        ["GET /v1/sandboxes/{id}/commands/{cid}"] = new(null, 200, typeof(CommandEndpoints.CommandBody), Problems: [404]),
        ["POST /v1/sandboxes/{id}/commands/{cid}/stdin"] = new(typeof(CommandEndpoints.StdinBody), 200, typeof(CommandEndpoints.CommandBody), Problems: [400, 404, 409, 415]),
        ["DELETE /v1/sandboxes/{id}/commands/{cid}"] = new(null, 200, typeof(CommandEndpoints.CommandBody), Problems: [400, 404]),
        ["GET /v1/snapshots"] = new(null, 200, typeof(SnapshotListBody)),
        ["DELETE /v1/snapshots/{name}"] = new(null, 204, null, null, [404]),
        ["POST /v1/tools/search"] = new(typeof(SearchToolRequest), 200, typeof(SearchToolResponse), Problems: [400, 415, 429, 502, 503]),
        ["POST /v1/tools/fetch"] = new(typeof(FetchToolRequest), 200, typeof(FetchToolResponse), Problems: [400, 415, 429, 502, 503]),
        ["GET /v1/tools/definitions"] = new(null, 200, typeof(Mcp.ToolDefinitionsBody), Problems: [400]),
        ["GET /v1/admin/sandboxes"] = new(null, 200, typeof(AdminSandboxListBody), Problems: [403]),
        ["DELETE /v1/admin/sandboxes/{id}"] = new(null, 204, null, null, [403, 404]),
        ["ANY /v1/sandboxes/{id}/ports/{port}/{path}"] = new(typeof(Binary), 200, typeof(Binary), "*/*", [400, 404, 413, 502]),
        ["GET /v1/sandboxes/{id}/pty"] = new(null, 101, null, null, [400, 404]),
        ["POST /v1/sandboxes/{id}/shares"] = new(typeof(PortShares.ShareBody), 201, typeof(PortShares.ShareInfo), Problems: [400, 404, 415]),
        ["ANY /shared/{token}/{path}"] = new(typeof(Binary), 200, typeof(Binary), "*/*", [404, 410, 413, 502]),
        ["GET /v1/admin/keys"] = new(null, 200, typeof(AdminKeysBody), Problems: [403]),
    };

    /// <summary>Operations of a route that takes every method (a sandbox's port: whatever its server answers).</summary>
    internal static readonly string[] AnyMethod = ["GET", "POST", "PUT", "PATCH", "DELETE"];

    public static void AddServices(IServiceCollection services) =>
        services.AddOpenApi(o =>
        {
            o.ShouldInclude = d => !IsOtherProtocol(d.RelativePath ?? "");
            o.AddDocumentTransformer((document, _, _) =>
            {
                document.Info.Title = "SandboxVM API";
                document.Info.Description = "Runs code in microVMs. Every /v1 call takes Authorization: Bearer KEY when the server has keys; "
                    + "refusals are application/problem+json with a stable code (see docs/API.md).";
                return Task.CompletedTask;
            });
            o.AddOperationTransformer(DescribeAsync);
            o.AddDocumentTransformer(AddUndescribedAsync);
        });

    public static void Map(WebApplication app) => app.MapOpenApi(DocumentPath);

    /// <summary>"METHOD /route" of an API description, with catch-all and constraint marks removed.</summary>
    internal static string KeyOf(string method, string route)
    {
        string path = "/" + route.Trim('/');
        path = System.Text.RegularExpressions.Regex.Replace(path, @"\{\*{0,2}([^}:?=]+)[^}]*\}", "{$1}");
        return $"{method.ToUpperInvariant()} {path}";
    }

    private static Task DescribeAsync(OpenApiOperation operation, OpenApiOperationTransformerContext context, CancellationToken ct) =>
        DescribeAsync(operation, context.Description.HttpMethod ?? "GET", context.Description.RelativePath ?? "",
            type => context.GetOrCreateSchemaAsync(type, null, ct));

    /// <summary>
    /// Adds the routes the framework's description leaves out: those without a method of their own (a sandbox's port takes
    /// every method) and those mapped by other libraries (/metrics), each described from <see cref="Shapes"/>.
    /// </summary>
    private static async Task AddUndescribedAsync(OpenApiDocument document, OpenApiDocumentTransformerContext context, CancellationToken ct)
    {
        document.Paths ??= [];
        foreach (var endpoint in context.ApplicationServices.GetRequiredService<EndpointDataSource>().Endpoints.OfType<RouteEndpoint>())
        {
            string path = KeyOf("GET", endpoint.RoutePattern.RawText ?? "")[4..];
            if (IsOtherProtocol(path))
            {
                continue;
            }
            var methods = endpoint.Metadata.GetMetadata<IHttpMethodMetadata>()?.HttpMethods ?? AnyMethod;
            if (!document.Paths.TryGetValue(path, out var found) || found is not OpenApiPathItem item)
            {
                item = new OpenApiPathItem();
                document.Paths[path] = item;
            }
            foreach (string method in methods)
            {
                var verb = HttpMethod.Parse(method);
                if (item.Operations?.ContainsKey(verb) == true)
                {
                    continue;
                }
                var operation = new OpenApiOperation
                {
                    Parameters = [.. endpoint.RoutePattern.Parameters.Select(p => (IOpenApiParameter)new OpenApiParameter
                    {
                        Name = p.Name, In = ParameterLocation.Path, Required = true, Schema = new OpenApiSchema { Type = JsonSchemaType.String },
                    })],
                };
                string key = endpoint.Metadata.GetMetadata<IHttpMethodMetadata>() is null ? "ANY " + path : KeyOf(method, path);
                await DescribeAsync(operation, method, path, key, type => context.GetOrCreateSchemaAsync(type, null, ct));
                item.AddOperation(verb, operation);
            }
        }
    }

    private static Task DescribeAsync(OpenApiOperation operation, string method, string route, Func<Type, Task<OpenApiSchema>> schemaOf) =>
        DescribeAsync(operation, method, route, KeyOf(method, route), schemaOf);

    private static async Task DescribeAsync(OpenApiOperation operation, string method, string route, string key, Func<Type, Task<OpenApiSchema>> schemaOf)
    {
        operation.Responses ??= [];
        if (Shapes.TryGetValue(key, out var shape))
        {
            if (shape.Request is { } request)
            {
                operation.RequestBody = new OpenApiRequestBody
                {
                    Required = request != typeof(Binary),
                    Content = new Dictionary<string, OpenApiMediaType>
                    {
                        [request == typeof(Binary) ? "application/octet-stream" : "application/json"] = new()
                        {
                            Schema = request == typeof(Binary) ? BinarySchema() : await schemaOf(request),
                        },
                    },
                };
            }
            operation.Responses.Clear();
            var ok = new OpenApiResponse
            {
                Description = shape.Status switch
                {
                    101 => "Switching to the WebSocket protocol.",
                    204 => "Done; no body.",
                    _ => "Success.",
                },
            };
            if (shape.Response is { } response)
            {
                ok.Content = new Dictionary<string, OpenApiMediaType>
                {
                    [shape.ResponseType!] = new()
                    {
                        Schema = response == typeof(Binary) ? BinarySchema()
                            : response == typeof(string) ? new OpenApiSchema { Type = JsonSchemaType.String }
                            : await schemaOf(response),
                    },
                };
            }
            operation.Responses[shape.Status.ToString(CultureInfo.InvariantCulture)] = ok;
            foreach (int status in shape.Problems ?? [])
            {
                operation.Responses[status.ToString(CultureInfo.InvariantCulture)] = await ProblemAsync(schemaOf, Reason(status));
            }
        }
        if (route.TrimStart('/').StartsWith("v1/", StringComparison.Ordinal))
        {
            operation.Responses["401"] = await ProblemAsync(schemaOf, "No valid API key (code unauthorized).");
        }
        operation.Responses["default"] = await ProblemAsync(schemaOf, "Any other refusal, with its stable code.");
    }

    private static async Task<IOpenApiResponse> ProblemAsync(Func<Type, Task<OpenApiSchema>> schemaOf, string description) =>
        new OpenApiResponse
        {
            Description = description,
            Content = new Dictionary<string, OpenApiMediaType>
            {
                ["application/problem+json"] = new() { Schema = await schemaOf(typeof(ProblemDetails)) },
            },
        };

    private static OpenApiSchema BinarySchema() => new() { Type = JsonSchemaType.String, Format = "binary" };

    private static string Reason(int status) => status switch
    {
        400 => "The request is invalid (code and field say what).",
        403 => "The call needs an admin key.",
        404 => "No such sandbox, template, command or snapshot of the caller.",
        409 => "The sandbox is busy or in the wrong state.",
        413 => "The body is over its limit.",
        415 => "The body was not sent as application/json.",
        422 => "The code did not compile.",
        429 => "A limit of the caller's key was reached (Retry-After).",
        502 => "The sandbox's server or a tool failed.",
        503 => "The server is out of capacity or the runtime is unavailable.",
        _ => "Refused.",
    };
}

internal sealed record StatusBody(string Status);
internal sealed record ReadyBody(string Status, string Runtime);
internal sealed record TemplateListBody(List<TemplateInfo> Templates);
internal sealed record SandboxListBody(List<SandboxInfo> Sandboxes);
internal sealed record ArtifactListBody(List<ArtifactInfoDto> Artifacts);
internal sealed record SnapshotListBody(List<SnapshotDto> Snapshots);
internal sealed record AdminSandboxBody(string Id, string Owner, string Template, string State, DateTime CreatedAt, DateTime ExpiresAt, DateTime LastActivityAt);
internal sealed record AdminSandboxListBody(List<AdminSandboxBody> Sandboxes);
internal sealed record AdminKeyLimitsBody(int? Sandboxes, int? RunsPerMinute, int? ConcurrentRuns, int? SearchesPerMinute);
internal sealed record AdminKeyBody(string Name, bool Admin, AdminKeyLimitsBody Limits, int SandboxesLive);
internal sealed record AdminKeysBody(bool KeysRequired, string? KeysFile, List<AdminKeyBody> Keys);
