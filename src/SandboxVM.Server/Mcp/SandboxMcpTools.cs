using System.ComponentModel;
using System.Globalization;
using System.Text;
using ModelContextProtocol;
using ModelContextProtocol.Protocol;
using ModelContextProtocol.Server;
using SandboxVM.Client;

namespace SandboxVM.Server.Mcp;

using RunResult = SandboxVM.Client.RunResult;
using RunStatus = SandboxVM.Client.RunStatus;

/// <summary>
/// The MCP tools, one implementation for both transports: every tool is a call of the C# SDK on a client
/// from <see cref="ISandboxClientSource"/> (the server's own API on loopback with the caller's key, or the
/// URL and key given to <c>sandboxvm mcp</c>). A refusal of the API becomes a tool result with isError and
/// the problem's detail; nothing but cancellation escapes as an exception.
/// </summary>
[McpServerToolType]
public sealed class SandboxMcpTools(ISandboxClientSource clients)
{
    /// <summary>Most bytes of a file <c>read_file</c> returns: a model's context is the limit, not the sandbox's.</summary>
    public const int MaxReadBytes = 1024 * 1024;

    /// <summary>Most bytes of images one result carries (base64 makes them a third larger on the wire).</summary>
    public const long MaxImageBytes = 8 * 1024 * 1024;

    private static readonly HashSet<string> s_imageTypes = new(StringComparer.OrdinalIgnoreCase)
    {
        "image/png", "image/jpeg", "image/gif", "image/webp",
    };

    [McpServerTool(Name = "run_code", Title = "Run code once", Destructive = false, OpenWorld = false)]
    [Description("Runs a program once in a fresh sandbox (a microVM) that is thrown away afterwards, and returns its status, "
        + "exit code, stdout and stderr. Files the program writes to /tmp/outputs come back: PNG/JPEG images (e.g. a matplotlib "
        + "figure saved with plt.savefig('/tmp/outputs/plot.png')) as images, others by name and size. Nothing survives the call: "
        + "use create_sandbox and run_in_sandbox to keep files and variables between runs. See list_templates for the templates.")]
    public Task<CallToolResult> RunCodeAsync(
        [Description("Template (language and environment) to run in, e.g. python-data-analysis, cpp-algorithm, go-algorithm; see list_templates.")] string template,
        [Description("The complete source code to run.")] string code,
        [Description("Text fed to the program's standard input.")] string? stdin = null,
        [Description("Run time limit in seconds (default: the template's; at most its maximum).")] double? timeout_s = null,
        IProgress<ProgressNotificationValue>? progress = null,
        CancellationToken cancellationToken = default) =>
        CallAsync(cancellationToken, async (client, ct) =>
        {
            var events = client.RunStreamAsync(new RunRequest { Template = template, Code = code, Stdin = stdin, TimeoutS = timeout_s }, ct);
            return await StreamAsync(events, progress, ct) is { } result
                ? await RunResultAsync(result, null, ct)
                : Error(NoResult);
        });

    [McpServerTool(Name = "create_sandbox", Title = "Create a sandbox", Destructive = false, OpenWorld = false)]
    [Description("Creates a sandbox: one VM kept for you in which files and (python) variables and imports survive from run to run. "
        + "Returns its id; pass it to run_in_sandbox, write_file, read_file and list_files, and end it with kill_sandbox when done "
        + "(it also ends by itself after its lifetime or when idle).")]
    public Task<CallToolResult> CreateSandboxAsync(
        [Description("Template of the sandbox, e.g. python-data-analysis; see list_templates.")] string template,
        [Description("Free-form string labels stored with the sandbox.")] Dictionary<string, string>? metadata = null,
        [Description("Lifetime in seconds (default: the server's).")] double? timeout_s = null,
        CancellationToken cancellationToken = default) =>
        CallAsync(cancellationToken, async (client, ct) =>
        {
            var sandbox = await client.CreateSandboxAsync(template, timeout_s, null, metadata, ct);
            sandbox.KillOnDispose = false;
            var info = sandbox.Info;
            return Text(string.Create(CultureInfo.InvariantCulture,
                $"sandbox_id: {info.Id}\ntemplate: {info.Template}\nexpires_at: {info.ExpiresAt:u}\nidle_timeout_s: {info.IdleTimeoutS}"));
        });

