using System.CommandLine;
using System.Globalization;
using System.Text;
using SandboxVM.Client;

namespace SandboxVM.Cli;

internal static class Common
{
    public static Option<string> UrlOption() => new("--url")
    {
        Description = "Server base URL (default: $SANDBOXVM_BASE_URL or $SANDBOXVM_URL, else http://127.0.0.1:8000)",
        DefaultValueFactory = _ => SandboxClientOptions.FromEnvironment().BaseUrl,
    };

    public static Option<string?> ApiKeyOption() => new("--api-key")
    {
        Description = "API key (default: $SANDBOXVM_API_KEY)",
        DefaultValueFactory = _ => Environment.GetEnvironmentVariable("SANDBOXVM_API_KEY"),
    };

    public static SandboxClient Client(ParseResult parse, Option<string> url, Option<string?> apiKey) =>
        new(new SandboxClientOptions { BaseUrl = parse.GetValue(url)!, ApiKey = parse.GetValue(apiKey) });

    /// <summary>Prints an SDK error the way every command does, and gives the exit code for it.</summary>
    public static async Task<int> FailAsync(SandboxException e)
    {
        string retry = e is SandboxUnavailableException { RetryAfter: { } after }
            ? string.Create(CultureInfo.InvariantCulture, $"; retry after {after.TotalSeconds:0} s")
            : "";
        await Console.Error.WriteLineAsync("sandboxvm: " + e.Message + retry);
        return 2;
    }

    /// <summary>A source file's text, or stdin's for <c>-</c> or none.</summary>
    public static async Task<string> ReadCodeAsync(string? path, CancellationToken ct) =>
        path is null or "-" ? await Console.In.ReadToEndAsync(ct) : await File.ReadAllTextAsync(path, ct);

    /// <summary>
    /// Prints the events of a streamed run as they come (stdout to stdout, stderr and artifact names to stderr)
    /// and returns the result.
    /// </summary>
    public static async Task<RunResult> PrintStreamAsync(IAsyncEnumerable<RunEvent> events, CancellationToken ct)
    {
        await foreach (var e in events.WithCancellation(ct))
        {
            switch (e)
            {
                case StdoutEvent o:
                    await Console.Out.WriteAsync(o.Text);
                    await Console.Out.FlushAsync(ct);
                    break;
                case StderrEvent o:
                    await Console.Error.WriteAsync(o.Text);
                    break;
                case ArtifactEvent a:
                    await Console.Error.WriteLineAsync($"sandboxvm: artifact {a.Artifact}");
                    break;
                case ResultEvent r:
                    return r.Result;
            }
        }

        throw new InvalidOperationException("The event stream ended without a result.");
    }

    /// <summary>
    /// Prints a run's output (unless it was already streamed), saves artifacts that came with content into
    /// <paramref name="artifactsDir"/>, says how it ended, and gives the exit code that follows the program's.
    /// </summary>
    public static async Task<int> FinishRunAsync(RunResult result, bool streamed, string artifactsDir, CancellationToken ct)
    {
        if (!streamed)
        {
            await Console.Out.WriteAsync(result.Stdout);
            await Console.Error.WriteAsync(result.Stderr);
        }

        if (result.Result is not null)
        {
            await Console.Error.WriteLineAsync("result: " + result.Result);
        }

        foreach (var artifact in result.Artifacts.Where(a => a.Content is not null))
        {
            string saved = await artifact.SaveToAsync(artifactsDir, ct);
            await Console.Error.WriteLineAsync($"artifact: {saved} ({artifact.Mime}, {artifact.Size} bytes)");
        }

        if (result.StateReset)
        {
            await Console.Error.WriteLineAsync("sandboxvm: the interpreter was restarted for this run; earlier state is gone");
        }

        if (result.Status != RunStatus.Ok)
        {
            await Console.Error.WriteLineAsync($"sandboxvm: status {Snake(result.Status.ToString())}" + (result.ExitCode is int c ? $", exit code {c}" : "")
                + (string.IsNullOrEmpty(result.Error) ? "" : ": " + result.Error));
        }

        var m = result.Metrics;
        await Console.Error.WriteLineAsync(
            $"sandboxvm: {m.VmSource.ToString().ToLowerInvariant()} startup {m.StartupMs:0} ms, compile {m.CompileMs:0} ms{(result.BuildCached == true ? " (cached)" : "")}, run {m.RunMs:0} ms, total {m.TotalMs:0} ms");
        return ExitCode(result);
    }

    /// <summary>0 for ok; the program's own code when it failed; 124 timeout, 137 oom, 125 otherwise (as timeout(1) and docker do).</summary>
    public static int ExitCode(RunResult result) => result.Status switch
    {
        RunStatus.Ok => 0,
        RunStatus.Error or RunStatus.CompileError => result.ExitCode is > 0 and < 256 ? result.ExitCode.Value : 1,
        RunStatus.Timeout => 124,
        RunStatus.Oom => 137,
        _ => 125,
    };

    public static string Time(DateTimeOffset? time) =>
        time?.ToLocalTime().ToString("yyyy-MM-dd HH:mm:ss", CultureInfo.InvariantCulture) ?? "-";

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
