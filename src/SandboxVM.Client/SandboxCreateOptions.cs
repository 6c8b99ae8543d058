namespace SandboxVM.Client;

/// <summary>
/// How to reach the server and how long the new sandbox lives, for <see cref="Sandbox.CreateAsync"/>.
/// Every member is optional.
/// </summary>
public sealed class SandboxCreateOptions
{
    /// <summary>
    /// Base URL of the server; when null, <c>$SANDBOXVM_BASE_URL</c> (or <c>$SANDBOXVM_URL</c>), else
    /// <c>http://127.0.0.1:8000</c>. Ignored when <see cref="Client"/> is set.
    /// </summary>
    public string? BaseUrl { get; init; }

    /// <summary>API key sent as a bearer token; when null, <c>$SANDBOXVM_API_KEY</c>. Ignored when <see cref="Client"/> is set.</summary>
    public string? ApiKey { get; init; }

    /// <summary>An HttpClient to send requests with (not disposed by the sandbox). Ignored when <see cref="Client"/> is set.</summary>
    public HttpClient? HttpClient { get; init; }

    /// <summary>A handler to send requests through, e.g. a fake in tests (not disposed). Ignored when <see cref="Client"/> is set.</summary>
    public HttpMessageHandler? HttpMessageHandler { get; init; }

    /// <summary>Longest wait for one HTTP call; null for <see cref="SandboxClientOptions.Timeout"/>'s default. Ignored when <see cref="Client"/> is set.</summary>
    public TimeSpan? RequestTimeout { get; init; }

    /// <summary>
    /// A client to use instead of creating one from the members above; the sandbox does not dispose it.
    /// </summary>
    public SandboxClient? Client { get; init; }

    /// <summary>Lifetime of the sandbox in seconds (<c>timeout_s</c>); null for the server's default.</summary>
    public double? TimeoutS { get; init; }

    /// <summary>Seconds without any call after which the server ends the sandbox (<c>idle_timeout_s</c>); null for the server's default.</summary>
    public double? IdleTimeoutS { get; init; }

    /// <summary>
    /// Keep the sandbox's VM running between calls (<c>keep_running</c>), so background processes go on; by
    /// default an idle sandbox is frozen (no CPU) and the next call thaws it. Null: the server's default (frozen).
    /// </summary>
    public bool? KeepRunning { get; init; }

    /// <summary>Free-form labels stored with the sandbox and returned in <see cref="SandboxInfo.Metadata"/>.</summary>
    public IReadOnlyDictionary<string, string>? Metadata { get; init; }

    /// <summary>What the server does with the sandbox once idle (<c>on_idle</c>): end it (default) or pause it.</summary>
    public SandboxIdleAction? OnIdle { get; init; }

    /// <summary>Whether a call on the paused sandbox resumes it first (<c>auto_resume</c>, server default true).</summary>
    public bool? AutoResume { get; init; }

    /// <summary>
    /// Start from this named snapshot of the caller's (<c>from_snapshot</c>) instead of a fresh VM: its files, interpreter
    /// state and build cache come with it. The template is the snapshot's; a different one named is refused.
    /// </summary>
    public string? FromSnapshot { get; init; }
}

/// <summary>What the server does with a sandbox that has been idle for its idle timeout.</summary>
public enum SandboxIdleAction
{
    /// <summary><c>kill</c>: it ends (the default).</summary>
    Kill,

    /// <summary><c>pause</c>: it is saved to disk and resumed on the next call (qemu and gvisor runtimes).</summary>
    Pause,
}