    [McpServerTool(Name = "run_in_sandbox", Title = "Run code in a sandbox", Destructive = false, OpenWorld = false)]
    [Description("Runs code in a sandbox made by create_sandbox and returns status, exit code, stdout and stderr. Files in the "
        + "sandbox stay between runs; in python templates variables and imports of earlier runs stay too, and the value of a final "
        + "expression is returned as result. Images written to /tmp/outputs come back as images.")]
    public Task<CallToolResult> RunInSandboxAsync(
        [Description("The sandbox's id, from create_sandbox.")] string sandbox_id,
        [Description("The code to run.")] string code,
        [Description("Text fed to the program's standard input.")] string? stdin = null,
        [Description("Run time limit in seconds (default: the template's; at most its maximum).")] double? timeout_s = null,
        IProgress<ProgressNotificationValue>? progress = null,
        CancellationToken cancellationToken = default) =>
        CallAsync(cancellationToken, async (client, ct) =>
        {
            var sandbox = await client.ConnectSandboxAsync(sandbox_id, ct);
            var events = sandbox.RunStreamAsync(code, new RunOptions { Stdin = stdin, TimeoutS = timeout_s }, ct);
            return await StreamAsync(events, progress, ct) is { } result
                ? await RunResultAsync(result, sandbox, ct)
                : Error(NoResult);
        });

    [McpServerTool(Name = "run_command", Title = "Run a shell command in a sandbox", Destructive = true, OpenWorld = false)]
    [Description("Runs a shell command line (/bin/sh -c) in a sandbox made by create_sandbox, as its user, in /home/sandbox "
        + "unless cwd says otherwise, and returns status, exit code, stdout and stderr: ls, pip list, git, a build, a test suite. "
        + "With background=true it returns at once with a command id and keeps running (a web server, a long job); call "
        + "run_command again with e.g. 'curl -s localhost:8000' to talk to it.")]
    public Task<CallToolResult> RunCommandAsync(
        [Description("The sandbox's id, from create_sandbox.")] string sandbox_id,
        [Description("The command line, e.g. 'ls -la' or 'python3 -m pytest -q'.")] string command,
        [Description("Working directory (default /home/sandbox); it must exist.")] string? cwd = null,
        [Description("Time limit in seconds (default 60; background: none).")] double? timeout_s = null,
        [Description("Start it and return at once, leaving it running.")] bool background = false,
        CancellationToken cancellationToken = default) =>
        CallAsync(cancellationToken, async (client, ct) =>
        {
            var sandbox = await client.ConnectSandboxAsync(sandbox_id, ct);
            var options = new CommandOptions { Cwd = cwd, TimeoutS = timeout_s };
            if (background)
            {
                var started = await sandbox.Commands.StartAsync(command, options, ct);
                return Text($"command_id: {started.Id}\nstatus: {started.Status}");
            }
            var result = await sandbox.Commands.RunAsync(command, options, ct);
            var text = new StringBuilder();
            text.Append(CultureInfo.InvariantCulture, $"status: {result.Status}");
            if (result.ExitCode is int code)
            {
                text.Append(CultureInfo.InvariantCulture, $"\nexit_code: {code}");
            }
            if (result.Truncated)
            {
                text.Append("\n(output truncated)");
            }
            text.Append("\n--- stdout ---\n").Append(result.Stdout).Append("\n--- stderr ---\n").Append(result.Stderr);
            var answer = Text(text.ToString());
            answer.IsError = result.Status != "exited" || result.ExitCode != 0;
            return answer;
        });

    [McpServerTool(Name = "write_file", Title = "Write a file in a sandbox", Destructive = true, Idempotent = true, OpenWorld = false)]
    [Description("Writes a file in a sandbox, replacing it if it exists and creating missing parent directories. Relative paths are "
        + "under the working directory /home/sandbox, where run_in_sandbox's code runs.")]
    public Task<CallToolResult> WriteFileAsync(
        [Description("The sandbox's id, from create_sandbox.")] string sandbox_id,
        [Description("Path of the file, e.g. data.csv or /tmp/input.txt.")] string path,
        [Description("The file's content: text, or base64 when encoding is base64.")] string content,
        [Description("How content is written: utf8 (default) or base64 (binary files).")] string encoding = "utf8",
        CancellationToken cancellationToken = default) =>
        CallAsync(cancellationToken, async (client, ct) =>
        {
            byte[] bytes = encoding switch
            {
                "utf8" => Encoding.UTF8.GetBytes(content),
                "base64" => FromBase64(content),
                _ => throw new ArgumentException($"encoding must be utf8 or base64, not '{encoding}'"),
            };
            var sandbox = await client.ConnectSandboxAsync(sandbox_id, ct);
            var file = await sandbox.Files.WriteAsync(path, bytes, ct);
            return Text($"wrote {file.Path} ({file.Size} bytes)");
        });

