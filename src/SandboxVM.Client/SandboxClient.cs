using System.Globalization;
using System.Net.Http.Headers;
using System.Text.Json;
using System.Text.Json.Serialization.Metadata;
using SandboxVM.Client.Internal;

namespace SandboxVM.Client;

/// <summary>
/// Client for the SandboxVM REST API: run code, list templates, check health.
/// Thread-safe; create one and reuse it.
/// </summary>
/// <example>
/// <code>
/// using var client = new SandboxClient(new SandboxClientOptions { BaseUrl = "http://127.0.0.1:8000" });
/// var result = await client.RunAsync("print(sum(range(10)))", template: "python-data-analysis");
/// Console.WriteLine(result.Output);
/// </code>
/// </example>
public sealed class SandboxClient : IDisposable
{
    private static readonly MediaTypeWithQualityHeaderValue s_acceptJson = new("application/json");
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
    }

    /// <summary>Creates a client for the server at <paramref name="baseUrl"/>.</summary>
    /// <param name="baseUrl">Base URL of the server, e.g. <c>http://127.0.0.1:8000</c>.</param>
    /// <param name="apiKey">API key sent as a bearer token; null for none.</param>
    /// <exception cref="ArgumentException"><paramref name="baseUrl"/> is not an absolute http(s) URL.</exception>
    public SandboxClient(string baseUrl, string? apiKey = null)
        : this(new SandboxClientOptions { BaseUrl = baseUrl, ApiKey = apiKey })
    {
    }

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

    private async Task<T> SendAsync<T>(
        HttpMethod method, string path, byte[]? jsonBody, JsonTypeInfo<T> responseType, CancellationToken cancellationToken)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        var uri = new Uri(_baseUri, path);
        using var timeout = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
        if (_timeout != Timeout.InfiniteTimeSpan)
        {
            timeout.CancelAfter(_timeout);
        }

        using var request = new HttpRequestMessage(method, uri);
        request.Headers.Accept.Add(s_acceptJson);
        request.Headers.Accept.Add(s_acceptProblem);
        request.Headers.UserAgent.Add(s_userAgent);
        if (_apiKey is not null)
        {
            request.Headers.Authorization = new AuthenticationHeaderValue("Bearer", _apiKey);
        }

        if (jsonBody is not null)
        {
            request.Content = new ByteArrayContent(jsonBody);
            request.Content.Headers.ContentType = new MediaTypeHeaderValue("application/json") { CharSet = "utf-8" };
        }

        try
        {
            using var response = await _http.SendAsync(request, HttpCompletionOption.ResponseContentRead, timeout.Token)
                .ConfigureAwait(false);
            if (!response.IsSuccessStatusCode)
            {
                throw await ErrorResponse.ToExceptionAsync(response, timeout.Token).ConfigureAwait(false);
            }

            return await ReadAsync(response, responseType, timeout.Token).ConfigureAwait(false);
        }
        catch (OperationCanceledException ex) when (!cancellationToken.IsCancellationRequested)
        {
            var limit = _timeout == Timeout.InfiniteTimeSpan ? "the HttpClient's timeout" : FormatDuration(_timeout);
            throw new SandboxConnectionException(
                $"SandboxVM at {BaseUrlText} did not answer {method} /{path} within {limit}.",
                ex);
        }
        catch (HttpRequestException ex)
        {
            var hint = ex.HttpRequestError == HttpRequestError.ConnectionError ? " Is the server running (sandboxvm serve)?" : "";
            throw new SandboxConnectionException(
                $"Cannot reach SandboxVM at {BaseUrlText} ({method} /{path}): {ex.Message}{hint}",
                ex);
        }
    }

    /// <summary>Connection pool with a bounded connect time, so an unroutable address fails fast rather than at <see cref="_timeout"/>.</summary>
    private static SocketsHttpHandler CreateHandler() => new()
    {
        ConnectTimeout = TimeSpan.FromSeconds(30),
        PooledConnectionLifetime = TimeSpan.FromMinutes(2),
    };

    private static async Task<T> ReadAsync<T>(HttpResponseMessage response, JsonTypeInfo<T> type, CancellationToken cancellationToken)
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

    private static SandboxApiException InvalidResponse(HttpResponseMessage response, string why, Exception? inner) =>
        new(response.StatusCode, "Unexpected response from SandboxVM (is the base URL right?)", why, null, null, inner);

    private string BaseUrlText => _baseUri.AbsoluteUri.TrimEnd('/');

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
