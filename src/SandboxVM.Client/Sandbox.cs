using System.Text.Json;
using SandboxVM.Client.Internal;

namespace SandboxVM.Client;

/// <summary>
/// A sandbox: one VM kept for you, whose files and (python) interpreter state survive from run to run.
/// Create one with <see cref="CreateAsync"/> and dispose it to end it; or run code once with <see cref="RunOnceAsync"/>.
/// </summary>
/// <example>
/// <code>
/// await using var sb = await Sandbox.CreateAsync("python-data-analysis");
/// await sb.Files.WriteAsync("data.csv", "x,y\n1,2\n3,4\n");
/// await sb.RunAsync("import pandas as pd\ndf = pd.read_csv('data.csv')");
/// var result = await sb.RunAsync("df.y.sum()");
/// Console.WriteLine(result.Result);   // 6
///
/// // Once, without keeping a sandbox:
/// var once = await Sandbox.RunOnceAsync("print(sum(range(10)))");
/// Console.WriteLine(once.Output);     // 45
/// </code>
/// </example>
/// <remarks>
/// Thread-safe; runs in one sandbox are serialised by the server in arrival order.
/// The server ends a sandbox after its lifetime or idle timeout (<see cref="KeepAliveAsync"/> extends it);
/// calls on an ended sandbox throw <see cref="SandboxNotFoundException"/>.
/// </remarks>
public sealed partial class Sandbox : IAsyncDisposable
{
    /// <summary>Template used when none is named.</summary>
    internal const string DefaultTemplate = "python-data-analysis";

    private readonly SandboxClient _client;
    private readonly bool _ownsClient;
    private SandboxInfo _info;
    private int _ended;
    private int _disposed;

    internal Sandbox(SandboxClient client, SandboxInfo info, bool ownsClient, bool killOnDispose)
    {
        _client = client;
        _info = info;
        _ownsClient = ownsClient;
        KillOnDispose = killOnDispose;
        Id = info.Id;
        Template = info.Template;
        Files = new SandboxFiles(client, Id);
        Commands = new SandboxCommands(client, Id);
    }

    /// <summary>The sandbox's id, e.g. for <c>sandboxvm sandbox run ID</c> or <see cref="ConnectAsync"/>.</summary>
    public string Id { get; }

    /// <summary>Name of the template the sandbox runs.</summary>
    public string Template { get; }

    /// <summary>
    /// Opens an interactive terminal (a pseudo-terminal over a WebSocket) running the template's shell, or
    /// <paramref name="command"/> (a shell line), as the sandbox user. See <see cref="SandboxTerminal"/>.
    /// </summary>
    public Task<SandboxTerminal> OpenTerminalAsync(int cols = 80, int rows = 24, string? command = null, CancellationToken cancellationToken = default) =>
        _client.OpenTerminalAsync(Id, cols, rows, command, cancellationToken);

    /// <summary>The sandbox as last seen (at creation, <see cref="GetInfoAsync"/> or <see cref="KeepAliveAsync"/>).</summary>
    public SandboxInfo Info => Volatile.Read(ref _info);

    /// <summary>The sandbox's files: upload, download, list, remove, make directories.</summary>
    public SandboxFiles Files { get; }

    /// <summary>Shell commands and background processes in the sandbox.</summary>
    public SandboxCommands Commands { get; }

    /// <summary>
    /// Whether <see cref="DisposeAsync"/> ends the sandbox on the server. True for a sandbox created here,
    /// false for one attached to with <see cref="ConnectAsync"/>.
    /// </summary>
    public bool KillOnDispose { get; set; }