    [McpServerTool(Name = "read_file", Title = "Read a file in a sandbox", ReadOnly = true, OpenWorld = false)]
    [Description("Reads a file of a sandbox (at most 1 MiB): text as text, a PNG/JPEG/GIF/WebP image as an image, other binary "
        + "content as base64. Relative paths are under /home/sandbox; a run's figures are under /tmp/outputs.")]
    public Task<CallToolResult> ReadFileAsync(
        [Description("The sandbox's id, from create_sandbox.")] string sandbox_id,
        [Description("Path of the file.")] string path,
        CancellationToken cancellationToken = default) =>
        CallAsync(cancellationToken, async (client, ct) =>
        {
            var sandbox = await client.ConnectSandboxAsync(sandbox_id, ct);
            byte[] bytes;
            await using (var stream = await sandbox.Files.OpenReadAsync(path, ct))
            {
                bytes = await ReadAtMostAsync(stream, MaxReadBytes + 1, ct);
            }
            if (bytes.Length > MaxReadBytes)
            {
                return Error($"{path} is larger than {MaxReadBytes} bytes; read a part of it with run_in_sandbox (e.g. head, or Python) instead");
            }
            if (ImageType(path) is { } mime)
            {
                return new CallToolResult { Content = [ImageContentBlock.FromBytes(bytes, mime)] };
            }
            try
            {
                return Text(new UTF8Encoding(false, throwOnInvalidBytes: true).GetString(bytes));
            }
            catch (DecoderFallbackException)
            {
                return Text($"{path} is binary ({bytes.Length} bytes); base64:\n{Convert.ToBase64String(bytes)}");
            }
        });

    [McpServerTool(Name = "list_files", Title = "List files in a sandbox", ReadOnly = true, OpenWorld = false)]
    [Description("Lists a directory of a sandbox: one line per entry with its kind, size in bytes and path.")]
    public Task<CallToolResult> ListFilesAsync(
        [Description("The sandbox's id, from create_sandbox.")] string sandbox_id,
        [Description("Directory to list (default: the working directory /home/sandbox).")] string path = ".",
        CancellationToken cancellationToken = default) =>
        CallAsync(cancellationToken, async (client, ct) =>
        {
            var sandbox = await client.ConnectSandboxAsync(sandbox_id, ct);
            var entries = await sandbox.Files.ListAsync(path, ct);
            if (entries.Count == 0)
            {
                return Text($"{path} is empty");
            }
            var text = new StringBuilder();
            foreach (var e in entries.OrderBy(e => e.Path, StringComparer.Ordinal))
            {
                text.Append(CultureInfo.InvariantCulture, $"{e.Kind.ToString().ToLowerInvariant()}\t{e.Size}\t{e.Path}\n");
            }
            return Text(text.ToString());
        });

    [McpServerTool(Name = "kill_sandbox", Title = "End a sandbox", Destructive = true, Idempotent = true, OpenWorld = false)]
    [Description("Ends a sandbox at once: its VM, files and state are gone.")]
    public Task<CallToolResult> KillSandboxAsync(
        [Description("The sandbox's id, from create_sandbox.")] string sandbox_id,
        CancellationToken cancellationToken = default) =>
        CallAsync(cancellationToken, async (client, ct) => await client.KillSandboxAsync(sandbox_id, ct)
            ? Text($"sandbox {sandbox_id} ended")
            : Error($"no live sandbox '{sandbox_id}' (it ended already, or the id is wrong)"));

