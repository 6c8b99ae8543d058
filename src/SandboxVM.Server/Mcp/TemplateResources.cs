using System.ComponentModel;
using System.Globalization;
using System.Text;
using ModelContextProtocol;
using ModelContextProtocol.Protocol;
using ModelContextProtocol.Server;
using SandboxVM.Client;

namespace SandboxVM.Server.Mcp;

using TemplateInfo = SandboxVM.Client.TemplateInfo;

/// <summary>
/// The templates as MCP resources, <c>sandboxvm://templates/{name}</c>: listed one by one (the server's
/// templates change with its configuration) and read as text a model can act on.
/// </summary>
[McpServerResourceType]
public sealed class TemplateResources(ISandboxClientSource clients)
{
    public const string UriPrefix = "sandboxvm://templates/";

    [McpServerResource(UriTemplate = UriPrefix + "{name}", Name = "template", Title = "SandboxVM template", MimeType = "text/plain")]
    [Description("A template code runs in: language, limits, output kinds, network, availability.")]
    public async Task<string> ReadAsync(string name, CancellationToken cancellationToken)
    {
        using var client = clients.Create();
        try
        {
            return Describe(await client.GetTemplateAsync(name, cancellationToken));
        }
        catch (SandboxException e)
        {
            throw new McpException(e.Message);
        }
    }

    /// <summary>The resources/list answer: one resource per template of the server.</summary>
    public static async ValueTask<ListResourcesResult> ListAsync(RequestContext<ListResourcesRequestParams> context, CancellationToken cancellationToken)
    {
        var source = (ISandboxClientSource?)context.Services?.GetService(typeof(ISandboxClientSource))
            ?? throw new InvalidOperationException("no ISandboxClientSource registered");
        using var client = source.Create();
        IReadOnlyList<TemplateInfo> templates;
        try
        {
            templates = await client.ListTemplatesAsync(cancellationToken);
        }
        catch (SandboxException e)
        {
            throw new McpException(e.Message);
        }
        return new ListResourcesResult
        {
            Resources = [.. templates.Select(t => new Resource
            {
                Uri = UriPrefix + Uri.EscapeDataString(t.Name),
                Name = t.Name,
                Title = $"template {t.Name} ({t.Language})",
                Description = t.Description,
                MimeType = "text/plain",
            })],
        };
    }

    internal static string Describe(TemplateInfo t)
    {
        var text = new StringBuilder();
        var c = CultureInfo.InvariantCulture;
        text.Append(c, $"name: {t.Name}\nlanguage: {t.Language}\ndescription: {t.Description}\n");
        text.Append(c, $"available: {(t.Available ? "yes" : "no: " + t.UnavailableReason)}\n");
        text.Append(c, $"output: {t.Output} (files written to /tmp/outputs come back as artifacts when images are included)\n");
        text.Append(c, $"network: {t.Network}\nisolation: {t.Isolation} ({t.Runtime})\n");
        text.Append(c, $"run_timeout_s: {t.Limits.RunTimeoutS} (at most {t.Limits.MaxTimeoutS})\ncompile_timeout_s: {t.Limits.CompileTimeoutS}\n");
        text.Append(c, $"output_bytes: {t.Limits.OutputBytes}\nprocesses: {t.Limits.Processes}\nfile_bytes: {t.Limits.FileBytes}\n");
        text.Append(c, $"vcpus: {t.Vcpus}\nmemory_mib: {t.MemoryMib}\n");
        return text.ToString();
    }
}
