namespace SandboxVM.Client;

/// <summary>
/// Entry point for running code in SandboxVM. One line runs code once in a fresh sandbox:
/// <code>
/// var result = await Sandbox.RunOnceAsync("print(sum(range(10)))", template: "python-data-analysis", baseUrl: "http://127.0.0.1:8000");
/// Console.WriteLine(result.Output);   // 45
/// </code>
/// For many calls, reuse a <see cref="SandboxClient"/>.
/// </summary>
public sealed class Sandbox
{
    /// <summary>Template used when none is named.</summary>
    internal const string DefaultTemplate = "python-data-analysis";

    private Sandbox()
    {
    }

    /// <summary>Runs <paramref name="code"/> once in a fresh sandbox and returns what it printed, its artifacts and timings.</summary>
    /// <param name="code">The source code to run.</param>
    /// <param name="template">Template name; default <c>python-data-analysis</c>.</param>
    /// <param name="baseUrl">Server URL; null for <c>http://127.0.0.1:8000</c>.</param>
    /// <param name="stdin">Text fed to standard input.</param>
    /// <param name="timeoutS">Run time limit in seconds; null for the template's default.</param>
    /// <param name="apiKey">API key sent as a bearer token; null for none.</param>
    /// <param name="cancellationToken">Abandons the call.</param>
    /// <returns>
    /// The result. A program that fails, times out or does not compile still returns normally:
    /// check <see cref="RunResult.Status"/>.
    /// </returns>
    /// <exception cref="SandboxApiException">The server rejected the request (a subclass says why).</exception>
    /// <exception cref="SandboxConnectionException">The server could not be reached or did not answer in time.</exception>
    public static Task<RunResult> RunOnceAsync(
        string code,
        string template = DefaultTemplate,
        string? baseUrl = null,
        string? stdin = null,
        double? timeoutS = null,
        string? apiKey = null,
        CancellationToken cancellationToken = default) =>
        RunOnceThroughAsync(code, template, baseUrl, stdin, timeoutS, apiKey, SandboxClient.SharedHandler, cancellationToken);

    /// <summary><see cref="RunOnceAsync(string, string, string?, string?, double?, string?, CancellationToken)"/> through a given handler (tests).</summary>
    internal static async Task<RunResult> RunOnceThroughAsync(
        string code,
        string template,
        string? baseUrl,
        string? stdin,
        double? timeoutS,
        string? apiKey,
        HttpMessageHandler handler,
        CancellationToken cancellationToken)
    {
        using var client = new SandboxClient(new SandboxClientOptions
        {
            BaseUrl = baseUrl ?? SandboxClientOptions.DefaultBaseUrl,
            ApiKey = apiKey,
            HttpMessageHandler = handler,
        });
        return await client.RunAsync(
            new RunRequest { Code = code, Template = template, Stdin = stdin, TimeoutS = timeoutS },
            cancellationToken).ConfigureAwait(false);
    }
}
