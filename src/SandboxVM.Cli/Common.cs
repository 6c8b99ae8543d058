using System.CommandLine;
using System.Text;
using SandboxVM.Client;

namespace SandboxVM.Cli;

internal static class Common
{
    public static Option<string> UrlOption() => new("--url")
    {
        Description = "Server base URL",
        DefaultValueFactory = _ => Environment.GetEnvironmentVariable("SANDBOXVM_URL") ?? SandboxClientOptions.DefaultBaseUrl,
    };

    public static Option<string?> ApiKeyOption() => new("--api-key")
    {
        Description = "API key (default: $SANDBOXVM_API_KEY)",
        DefaultValueFactory = _ => Environment.GetEnvironmentVariable("SANDBOXVM_API_KEY"),
    };

    /// <summary>CompileError → compile_error, as on the wire.</summary>
    public static string Snake(string pascal)
    {
        var sb = new StringBuilder();
        foreach (char c in pascal)
        {
            if (char.IsUpper(c) && sb.Length > 0)
            {
                sb.Append('_');
            }
            sb.Append(char.ToLowerInvariant(c));
        }
        return sb.ToString();
    }
}
