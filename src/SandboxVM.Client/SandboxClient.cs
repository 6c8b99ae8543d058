using System.Globalization;
using System.Net.Http.Headers;
using System.Text.Json;
using System.Text.Json.Serialization.Metadata;
using SandboxVM.Client.Internal;

namespace SandboxVM.Client;

/// <summary>
/// Client for the SandboxVM REST API: run code once (also streamed), create and manage sandboxes (sessions),
/// list templates, check health. Thread-safe; create one and reuse it. Every call is bounded by
/// <see cref="SandboxClientOptions.Timeout"/>, including the transfer of files and the whole of a streamed run.
/// </summary>
/// <example>
/// <code>
/// using var client = new SandboxClient(new SandboxClientOptions { BaseUrl = "http://127.0.0.1:8000" });
/// var result = await client.RunAsync("print(sum(range(10)))", template: "python-data-analysis");
/// Console.WriteLine(result.Output);
///
/// await using var sandbox = await client.CreateSandboxAsync("python-data-analysis");
/// await sandbox.RunAsync("x = 41");
/// Console.WriteLine((await sandbox.RunAsync("x + 1")).Result);   // 42
/// </code>
/// </example>
public sealed partial class SandboxClient : IDisposable
{
    internal static readonly MediaTypeWithQualityHeaderValue s_acceptJson = new("application/json");
    internal static readonly MediaTypeWithQualityHeaderValue s_acceptOctets = new("application/octet-stream");
    internal static readonly MediaTypeWithQualityHeaderValue s_acceptAny = new("*/*");
    internal static readonly MediaTypeWithQualityHeaderValue s_acceptEvents = new("text/event-stream");
    private static readonly MediaTypeWithQualityHeaderValue s_acceptProblem = new("application/problem+json");
    private static readonly ProductInfoHeaderValue s_userAgent = new(
        "SandboxVM.Client", typeof(SandboxClient).Assembly.GetName().Version?.ToString(3) ?? "0");
    private static readonly Lazy<SocketsHttpHandler> s_sharedHandler = new(CreateHandler);

    private readonly HttpClient _http;
    private readonly bool _ownsHttp;
    private readonly Uri _baseUri;
    private readonly string? _apiKey;
    private readonly TimeSpan _timeout;
    private bool _disposed;

    /// <summary>Creates a client.</summary>
    /// <param name="options">Server URL, API key, timeout; null for a server on <c>http://127.0.0.1:8000</c> without a key.</param>
    /// <exception cref="ArgumentException"><see cref="SandboxClientOptions.BaseUrl"/> is not an absolute http(s) URL, or the timeout is not positive.</exception>
    public SandboxClient(SandboxClientOptions? options = null)
    {
        options ??= new SandboxClientOptions();
        _baseUri = ParseBaseUrl(options.BaseUrl);
        if (options.Timeout <= TimeSpan.Zero && options.Timeout != Timeout.InfiniteTimeSpan)
        {
            throw new ArgumentException("Timeout must be positive or Timeout.InfiniteTimeSpan.", nameof(options));
        }

        _timeout = options.Timeout;
        _apiKey = string.IsNullOrEmpty(options.ApiKey) ? null : options.ApiKey;
        if (options.HttpClient is { } http)
        {
            _http = http;
        }
        else
        {
            // A supplied handler stays the caller's; one created here is released with the client.
            var handler = options.HttpMessageHandler;
            _ownsHttp = true;
            _http = new HttpClient(handler ?? CreateHandler(), disposeHandler: handler is null) { Timeout = Timeout.InfiniteTimeSpan };
        }

        Tools = new SandboxTools(this);
    }

