using System.Security.Cryptography;
using System.Text;
using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.FileProviders;
using Microsoft.Extensions.FileProviders.Physical;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Primitives;
using SandboxVM.Core;
using SandboxVM.Core.Runs;

namespace SandboxVM.Server;

/// <summary>What one caller may use; null: no limit of its own (the server's limits still apply).</summary>
public sealed record CallerLimits(int? Sandboxes, int? RunsPerMinute, int? ConcurrentRuns, int? SearchesPerMinute)
{
    public static CallerLimits None { get; } = new(null, null, null, null);
}

/// <summary>
/// Who is calling: an API key's name (sandboxes belong to it), whether it may use /metrics and the admin
/// calls, and its limits.
/// </summary>
public sealed record Caller(string Name, bool Admin, CallerLimits Limits)
{
    public const string AnonymousName = "anonymous";

    /// <summary>The name of the single key of SANDBOXVM_API_KEY / SandboxVM:ApiKey.</summary>
    public const string SingleKeyName = "default";

    /// <summary>Every caller of a server without keys: one admin without limits, as before keys existed.</summary>
    public static Caller Anonymous { get; } = new(AnonymousName, true, CallerLimits.None);
}

internal static class CallerExtensions
{
    /// <summary>The caller the key middleware found; every /v1 and /metrics request has one.</summary>
    public static Caller GetCaller(this HttpContext context) =>
        context.Features.Get<Caller>() ?? throw new InvalidOperationException("no caller on a request the key middleware did not see");
}

/// <summary>
/// The API keys the server accepts: the single SANDBOXVM_API_KEY (one admin without limits) and the keys
/// file, read again whenever it changes. A file that no longer reads keeps the keys loaded before (and
/// says why in the log); keys and their hashes are never logged.
/// </summary>
public sealed partial class CallerStore : IDisposable
{
    private readonly string? _file;
    private readonly KeyLimitOptions _defaults;
    private readonly KeyValuePair<string, Caller>? _single;
    private readonly Lock _reloading = new();
    private volatile IReadOnlyDictionary<string, Caller> _byHash;
    private byte[] _fileHash = [];
    private ILogger? _logger;
    private PhysicalFileProvider? _provider;
    private IDisposable? _watch;

    private CallerStore(string? singleKey, string? file, KeyLimitOptions defaults)
    {
        _file = file is { Length: > 0 } ? Path.GetFullPath(file) : null;
        _defaults = defaults;
        if (singleKey is { Length: > 0 })
        {
            _single = new(ApiKeys.Hash(singleKey), new Caller(Caller.SingleKeyName, true, CallerLimits.None));
        }
        _byHash = _file is null ? WithSingle(new Dictionary<string, Caller>()) : Load(_file);
    }

    /// <summary>
    /// The keys of <paramref name="singleKey"/> and <paramref name="file"/> (either may be null). A file that is
    /// missing or does not read throws, naming it: a server does not start with keys it cannot read.
    /// </summary>
    public static CallerStore Create(string? singleKey, string? file, KeyLimitOptions defaults)
    {
        try
        {
            return new CallerStore(singleKey, file, defaults);
        }
        catch (FormatException e)
        {
            throw new InvalidOperationException(e.Message, e);
        }
    }

    /// <summary>True when callers must present a key; false: everyone is <see cref="Caller.Anonymous"/>.</summary>
    public bool KeysRequired => _single is not null || _file is not null;

    /// <summary>The keys file, when there is one.</summary>
    public string? FilePath => _file;

    /// <summary>Every caller a key is known for now.</summary>
    public IReadOnlyList<Caller> All => [.. _byHash.Values.OrderBy(c => c.Name, StringComparer.Ordinal)];

    /// <summary>The caller holding <paramref name="presented"/>, or null.</summary>
    public Caller? Authenticate(string presented)
    {
        // Looked up by hash: the table holds no keys, and a lookup's timing tells nothing about a key
        // whose hash is not known to the caller.
        return presented.Length is > 0 and <= 1024 && _byHash.TryGetValue(ApiKeys.Hash(presented), out var caller) ? caller : null;
    }

    /// <summary>The caller named <paramref name="name"/> as the keys say now (its limits may have changed), or null.</summary>
    public Caller? Find(string name) =>
        name == Caller.AnonymousName && !KeysRequired ? Caller.Anonymous : _byHash.Values.FirstOrDefault(c => c.Name == name);

    /// <summary>Starts following the keys file: read again on every change.</summary>
    public void Watch(ILogger logger)
    {
        _logger = logger;
        LogKeys(logger, _byHash.Count, _file ?? "none", _single is not null);
        if (_file is null || _provider is not null)
        {
            return;
        }
        // ExclusionFilters.None: a key file may well be a dot file.
        _provider = new PhysicalFileProvider(Path.GetDirectoryName(_file)!, ExclusionFilters.None);
        string name = Path.GetFileName(_file);
        _watch = ChangeToken.OnChange(() => _provider.Watch(name), Reload);
        // A change between the first read and the watch is not lost.
        Reload();
    }

    private void Reload()
    {
        if (_file is null)
        {
            return;
        }
        lock (_reloading)
        {
            ReloadLocked(_file);
        }
    }

