using System.CommandLine;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using SandboxVM.Client;
using SandboxVM.Server.Mcp;

namespace SandboxVM.Cli;

/// <summary>
/// <c>sandboxvm mcp</c>: an MCP server on stdin/stdout for desktop clients, whose tools call a SandboxVM
/// server's HTTP API (the same tools as its <c>/mcp</c> endpoint, see src/SandboxVM.Server/Mcp).
/// </summary>
internal static class McpCommand
{
    public static Command Create()
    {
        var url = Common.UrlOption();
        var apiKey = Common.ApiKeyOption();
        var command = new Command("mcp",
            "Serve MCP (Model Context Protocol) on stdin/stdout for a desktop client such as Claude Desktop or an IDE: "
            + "tools run_code, create_sandbox, run_in_sandbox, write_file, read_file, list_files, kill_sandbox, list_templates, "
            + "web_search and fetch_url call the server at --url with --api-key. Configure the client to start "
            + "`sandboxvm mcp --url URL` (the key in SANDBOXVM_API_KEY). A client that speaks HTTP can use the server's /mcp directly.")
        {
            url,
            apiKey,
        };
        command.SetAction(async (parse, ct) =>
        {
            var builder = Microsoft.Extensions.Hosting.Host.CreateEmptyApplicationBuilder(settings: null);
            // stdout carries the protocol: every log line goes to stderr, which clients show as the server's log.
            builder.Logging.AddConsole(o => o.LogToStandardErrorThreshold = LogLevel.Trace).SetMinimumLevel(LogLevel.Warning);
            builder.Services.AddSingleton<ISandboxClientSource>(new FixedClientSource(new SandboxClientOptions
            {
                BaseUrl = parse.GetValue(url)!,
                ApiKey = parse.GetValue(apiKey),
                // The MCP client cancels a call it gives up on; no clock of our own on top.
                Timeout = Timeout.InfiniteTimeSpan,
            }));
            builder.Services.AddMcpServer().WithStdioServerTransport().AddSandboxVmTools();
            using var host = builder.Build();
            await host.RunAsync(ct);
            return 0;
        });
        return command;
    }
}
