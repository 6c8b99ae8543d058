using System.Text.Json.Nodes;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Routing;
using Microsoft.AspNetCore.Builder;
using ModelContextProtocol.Server;

namespace SandboxVM.Server.Mcp;

/// <summary>
/// <c>GET /v1/tools/definitions?format=openai|anthropic</c>: the MCP server's own tools (the
/// <see cref="McpServerTool"/> registrations: same names, descriptions and input schemas as tools/list) in a
/// vendor's function-calling shape, for clients that call models without MCP.
/// </summary>
internal static class ToolDefinitions
{
    public const string Path = "/v1/tools/definitions";

    public static void Map(IEndpointRouteBuilder app) =>
        app.MapGet(Path, (string? format, IEnumerable<McpServerTool> tools) => format switch
        {
            "openai" or "anthropic" => Results.Json(new ToolDefinitionsBody(format, [.. tools.Select(t => Shape(t, format))])),
            null or "" => Problems.Result(400, ToolDefinitionCodes.InvalidFormat, "format", "query parameter 'format' is required: openai or anthropic"),
            _ => Problems.Result(400, ToolDefinitionCodes.InvalidFormat, "format", "format must be openai or anthropic"),
        });

    /// <summary>
    /// OpenAI's function tool (Chat Completions: <c>{type, function: {name, description, parameters}}</c>) or Anthropic's
    /// tool (<c>{name, description, input_schema}</c>).
    /// </summary>
    internal static JsonObject Shape(McpServerTool tool, string format)
    {
        var t = tool.ProtocolTool;
        var schema = JsonNode.Parse(t.InputSchema.GetRawText())!;
        return format == "openai"
            ? new JsonObject
            {
                ["type"] = "function",
                ["function"] = new JsonObject { ["name"] = t.Name, ["description"] = t.Description ?? "", ["parameters"] = schema },
            }
            : new JsonObject { ["name"] = t.Name, ["description"] = t.Description ?? "", ["input_schema"] = schema };
    }
}

internal static class ToolDefinitionCodes
{
    /// <summary>400: <c>format</c> of /v1/tools/definitions is missing or not openai/anthropic.</summary>
    public const string InvalidFormat = "invalid_format";
}

/// <summary>The tool definitions in one vendor's shape.</summary>
internal sealed record ToolDefinitionsBody(string Format, List<JsonObject> Tools);