    [McpServerTool(Name = "list_templates", Title = "List templates", ReadOnly = true, Idempotent = true, OpenWorld = false)]
    [Description("Lists the templates code can run in: name, language, whether it can run now, and what it is for.")]
    public Task<CallToolResult> ListTemplatesAsync(CancellationToken cancellationToken = default) =>
        CallAsync(cancellationToken, async (client, ct) =>
        {
            var text = new StringBuilder();
            foreach (var t in await client.ListTemplatesAsync(ct))
            {
                text.Append(CultureInfo.InvariantCulture, $"{t.Name} ({t.Language}, output {t.Output}, network {t.Network}, ")
                    .Append(t.Available ? "available" : "unavailable: " + t.UnavailableReason).Append("): ").Append(t.Description).Append('\n');
            }
            return Text(text.Length == 0 ? "no templates" : text.ToString());
        });

    [McpServerTool(Name = "web_search", Title = "Search the web", ReadOnly = true, OpenWorld = true)]
    [Description("Searches the web through the server's search provider and returns title, URL and snippet of each hit.")]
    public Task<CallToolResult> WebSearchAsync(
        [Description("What to search for.")] string query,
        [Description("How many results, 1 to 20 (default 5).")] int max_results = SandboxTools.DefaultMaxResults,
        CancellationToken cancellationToken = default) =>
        CallAsync(cancellationToken, async (client, ct) =>
        {
            var found = await client.Tools.SearchAsync(query, max_results, ct);
            var text = new StringBuilder();
            foreach (var hit in found.Results)
            {
                text.Append(hit.Title).Append('\n').Append(hit.Url).Append('\n').Append(hit.Snippet).Append("\n\n");
            }
            return Text(text.Length == 0 ? "no results" : text.ToString());
        });

    [McpServerTool(Name = "fetch_url", Title = "Fetch a web page", ReadOnly = true, OpenWorld = true)]
    [Description("Fetches an http(s) URL through the server's egress policy and returns the page's status, title, readable text and links.")]
    public Task<CallToolResult> FetchUrlAsync(
        [Description("Absolute http:// or https:// URL.")] string url,
        CancellationToken cancellationToken = default) =>
        CallAsync(cancellationToken, async (client, ct) =>
        {
            var page = await client.Tools.FetchAsync(url, ct);
            var text = new StringBuilder();
            text.Append(CultureInfo.InvariantCulture, $"status: {page.Status}\nurl: {page.FinalUrl}\ncontent_type: {page.ContentType}\n");
            if (page.Title is not null)
            {
                text.Append("title: ").Append(page.Title).Append('\n');
            }
            if (page.Truncated)
            {
                text.Append("(text truncated)\n");
            }
            text.Append('\n').Append(page.Text).Append('\n');
            if (page.Links.Count > 0)
            {
                text.Append("\nlinks:\n");
                foreach (var link in page.Links)
                {
                    text.Append(link.Text).Append(" <").Append(link.Url).Append(">\n");
                }
            }
            return new CallToolResult { Content = [new TextContentBlock { Text = text.ToString() }], IsError = !page.IsSuccess };
        });