    /// <summary>Creates a client for the server at <paramref name="baseUrl"/>.</summary>
    /// <param name="baseUrl">Base URL of the server, e.g. <c>http://127.0.0.1:8000</c>.</param>
    /// <param name="apiKey">API key sent as a bearer token; null for none.</param>
    /// <exception cref="ArgumentException"><paramref name="baseUrl"/> is not an absolute http(s) URL.</exception>
    public SandboxClient(string baseUrl, string? apiKey = null)
        : this(new SandboxClientOptions { BaseUrl = baseUrl, ApiKey = apiKey })
    {
    }

    /// <summary>Web search and page fetch, run by the server in its <c>websearch-tools</c> sandbox.</summary>
    public SandboxTools Tools { get; }

    /// <summary>A process-wide connection pool for short-lived clients (<see cref="Sandbox.RunOnceAsync"/>).</summary>
    internal static HttpMessageHandler SharedHandler => s_sharedHandler.Value;

    /// <summary>Runs code once in a fresh sandbox (<c>POST /v1/run</c>) and waits for the result.</summary>
    /// <param name="request">Template, code and optional stdin, environment and time limits.</param>
    /// <param name="cancellationToken">Abandons the call.</param>
    /// <returns>
    /// The result. A program that fails, times out or does not compile still returns normally:
    /// check <see cref="RunResult.Status"/>.
    /// </returns>
    /// <exception cref="SandboxApiException">The server rejected the request (a subclass says why).</exception>
    /// <exception cref="SandboxConnectionException">The server could not be reached or did not answer in time.</exception>
    public Task<RunResult> RunAsync(RunRequest request, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(request);
        var body = JsonSerializer.SerializeToUtf8Bytes(request, SandboxJson.Default.RunRequest);
        return SendAsync(HttpMethod.Post, "v1/run", body, SandboxJson.Default.RunResult, cancellationToken);
    }

    /// <summary>Runs <paramref name="code"/> once in a fresh sandbox of <paramref name="template"/> and waits for the result.</summary>
    /// <param name="code">The source code to run.</param>
    /// <param name="template">Template name; default <c>python-data-analysis</c>.</param>
    /// <param name="stdin">Text fed to standard input.</param>
    /// <param name="timeoutS">Run time limit in seconds; null for the template's default.</param>
    /// <param name="cancellationToken">Abandons the call.</param>
    /// <returns>The result; check <see cref="RunResult.Status"/>.</returns>
    /// <exception cref="SandboxApiException">The server rejected the request (a subclass says why).</exception>
    /// <exception cref="SandboxConnectionException">The server could not be reached or did not answer in time.</exception>
    public Task<RunResult> RunAsync(
        string code,
        string template = Sandbox.DefaultTemplate,
        string? stdin = null,
        double? timeoutS = null,
        CancellationToken cancellationToken = default) =>
        RunAsync(new RunRequest { Code = code, Template = template, Stdin = stdin, TimeoutS = timeoutS }, cancellationToken);

    /// <summary>Lists the server's templates and their state (<c>GET /v1/templates</c>).</summary>
    /// <param name="cancellationToken">Abandons the call.</param>
    /// <returns>Every template the server knows, available or not.</returns>
    /// <exception cref="SandboxApiException">The server answered with an error.</exception>
    /// <exception cref="SandboxConnectionException">The server could not be reached or did not answer in time.</exception>
    public async Task<IReadOnlyList<TemplateInfo>> ListTemplatesAsync(CancellationToken cancellationToken = default)
    {
        var list = await SendAsync(HttpMethod.Get, "v1/templates", null, SandboxJson.Default.TemplateList, cancellationToken)
            .ConfigureAwait(false);
        return list.Templates ?? [];
    }