    private void ReloadLocked(string file)
    {
        try
        {
            byte[] bytes = ReadBounded(file);
            byte[] hash = SHA256.HashData(bytes);
            if (hash.AsSpan().SequenceEqual(_fileHash))
            {
                return;
            }
            _byHash = Parse(bytes, file);
            _fileHash = hash;
            if (_logger is not null)
            {
                LogReloaded(_logger, file, _byHash.Count);
            }
        }
        catch (Exception e) when (e is FormatException or IOException or UnauthorizedAccessException)
        {
            if (_logger is not null)
            {
                LogReloadFailed(_logger, file, _byHash.Count, e.Message);
            }
        }
    }

    private IReadOnlyDictionary<string, Caller> Load(string file)
    {
        byte[] bytes;
        try
        {
            bytes = ReadBounded(file);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new FormatException($"API keys file {file} cannot be read (SandboxVM:ApiKeysFile): {e.Message}");
        }
        _fileHash = SHA256.HashData(bytes);
        return Parse(bytes, file);
    }

    private IReadOnlyDictionary<string, Caller> Parse(byte[] bytes, string file)
    {
        var byHash = new Dictionary<string, Caller>(ApiKeys.Parse(Encoding.UTF8.GetString(bytes), file, _defaults), StringComparer.Ordinal);
        return WithSingle(byHash);
    }

    private Dictionary<string, Caller> WithSingle(Dictionary<string, Caller> byHash)
    {
        if (_single is { } single)
        {
            byHash[single.Key] = single.Value;
        }
        return byHash;
    }

    private static byte[] ReadBounded(string file)
    {
        using var stream = new FileStream(file, FileMode.Open, FileAccess.Read, FileShare.ReadWrite | FileShare.Delete);
        if (stream.Length > ApiKeys.MaxFileBytes)
        {
            throw new FormatException($"API keys file {file} is over {ApiKeys.MaxFileBytes} bytes");
        }
        var buffer = new byte[stream.Length];
        stream.ReadExactly(buffer);
        return buffer;
    }

    public void Dispose()
    {
        _watch?.Dispose();
        _provider?.Dispose();
    }

    [LoggerMessage(Level = LogLevel.Information, Message = "API keys: {Count} accepted (keys file: {File}; SANDBOXVM_API_KEY: {Single})")]
    private static partial void LogKeys(ILogger logger, int count, string file, bool single);

    [LoggerMessage(Level = LogLevel.Information, Message = "keys file {File} read again: {Count} keys")]
    private static partial void LogReloaded(ILogger logger, string file, int count);

    [LoggerMessage(Level = LogLevel.Error, Message = "keys file {File} changed but cannot be used; keeping the {Count} keys loaded before: {Error}")]
    private static partial void LogReloadFailed(ILogger logger, string file, int count, string error);
}

/// <summary>
/// Finds the caller of every /v1 and /metrics request: with keys configured, the key of
/// <c>Authorization: Bearer KEY</c> (401 otherwise); without, <see cref="Caller.Anonymous"/>. On /e2b the owner
/// of the sandbox whose token a sandbox-side call presents (the E2B door checks keys and tokens itself). /metrics and
/// /v1/admin need an admin (403). On /mcp the caller is also the request's user, to whom the MCP SDK binds a session.
/// </summary>
internal sealed class CallerMiddleware(RequestDelegate next, CallerStore callers)
{
    public const string AdminPath = "/v1/admin";

    public Task InvokeAsync(HttpContext context)
    {
        var path = context.Request.Path;
        if (path.StartsWithSegments(E2b.E2bEndpoints.Prefix))
        {
            // E2B's sandbox-side calls carry no key: a sandbox's token stands for its owner, whose run limits /execute counts against.
            if (E2b.E2bEnvd.OwnerOf(context, callers) is { } owner)
            {
                context.Features.Set(owner);
            }
            return next(context);
        }
        bool mcp = path.StartsWithSegments(Mcp.McpEndpoint.Path);
        if (!mcp && !path.StartsWithSegments("/v1") && !path.StartsWithSegments(MetricsExporter.Path))
        {
            return next(context);
        }
        Caller caller = Caller.Anonymous;
        if (context.RequestServices.GetService<ITrustedHop>()?.CallerOf(context) is { } forwarded)
        {
            // A call another node of the cluster forwarded: that node checked the key and its limits.
            caller = forwarded;
        }
        else if (callers.KeysRequired)
        {
            string header = context.Request.Headers.Authorization.ToString();
            string presented = header.StartsWith("Bearer ", StringComparison.OrdinalIgnoreCase) ? header["Bearer ".Length..].Trim() : "";
            if (callers.Authenticate(presented) is not { } known)
            {
                context.Response.Headers.WWWAuthenticate = "Bearer";
                return Problems.Write(context, 401, ProblemCodes.Unauthorized, null, "a valid API key is required (Authorization: Bearer <key>)");
            }
            caller = known;
        }
        if (!caller.Admin && (path.StartsWithSegments(MetricsExporter.Path) || path.StartsWithSegments(AdminPath)))
        {
            return Problems.Write(context, 403, HttpProblemCodes.AdminRequired, null, "this call needs an admin API key");
        }
        context.Features.Set(caller);
        if (mcp)
        {
            context.User = Mcp.McpEndpoint.UserOf(caller);
        }
        return next(context);
    }
}