    /// <summary>
    /// Runs <paramref name="call"/> with a client; refusals of the API, bad arguments and an unreachable
    /// server become an isError result saying what is wrong. Cancellation by the client propagates.
    /// </summary>
    private async Task<CallToolResult> CallAsync(CancellationToken cancellationToken, Func<SandboxClient, CancellationToken, Task<CallToolResult>> call)
    {
        try
        {
            using var client = clients.Create();
            using var linked = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken, clients.CallAborted);
            return await call(client, linked.Token);
        }
        catch (SandboxApiException e)
        {
            return Error(e.Message);
        }
        catch (SandboxException e)
        {
            return Error("the SandboxVM server could not be reached: " + e.Message);
        }
        catch (ArgumentException e)
        {
            return Error(e.Message);
        }
    }

    private const string NoResult = "the run's event stream ended without a result (the server stopped or the connection broke)";

    /// <summary>Reads a streamed run, reporting each piece of output as a progress notification, and returns its result (null: none came).</summary>
    private static async Task<RunResult?> StreamAsync(IAsyncEnumerable<RunEvent> events, IProgress<ProgressNotificationValue>? progress, CancellationToken cancellationToken)
    {
        int step = 0;
        await foreach (var e in events.WithCancellation(cancellationToken))
        {
            string? message = e switch
            {
                StdoutEvent o => o.Text,
                StderrEvent o => o.Text,
                ArtifactEvent a => "artifact: " + a.Artifact,
                _ => null,
            };
            if (e is ResultEvent r)
            {
                return r.Result;
            }
            if (message is not null)
            {
                progress?.Report(new ProgressNotificationValue { Progress = ++step, Message = message });
            }
        }
        return null;
    }

    /// <summary>The run as text (status, exit code, output), and its images as image content.</summary>
    private static async Task<CallToolResult> RunResultAsync(RunResult result, Sandbox? sandbox, CancellationToken cancellationToken)
    {
        var text = new StringBuilder();
        text.Append(CultureInfo.InvariantCulture, $"status: {Status(result.Status)}\nexit_code: {result.ExitCode?.ToString(CultureInfo.InvariantCulture) ?? "none"}\n");
        if (!string.IsNullOrEmpty(result.Error))
        {
            text.Append("error: ").Append(result.Error).Append('\n');
        }
        if (result.Truncated)
        {
            text.Append("(output truncated at the template's limit)\n");
        }
        if (result.StateReset)
        {
            text.Append("(the interpreter was restarted: variables of earlier runs are gone)\n");
        }
        text.Append("stdout:\n").Append(result.Stdout);
        if (result.Stdout.Length > 0 && !result.Stdout.EndsWith('\n'))
        {
            text.Append('\n');
        }
        text.Append("stderr:\n").Append(result.Stderr);
        if (result.Result is not null)
        {
            text.Append(result.Stderr.Length > 0 && !result.Stderr.EndsWith('\n') ? "\n" : "").Append("result: ").Append(result.Result);
        }
        var content = new List<ContentBlock> { new TextContentBlock { Text = text.ToString() } };
        long imageBytes = 0;
        var others = new StringBuilder();
        foreach (var artifact in result.Artifacts)
        {
            if (!s_imageTypes.Contains(artifact.Mime) || imageBytes + artifact.Size > MaxImageBytes)
            {
                others.Append(CultureInfo.InvariantCulture, $"artifact: /tmp/outputs/{artifact.Path} ({artifact.Mime}, {artifact.Size} bytes)\n");
                continue;
            }
            byte[]? bytes = artifact.Content;
            if (bytes is null && sandbox is not null)
            {
                bytes = (await sandbox.ReadArtifactAsync(artifact.Path, cancellationToken)).Content;
            }
            if (bytes is null)
            {
                others.Append(CultureInfo.InvariantCulture, $"artifact: /tmp/outputs/{artifact.Path} ({artifact.Mime}, {artifact.Size} bytes, content not returned)\n");
                continue;
            }
            imageBytes += bytes.Length;
            content.Add(ImageContentBlock.FromBytes(bytes, artifact.Mime));
        }
        if (others.Length > 0)
        {
            content.Add(new TextContentBlock { Text = others.ToString() });
        }
        return new CallToolResult { Content = content };
    }

    private static string Status(RunStatus status) => status switch
    {
        RunStatus.CompileError => "compile_error",
        RunStatus.OutputLimit => "output_limit",
        RunStatus.SandboxError => "sandbox_error",
        _ => status.ToString().ToLowerInvariant(),
    };

    private static string? ImageType(string path) => Path.GetExtension(path).ToLowerInvariant() switch
    {
        ".png" => "image/png",
        ".jpg" or ".jpeg" => "image/jpeg",
        ".gif" => "image/gif",
        ".webp" => "image/webp",
        _ => null,
    };

    private static byte[] FromBase64(string content)
    {
        try
        {
            return Convert.FromBase64String(content);
        }
        catch (FormatException)
        {
            throw new ArgumentException("content is not valid base64 (encoding is base64)");
        }
    }

    private static async Task<byte[]> ReadAtMostAsync(Stream stream, int limit, CancellationToken cancellationToken)
    {
        var buffer = new MemoryStream();
        var chunk = new byte[81920];
        int read;
        while (buffer.Length < limit && (read = await stream.ReadAsync(chunk.AsMemory(0, (int)Math.Min(chunk.Length, limit - buffer.Length)), cancellationToken)) > 0)
        {
            buffer.Write(chunk, 0, read);
        }
        return buffer.ToArray();
    }

    internal static CallToolResult Text(string text) => new() { Content = [new TextContentBlock { Text = text }] };

    internal static CallToolResult Error(string message) => new() { Content = [new TextContentBlock { Text = message }], IsError = true };
}