    /// <summary>Gets one template and its state (<c>GET /v1/templates/{name}</c>).</summary>
    /// <param name="name">Template name.</param>
    /// <param name="cancellationToken">Abandons the call.</param>
    /// <returns>The template.</returns>
    /// <exception cref="SandboxNotFoundException">The server has no template of that name.</exception>
    /// <exception cref="SandboxApiException">The server answered with another error.</exception>
    /// <exception cref="SandboxConnectionException">The server could not be reached or did not answer in time.</exception>
    public Task<TemplateInfo> GetTemplateAsync(string name, CancellationToken cancellationToken = default)
    {
        ArgumentException.ThrowIfNullOrEmpty(name);
        return SendAsync(HttpMethod.Get, "v1/templates/" + Uri.EscapeDataString(name), null, SandboxJson.Default.TemplateInfo, cancellationToken);
    }

    /// <summary>Asks the server whether it is up (<c>GET /healthz</c>).</summary>
    /// <param name="cancellationToken">Abandons the call.</param>
    /// <returns>The health status; <see cref="HealthStatus.IsOk"/> when healthy.</returns>
    /// <exception cref="SandboxApiException">The server answered with an error, e.g. 503 while starting.</exception>
    /// <exception cref="SandboxConnectionException">The server could not be reached or did not answer in time.</exception>
    public Task<HealthStatus> HealthAsync(CancellationToken cancellationToken = default) =>
        SendAsync(HttpMethod.Get, "healthz", null, SandboxJson.Default.HealthStatus, cancellationToken);

    /// <summary>Releases the HTTP connection pool, unless an HttpClient or handler was supplied in the options.</summary>
    public void Dispose()
    {
        if (_disposed)
        {
            return;
        }

        _disposed = true;
        if (_ownsHttp)
        {
            _http.Dispose();
        }
    }

    /// <summary>Sends a JSON request (or none) and reads a JSON answer.</summary>
    private Task<T> SendAsync<T>(
        HttpMethod method, string path, byte[]? jsonBody, JsonTypeInfo<T> responseType, CancellationToken cancellationToken) =>
        SendAsync(method, path, JsonContent(jsonBody), s_acceptJson, HttpCompletionOption.ResponseContentRead,
            (response, token) => ReadAsync(response, responseType, token), cancellationToken);

    /// <summary>Sends a request whose answer has no body worth reading (204).</summary>
    internal Task SendNoContentAsync(HttpMethod method, string path, CancellationToken cancellationToken) =>
        SendAsync(method, path, null, s_acceptJson, HttpCompletionOption.ResponseContentRead,
            static (_, _) => Task.FromResult(true), cancellationToken);

    /// <summary>Sends a JSON request (or none) to <paramref name="path"/> and reads a JSON answer; path is relative to the base URL.</summary>
    internal Task<T> SendJsonAsync<T>(
        HttpMethod method, string path, byte[]? jsonBody, JsonTypeInfo<T> responseType, CancellationToken cancellationToken) =>
        SendAsync(method, path, jsonBody, responseType, cancellationToken);

    /// <summary>Uploads <paramref name="content"/> as the raw request body and reads a JSON answer.</summary>
    internal Task<T> SendStreamAsync<T>(
        HttpMethod method, string path, Stream content, JsonTypeInfo<T> responseType, CancellationToken cancellationToken) =>
        SendAsync(method, path, new UploadContent(content), s_acceptJson, HttpCompletionOption.ResponseContentRead,
            (response, token) => ReadAsync(response, responseType, token), cancellationToken);

    /// <summary>
    /// Sends a request, then hands the successful response to <paramref name="read"/> before it is released.
    /// The response body is streamed (not buffered first) when <paramref name="completion"/> is ResponseHeadersRead.
    /// Transport failures and timeouts, also while <paramref name="read"/> reads the body, become <see cref="SandboxConnectionException"/>.
    /// </summary>
    internal async Task<T> SendAsync<T>(
        HttpMethod method,
        string path,
        HttpContent? content,
        MediaTypeWithQualityHeaderValue accept,
        HttpCompletionOption completion,
        Func<HttpResponseMessage, CancellationToken, Task<T>> read,
        CancellationToken cancellationToken)
    {
        using var call = BeginCall(method, path, cancellationToken);
        try
        {
            using var response = await SendCheckedAsync(method, path, content, accept, completion, call.Token).ConfigureAwait(false);
            return await read(response, call.Token).ConfigureAwait(false);
        }
        catch (Exception ex) when (call.Translate(ex) is { } translated)
        {
            throw translated;
        }
    }

