using Microsoft.Extensions.DependencyInjection;
using ModelContextProtocol.Protocol;
using SandboxVM.Client;

namespace SandboxVM.Server.Mcp;

/// <summary>
/// Where the MCP tools get their SandboxVM client: the server's own API on loopback with the caller's
/// key (<see cref="LoopbackClientSource"/>), or a fixed URL and key (<c>sandboxvm mcp</c>). Each call
/// creates one and disposes it.
/// </summary>
public interface ISandboxClientSource
{
    SandboxClient Create();

    /// <summary>
    /// Cancelled when the transport has given up on the call being served (the HTTP request that carried
    /// it ended): a stateful session's own token lasts as long as the session, and a client that cancels
    /// by closing the call's stream (the 2026-07-28 revision's way) sends no notifications/cancelled.
    /// </summary>
    CancellationToken CallAborted { get; }
}

/// <summary>A client for one URL and key: <c>sandboxvm mcp --url URL --api-key K</c>.</summary>
public sealed class FixedClientSource(SandboxClientOptions options) : ISandboxClientSource
{
    public SandboxClient Create() => new(options);

    /// <summary>stdio has no request of its own: notifications/cancelled is the only way a call is cancelled.</summary>
    public CancellationToken CallAborted => CancellationToken.None;
}

/// <summary>The tools and resources of both transports, registered on an MCP server builder.</summary>
public static class SandboxMcp
{
    /// <summary>The name clients show for the server.</summary>
    public const string ServerName = "sandboxvm";

    public const string Instructions =
        "SandboxVM runs code in isolated microVMs. run_code runs a program once; for work over several steps create_sandbox, "
        + "then run_in_sandbox / write_file / read_file / list_files with its sandbox_id, and kill_sandbox at the end. "
        + "Images saved to /tmp/outputs (e.g. matplotlib figures) come back as images. list_templates says which languages exist.";

    /// <summary>Adds the tools, the template resources and the server's name to <paramref name="builder"/>.</summary>
    public static IMcpServerBuilder AddSandboxVmTools(this IMcpServerBuilder builder)
    {
        builder.Services.Configure<ModelContextProtocol.Server.McpServerOptions>(o =>
        {
            o.ServerInfo = new Implementation { Name = ServerName, Version = typeof(SandboxMcp).Assembly.GetName().Version?.ToString(3) ?? "0.0.0" };
            o.ServerInstructions = Instructions;
        });
        return builder
            .WithTools<SandboxMcpTools>()
            .WithResources<TemplateResources>()
            .WithListResourcesHandler(TemplateResources.ListAsync);
    }
}