    /// <summary>
    /// Creates a sandbox of <paramref name="template"/> (<c>POST /v1/sandboxes</c>). Dispose it (<c>await using</c>) to end it.
    /// </summary>
    /// <param name="template">Template name; default <c>python-data-analysis</c>.</param>
    /// <param name="options">
    /// Server, API key, lifetime, idle timeout and metadata; by default the server is <c>$SANDBOXVM_BASE_URL</c>
    /// (else <c>http://127.0.0.1:8000</c>) and the key <c>$SANDBOXVM_API_KEY</c>.
    /// </param>
    /// <param name="cancellationToken">Abandons the call.</param>
    /// <returns>The running sandbox.</returns>
    /// <exception cref="TooManySandboxesException">The server runs as many sandboxes as it allows; see its RetryAfter.</exception>
    /// <exception cref="SandboxNotFoundException">The server has no such template (<c>unknown_template</c>).</exception>
    /// <exception cref="SandboxApiException">The server rejected the request for another reason.</exception>
    /// <exception cref="SandboxConnectionException">The server could not be reached or did not answer in time.</exception>
    /// <exception cref="ArgumentException">The base URL is not an absolute http(s) URL.</exception>
    public static async Task<Sandbox> CreateAsync(
        string template = DefaultTemplate,
        SandboxCreateOptions? options = null,
        CancellationToken cancellationToken = default)
    {
        options ??= new SandboxCreateOptions();
        var (client, owns) = ClientFor(options);
        try
        {
            var sandbox = await client.CreateSandboxAsync(template, options, cancellationToken).ConfigureAwait(false);
            return owns ? new Sandbox(client, sandbox.Info, ownsClient: true, killOnDispose: true) : sandbox;
        }
        catch when (owns)
        {
            client.Dispose();
            throw;
        }
    }