    /// <summary>
    /// Sends a request and returns its successful response with the body still unread; the caller disposes it.
    /// The time limit covers the call until the response headers have arrived.
    /// </summary>
    internal async Task<HttpResponseMessage> SendForResponseAsync(
        HttpMethod method, string path, MediaTypeWithQualityHeaderValue accept, CancellationToken cancellationToken)
    {
        using var call = BeginCall(method, path, cancellationToken);
        try
        {
            return await SendCheckedAsync(method, path, null, accept, HttpCompletionOption.ResponseHeadersRead, call.Token).ConfigureAwait(false);
        }
        catch (Exception ex) when (call.Translate(ex) is { } translated)
        {
            throw translated;
        }
    }

    /// <summary>Starts the time limit of one call; its <see cref="Call.Translate"/> turns transport failures into SDK exceptions.</summary>
    internal Call BeginCall(HttpMethod method, string path, CancellationToken cancellationToken)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        return new Call(this, method, path, cancellationToken);
    }

    private async Task<HttpResponseMessage> SendCheckedAsync(
        HttpMethod method,
        string path,
        HttpContent? content,
        MediaTypeWithQualityHeaderValue accept,
        HttpCompletionOption completion,
        CancellationToken token)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        using var request = new HttpRequestMessage(method, new Uri(_baseUri, path));
        request.Headers.Accept.Add(accept);
        request.Headers.Accept.Add(s_acceptProblem);
        request.Headers.UserAgent.Add(s_userAgent);
        if (_apiKey is not null)
        {
            request.Headers.Authorization = new AuthenticationHeaderValue("Bearer", _apiKey);
        }

        request.Content = content;
        var response = await _http.SendAsync(request, completion, token).ConfigureAwait(false);
        if (!response.IsSuccessStatusCode)
        {
            using (response)
            {
                throw await ErrorResponse.ToExceptionAsync(response, token).ConfigureAwait(false);
            }
        }

        return response;
    }

    private static ByteArrayContent? JsonContent(byte[]? jsonBody)
    {
        if (jsonBody is null)
        {
            return null;
        }

        var content = new ByteArrayContent(jsonBody);
        content.Headers.ContentType = new MediaTypeHeaderValue("application/json") { CharSet = "utf-8" };
        return content;
    }

    /// <summary>One HTTP call's time limit, and the translation of its transport failures into SDK exceptions.</summary>
    internal sealed class Call : IDisposable
    {
        private readonly SandboxClient _client;
        private readonly HttpMethod _method;
        private readonly string _path;
        private readonly CancellationToken _caller;
        private readonly CancellationTokenSource _cts;

        public Call(SandboxClient client, HttpMethod method, string path, CancellationToken caller)
        {
            _client = client;
            _method = method;
            _path = path;
            _caller = caller;
            _cts = CancellationTokenSource.CreateLinkedTokenSource(caller);
            if (client._timeout != Timeout.InfiniteTimeSpan)
            {
                _cts.CancelAfter(client._timeout);
            }
        }

        /// <summary>Cancelled by the caller's token or when the time limit passes.</summary>
        public CancellationToken Token => _cts.Token;

        /// <summary>What <c>METHOD /path</c> the call is, for messages.</summary>
        public string What => $"{_method} /{_path}";

        /// <summary>
        /// The SDK exception for a transport failure or a timeout of this call; null for anything else
        /// (an API error already typed, the caller's own cancellation, a bug).
        /// </summary>
        public SandboxException? Translate(Exception ex)
        {
            switch (ex)
            {
                case OperationCanceledException when !_caller.IsCancellationRequested:
                    var limit = _client._timeout == Timeout.InfiniteTimeSpan ? "the HttpClient's timeout" : FormatDuration(_client._timeout);
                    return new SandboxConnectionException($"SandboxVM at {_client.BaseUrlText} did not answer {What} within {limit}.", ex);
                case HttpRequestException http:
                    var hint = http.HttpRequestError == HttpRequestError.ConnectionError ? " Is the server running (sandboxvm serve)?" : "";
                    return new SandboxConnectionException($"Cannot reach SandboxVM at {_client.BaseUrlText} ({What}): {ex.Message}{hint}", ex);
                case HttpIOException:
                    return new SandboxConnectionException($"Connection to SandboxVM at {_client.BaseUrlText} broke during {What}: {ex.Message}", ex);
                default:
                    return null;
            }
        }

        /// <summary>The error for an event stream that ended before its <c>result</c> event.</summary>
        public SandboxConnectionException StreamEnded() =>
            new($"SandboxVM at {_client.BaseUrlText} ended the event stream of {What} before the result event; the run's outcome is unknown.");

        public void Dispose() => _cts.Dispose();
    }

    /// <summary>Connection pool with a bounded connect time, so an unroutable address fails fast rather than at <see cref="_timeout"/>.</summary>
    private static SocketsHttpHandler CreateHandler() => new()
    {
        ConnectTimeout = TimeSpan.FromSeconds(30),
        PooledConnectionLifetime = TimeSpan.FromMinutes(2),
    };

    internal static async Task<T> ReadAsync<T>(HttpResponseMessage response, JsonTypeInfo<T> type, CancellationToken cancellationToken)
    {
        try
        {
            var stream = await response.Content.ReadAsStreamAsync(cancellationToken).ConfigureAwait(false);
            await using (stream.ConfigureAwait(false))
            {
                var value = await JsonSerializer.DeserializeAsync(stream, type, cancellationToken).ConfigureAwait(false);
                return value ?? throw InvalidResponse(response, "the body was JSON null", null);
            }
        }
        catch (JsonException ex)
        {
            throw InvalidResponse(response, ex.Message, ex);
        }
    }

    internal static SandboxApiException InvalidResponse(HttpResponseMessage response, string why, Exception? inner) =>
        new(response.StatusCode, "Unexpected response from SandboxVM (is the base URL right?)", why, null, null, inner);

    /// <summary>The base URL as given, for messages.</summary>
    internal string BaseUrlText => _baseUri.AbsoluteUri.TrimEnd('/');

    internal Task<SandboxTerminal> OpenTerminalAsync(string sandboxId, int cols, int rows, string? command, CancellationToken cancellationToken) =>
        SandboxTerminal.ConnectAsync(_baseUri, _apiKey, sandboxId, cols, rows, command, invoker: null, cancellationToken);

    private static Uri ParseBaseUrl(string? baseUrl)
    {
        if (string.IsNullOrWhiteSpace(baseUrl)
            || !Uri.TryCreate(baseUrl.Trim(), UriKind.Absolute, out var uri)
            || (uri.Scheme != Uri.UriSchemeHttp && uri.Scheme != Uri.UriSchemeHttps))
        {
            throw new ArgumentException($"BaseUrl must be an absolute http:// or https:// URL, got '{baseUrl}'.", nameof(baseUrl));
        }

        // Keep a path prefix (a server behind a reverse proxy): relative paths resolve under it only with a trailing slash.
        var text = uri.GetLeftPart(UriPartial.Path);
        return new Uri(text.EndsWith('/') ? text : text + "/");
    }

    private static string FormatDuration(TimeSpan duration) =>
        duration.TotalSeconds < 120
            ? string.Create(CultureInfo.InvariantCulture, $"{duration.TotalSeconds:0.###} s")
            : string.Create(CultureInfo.InvariantCulture, $"{duration.TotalMinutes:0.##} min");
}