    /// <summary>
    /// Attaches to an existing sandbox by id (<c>GET /v1/sandboxes/{id}</c>). Disposing it does not end it unless
    /// <see cref="KillOnDispose"/> is set.
    /// </summary>
    /// <param name="id">The sandbox's id.</param>
    /// <param name="options">Server and API key; null for <see cref="SandboxClientOptions.FromEnvironment()"/>.</param>
    /// <param name="cancellationToken">Abandons the call.</param>
    /// <returns>The sandbox.</returns>
    /// <exception cref="SandboxNotFoundException">No such sandbox, or it has ended.</exception>
    /// <exception cref="SandboxApiException">The server answered with another error.</exception>
    /// <exception cref="SandboxConnectionException">The server could not be reached or did not answer in time.</exception>
    public static async Task<Sandbox> ConnectAsync(string id, SandboxClientOptions? options = null, CancellationToken cancellationToken = default)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(id);
        var client = new SandboxClient(options ?? SandboxClientOptions.FromEnvironment());
        try
        {
            var info = await client.GetSandboxAsync(id, cancellationToken).ConfigureAwait(false);
            return new Sandbox(client, info, ownsClient: true, killOnDispose: false);
        }
        catch
        {
            client.Dispose();
            throw;
        }
    }

    /// <summary>Asks the server for the sandbox's current state (<c>GET /v1/sandboxes/{id}</c>) and updates <see cref="Info"/>.</summary>
    /// <param name="cancellationToken">Abandons the call.</param>
    /// <returns>The sandbox's state, lifetime and VM.</returns>
    /// <exception cref="SandboxNotFoundException">The sandbox has ended.</exception>
    /// <exception cref="SandboxApiException">The server answered with another error.</exception>
    /// <exception cref="SandboxConnectionException">The server could not be reached or did not answer in time.</exception>
    public async Task<SandboxInfo> GetInfoAsync(CancellationToken cancellationToken = default)
    {
        var info = await _client.GetSandboxAsync(Id, cancellationToken).ConfigureAwait(false);
        Volatile.Write(ref _info, info);
        return info;
    }

    /// <summary>
    /// Runs <paramref name="code"/> in the sandbox (<c>POST /v1/sandboxes/{id}/run</c>) and waits for the result.
    /// Files and, for python, variables and imports of earlier runs are still there; for python,
    /// <see cref="RunResult.Result"/> holds the repr of a final expression.
    /// With callbacks in <paramref name="options"/>, the run is streamed and they receive output as it is written.
    /// </summary>
    /// <param name="code">The source code to run.</param>
    /// <param name="options">Stdin, environment, time limits, output callbacks; null for none.</param>
    /// <param name="cancellationToken">Abandons the call (a streamed run is then cancelled on the server).</param>
    /// <returns>The result; a program that fails or times out still returns normally: check <see cref="RunResult.Status"/>.</returns>
    /// <exception cref="SandboxNotFoundException">The sandbox has ended.</exception>
    /// <exception cref="SandboxApiException">The server rejected the request (a subclass says why).</exception>
    /// <exception cref="SandboxConnectionException">The server could not be reached, did not answer in time, or a stream broke.</exception>
    public async Task<RunResult> RunAsync(string code, RunOptions? options = null, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(code);
        if (options is { HasCallbacks: true })
        {
            await foreach (var runEvent in RunStreamAsync(code, options, cancellationToken).ConfigureAwait(false))
            {
                switch (runEvent)
                {
                    case StdoutEvent e:
                        options.OnStdout?.Invoke(e.Text);
                        break;
                    case StderrEvent e:
                        options.OnStderr?.Invoke(e.Text);
                        break;
                    case ArtifactEvent e:
                        options.OnArtifact?.Invoke(e.Artifact);
                        break;
                    case ResultEvent e:
                        return e.Result;
                }
            }

            throw new InvalidOperationException("The event stream ended without a result."); // the stream throws first
        }

        return await _client.SendJsonAsync(HttpMethod.Post, SandboxClient.SandboxPath(Id, "/run"), RunBody(code, options),
            SandboxJson.Default.RunResult, cancellationToken).ConfigureAwait(false);
    }

    /// <summary>
    /// Runs <paramref name="code"/> in the sandbox, handing its output to <paramref name="onStdout"/> and
    /// <paramref name="onStderr"/> as it is written (a streamed run), and returns the result.
    /// </summary>
    /// <param name="code">The source code to run.</param>
    /// <param name="onStdout">Receives each piece of standard output.</param>
    /// <param name="onStderr">Receives each piece of standard error; null to ignore it (it is still in the result).</param>
    /// <param name="options">Stdin, environment, time limits; its own callbacks are replaced by these.</param>
    /// <param name="cancellationToken">Abandons the call and cancels the run on the server.</param>
    /// <returns>The result; check <see cref="RunResult.Status"/>.</returns>
    /// <exception cref="SandboxNotFoundException">The sandbox has ended.</exception>
    /// <exception cref="SandboxApiException">The server rejected the request (a subclass says why).</exception>
    /// <exception cref="SandboxConnectionException">The server could not be reached, did not answer in time, or the stream broke.</exception>
    public Task<RunResult> RunAsync(
        string code,
        Action<string> onStdout,
        Action<string>? onStderr = null,
        RunOptions? options = null,
        CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(onStdout);
        return RunAsync(code, new RunOptions
        {
            Stdin = options?.Stdin,
            Env = options?.Env,
            TimeoutS = options?.TimeoutS,
            CompileTimeoutS = options?.CompileTimeoutS,
            OnStdout = onStdout,
            OnStderr = onStderr,
            OnArtifact = options?.OnArtifact,
        }, cancellationToken);
    }

    /// <summary>
    /// Runs <paramref name="code"/> in the sandbox and streams what happens as it happens (<c>text/event-stream</c>):
    /// stdout and stderr text, artifacts, and last the <see cref="ResultEvent"/>.
    /// </summary>
    /// <param name="code">The source code to run.</param>
    /// <param name="options">Stdin, environment, time limits; its callbacks are not called here.</param>
    /// <param name="cancellationToken">Abandons the call; leaving the loop early also disconnects, which cancels the run.</param>
    /// <returns>The events in the order they happened; the last is always a <see cref="ResultEvent"/>.</returns>
    /// <exception cref="SandboxNotFoundException">The sandbox has ended.</exception>
    /// <exception cref="SandboxApiException">The server rejected the request before running anything (a subclass says why).</exception>
    /// <exception cref="SandboxConnectionException">The server could not be reached, did not finish in time, or the stream ended before the result.</exception>
    public IAsyncEnumerable<RunEvent> RunStreamAsync(string code, RunOptions? options = null, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(code);
        return _client.StreamRunAsync(SandboxClient.SandboxPath(Id, "/run"), RunBody(code, options), cancellationToken);
    }

    /// <summary>Lists the files in the sandbox's outputs directory <c>/tmp/outputs</c> (<c>GET /v1/sandboxes/{id}/artifacts</c>).</summary>
    /// <param name="cancellationToken">Abandons the call.</param>
    /// <returns>Path (relative to <c>/tmp/outputs</c>), type, size and hash of each; <see cref="Artifact.Content"/> is null.</returns>
    /// <exception cref="SandboxNotFoundException">The sandbox has ended.</exception>
    /// <exception cref="SandboxApiException">The server answered with another error.</exception>
    /// <exception cref="SandboxConnectionException">The server could not be reached or did not answer in time.</exception>
    public async Task<IReadOnlyList<Artifact>> ListArtifactsAsync(CancellationToken cancellationToken = default)
    {
        var list = await _client.SendJsonAsync(HttpMethod.Get, SandboxClient.SandboxPath(Id, "/artifacts"), null,
            SandboxJson.Default.ArtifactList, cancellationToken).ConfigureAwait(false);
        return list.Artifacts ?? [];
    }

    /// <summary>Reads one artifact (<c>GET /v1/sandboxes/{id}/artifacts/{path}</c>).</summary>
    /// <param name="path">Path relative to <c>/tmp/outputs</c>, e.g. <c>figure-1.png</c> or <c>plots/a.png</c> (a leading <c>/tmp/outputs/</c> is dropped).</param>
    /// <param name="cancellationToken">Abandons the call.</param>
    /// <returns>The bytes and their content type.</returns>
    /// <exception cref="ArgumentException"><paramref name="path"/> is empty, absolute elsewhere, or has <c>.</c> or <c>..</c> segments.</exception>
    /// <exception cref="SandboxFileNotFoundException">No such artifact.</exception>
    /// <exception cref="SandboxNotFoundException">The sandbox has ended.</exception>
    /// <exception cref="SandboxApiException">The server answered with another error.</exception>
    /// <exception cref="SandboxConnectionException">The server could not be reached or did not answer in time.</exception>
    public Task<ArtifactContent> ReadArtifactAsync(string path, CancellationToken cancellationToken = default)
    {
        var relative = ArtifactPath(path);
        return _client.SendAsync(HttpMethod.Get, SandboxClient.SandboxPath(Id, "/artifacts/" + EscapeSegments(relative)), null,
            SandboxClient.s_acceptAny, HttpCompletionOption.ResponseHeadersRead,
            async (response, token) => new ArtifactContent(
                relative,
                response.Content.Headers.ContentType?.MediaType ?? "application/octet-stream",
                await response.Content.ReadAsByteArrayAsync(token).ConfigureAwait(false)),
            cancellationToken);
    }

    /// <summary>
    /// Keeps the sandbox alive (<c>POST /v1/sandboxes/{id}/keepalive</c>): its expiry moves to now plus
    /// <paramref name="timeoutS"/>, or plus its lifetime when null. Updates <see cref="Info"/>.
    /// </summary>
    /// <param name="timeoutS">Seconds from now; null for the sandbox's lifetime.</param>
    /// <param name="cancellationToken">Abandons the call.</param>
    /// <returns>The sandbox with its new <see cref="SandboxInfo.ExpiresAt"/>.</returns>
    /// <exception cref="SandboxNotFoundException">The sandbox has ended.</exception>
    /// <exception cref="SandboxApiException">The server answered with another error, e.g. a timeout out of range.</exception>
    /// <exception cref="SandboxConnectionException">The server could not be reached or did not answer in time.</exception>
    public async Task<SandboxInfo> KeepAliveAsync(double? timeoutS = null, CancellationToken cancellationToken = default)
    {
        var body = timeoutS is null
            ? null
            : JsonSerializer.SerializeToUtf8Bytes(new KeepAliveRequest { TimeoutS = timeoutS }, SandboxJson.Default.KeepAliveRequest);
        var info = await _client.SendJsonAsync(HttpMethod.Post, SandboxClient.SandboxPath(Id, "/keepalive"), body,
            SandboxJson.Default.SandboxInfo, cancellationToken).ConfigureAwait(false);
        Volatile.Write(ref _info, info);
        return info;
    }

    /// <summary>
    /// Pauses the sandbox (<c>POST /v1/sandboxes/{id}/pause</c>): the server saves its memory, processes and files to
    /// disk and ends its VM; it costs no RAM until resumed. Waits for a run in progress. Updates <see cref="Info"/>.
    /// </summary>
    /// <param name="cancellationToken">Abandons the call (the pause goes on on the server).</param>
    /// <returns>The sandbox, <see cref="SandboxState.Paused"/>, with its size on disk.</returns>
    /// <exception cref="SandboxNotFoundException">The sandbox has ended.</exception>
    /// <exception cref="SandboxApiException">
    /// 409 <c>sandbox_paused</c> (already paused), <c>sandbox_busy</c> (a file call in progress), <c>pause_unsupported</c>
    /// (the process runtime); 503 <c>pause_failed</c> (it keeps running).
    /// </exception>
    /// <exception cref="SandboxConnectionException">The server could not be reached or did not answer in time.</exception>
    public Task<SandboxInfo> PauseAsync(CancellationToken cancellationToken = default) => PostInfoAsync("/pause", cancellationToken);

    /// <summary>
    /// Resumes a paused sandbox (<c>POST /v1/sandboxes/{id}/resume</c>) with its globals, open files and background
    /// processes as they were. Any run or file call resumes it too unless it was created with <c>AutoResume = false</c>.
    /// </summary>
    /// <param name="cancellationToken">Abandons the call (the resume goes on on the server).</param>
    /// <returns>The sandbox, running again.</returns>
    /// <exception cref="SandboxNotFoundException">The sandbox has ended.</exception>
    /// <exception cref="SandboxApiException">409 <c>sandbox_not_paused</c>, <c>pause_unsupported</c>; 503 <c>resume_failed</c> (it stays paused).</exception>
    /// <exception cref="SandboxConnectionException">The server could not be reached or did not answer in time.</exception>
    public Task<SandboxInfo> ResumeAsync(CancellationToken cancellationToken = default) => PostInfoAsync("/resume", cancellationToken);

    /// <summary>
    /// Forks the sandbox (<c>POST /v1/sandboxes/{id}/fork</c>): <paramref name="count"/> new sandboxes that start from
    /// its state at this moment (memory, files, interpreter), each independent afterwards with its own identity, clock
    /// and entropy. This sandbox keeps running. Each fork ends when disposed.
    /// </summary>
    /// <param name="count">How many (1 to the server's limit, 8 by default); they count against the live-sandbox limits.</param>
    /// <param name="cancellationToken">Abandons the call.</param>
    /// <returns>The new sandboxes.</returns>
    /// <exception cref="TooManySandboxesException">The forks would pass the server's or the key's sandbox limit.</exception>
    /// <exception cref="SandboxApiException">400 <c>invalid_count</c>, 409 <c>pause_unsupported</c>, 503 <c>fork_failed</c>.</exception>
    /// <exception cref="SandboxConnectionException">The server could not be reached or did not answer in time.</exception>
    public async Task<IReadOnlyList<Sandbox>> ForkAsync(int count = 1, CancellationToken cancellationToken = default)
    {
        var body = JsonSerializer.SerializeToUtf8Bytes(new ForkRequest { Count = count }, SandboxJson.Default.ForkRequest);
        var list = await _client.SendJsonAsync(HttpMethod.Post, SandboxClient.SandboxPath(Id, "/fork"), body,
            SandboxJson.Default.SandboxList, cancellationToken).ConfigureAwait(false);
        return [.. (list.Sandboxes ?? []).Select(info => new Sandbox(_client, info, ownsClient: false, killOnDispose: true))];
    }

    private async Task<SandboxInfo> PostInfoAsync(string verb, CancellationToken cancellationToken)
    {
        var info = await _client.SendJsonAsync(HttpMethod.Post, SandboxClient.SandboxPath(Id, verb), null,
            SandboxJson.Default.SandboxInfo, cancellationToken).ConfigureAwait(false);
        Volatile.Write(ref _info, info);
        return info;
    }

    /// <summary>Ends the sandbox now (<c>DELETE /v1/sandboxes/{id}</c>); its VM, files and state are gone.</summary>
    /// <param name="cancellationToken">Abandons the call.</param>
    /// <returns>True when this call ended it; false when it had already ended (killed before, expired, or unknown to the server).</returns>
    /// <exception cref="SandboxApiException">The server answered with an error other than not found.</exception>
    /// <exception cref="SandboxConnectionException">The server could not be reached or did not answer in time.</exception>
    public async Task<bool> KillAsync(CancellationToken cancellationToken = default)
    {
        if (Volatile.Read(ref _ended) != 0)
        {
            return false;
        }

        var killed = await _client.KillSandboxAsync(Id, cancellationToken).ConfigureAwait(false);
        return Interlocked.Exchange(ref _ended, 1) == 0 && killed;
    }

    /// <summary>
    /// Ends the sandbox on the server when <see cref="KillOnDispose"/> is set (once, however often this is called;
    /// a sandbox that has already ended is not an error), and releases the connection pool this sandbox created.
    /// </summary>
    /// <returns>A task that completes when the sandbox has been ended.</returns>
    /// <exception cref="SandboxApiException">The server refused to end the sandbox for a reason other than not found.</exception>
    /// <exception cref="SandboxConnectionException">The server could not be reached to end the sandbox.</exception>
    public async ValueTask DisposeAsync()
    {
        if (Interlocked.Exchange(ref _disposed, 1) != 0)
        {
            return;
        }

        try
        {
            if (KillOnDispose)
            {
                await KillAsync().ConfigureAwait(false);
            }
        }
        finally
        {
            if (_ownsClient)
            {
                _client.Dispose();
            }
        }
    }

    /// <inheritdoc/>
    public override string ToString() => $"{Id} ({Template})";

    /// <summary>Runs <paramref name="code"/> once in a fresh sandbox and returns what it printed, its artifacts and timings.</summary>
    /// <param name="code">The source code to run.</param>
    /// <param name="template">Template name; default <c>python-data-analysis</c>.</param>
    /// <param name="baseUrl">Server URL; null for <c>$SANDBOXVM_BASE_URL</c>, else <c>http://127.0.0.1:8000</c>.</param>
    /// <param name="stdin">Text fed to standard input.</param>
    /// <param name="timeoutS">Run time limit in seconds; null for the template's default.</param>
    /// <param name="apiKey">API key sent as a bearer token; null for <c>$SANDBOXVM_API_KEY</c> (none when unset).</param>
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
        var environment = SandboxClientOptions.FromEnvironment();
        using var client = new SandboxClient(new SandboxClientOptions
        {
            BaseUrl = baseUrl ?? environment.BaseUrl,
            ApiKey = apiKey ?? environment.ApiKey,
            HttpMessageHandler = handler,
        });
        return await client.RunAsync(
            new RunRequest { Code = code, Template = template, Stdin = stdin, TimeoutS = timeoutS },
            cancellationToken).ConfigureAwait(false);
    }

    /// <summary>The client for <paramref name="options"/>, and whether the sandbox owns (disposes) it.</summary>
    internal static (SandboxClient Client, bool Owns) ClientFor(SandboxCreateOptions options) =>
        ClientFor(options, Environment.GetEnvironmentVariable);

    internal static (SandboxClient Client, bool Owns) ClientFor(SandboxCreateOptions options, Func<string, string?> getEnvironment)
    {
        if (options.Client is { } given)
        {
            return (given, false);
        }

        var environment = SandboxClientOptions.FromEnvironment(getEnvironment);
        var clientOptions = new SandboxClientOptions
        {
            BaseUrl = options.BaseUrl ?? environment.BaseUrl,
            ApiKey = options.ApiKey ?? environment.ApiKey,
            HttpClient = options.HttpClient,
            HttpMessageHandler = options.HttpMessageHandler,
        };
        if (options.RequestTimeout is { } timeout)
        {
            clientOptions.Timeout = timeout;
        }

        return (new SandboxClient(clientOptions), true);
    }

    private static byte[] RunBody(string code, RunOptions? options) =>
        JsonSerializer.SerializeToUtf8Bytes(
            new SandboxRunRequest
            {
                Code = code,
                Stdin = options?.Stdin,
                Env = options?.Env,
                TimeoutS = options?.TimeoutS,
                CompileTimeoutS = options?.CompileTimeoutS,
            },
            SandboxJson.Default.SandboxRunRequest);

    /// <summary>An artifact path relative to <c>/tmp/outputs</c>, checked so it cannot name another URL.</summary>
    internal static string ArtifactPath(string path)
    {
        ArgumentException.ThrowIfNullOrEmpty(path);
        const string outputs = "/tmp/outputs/";
        var relative = path.StartsWith(outputs, StringComparison.Ordinal) ? path[outputs.Length..] : path;
        var segments = relative.Split('/');
        if (relative.Length == 0 || relative.StartsWith('/') || segments.Any(s => s is "" or "." or ".."))
        {
            throw new ArgumentException(
                $"Artifact path '{path}' must be relative to /tmp/outputs, without empty, '.' or '..' segments.", nameof(path));
        }

        return relative;
    }

    private static string EscapeSegments(string relative) => string.Join('/', relative.Split('/').Select(Uri.EscapeDataString));
}
