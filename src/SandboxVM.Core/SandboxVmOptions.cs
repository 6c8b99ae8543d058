namespace SandboxVM.Core;

/// <summary>Server-wide settings (section "SandboxVM" of the configuration).</summary>
public sealed class SandboxVmOptions
{
    /// <summary>Directories of template YAML files; the built-in `templates/` first, then the user's.</summary>
    public List<string> TemplateDirectories { get; set; } = [];

    /// <summary>Where built images live, keyed by content hash. Outside any checkout so it survives clones.</summary>
    public string CacheDir { get; set; } = "/var/cache/sandboxvm";

    /// <summary>Snapshots of template VMs (guest RAM and device state): tmpfs is best, so restores map RAM pages.</summary>
    public string SnapshotDir { get; set; } = "/dev/shm/sandboxvm";

    /// <summary>
    /// After saving a template's snapshot, other snapshots of that template are removed only when none was
    /// restored for this long and no live VM maps it (servers of other builds may share the store).
    /// </summary>
    public double SnapshotGracePeriodS { get; set; } = 900;

    /// <summary>
    /// At start, remove image cache entries (in the background) not used for <see cref="CacheGcOlderThanDays"/>
    /// and not needed by the current templates, as <c>sandboxvm cache gc</c> does. Off: the cache only grows.
    /// </summary>
    public bool CacheGcOnStart { get; set; } = true;

    /// <summary>Period of the start-up cache collection, in days.</summary>
    public double CacheGcOlderThanDays { get; set; } = 7;

    /// <summary>
    /// Base URL of an OpenTelemetry collector (OTLP over HTTP/protobuf, e.g. http://127.0.0.1:4318): runs'
    /// phase spans go there. Null: the standard OTEL_EXPORTER_OTLP_* variables decide; neither set, no tracing.
    /// </summary>
    public string? OtlpEndpoint { get; set; }

    /// <summary>auto, process, qemu or firecracker.</summary>
    public string Runtime { get; set; } = "auto";

    /// <summary>Acceleration for VM runtimes: auto (kvm when KVM can create a VM here, else tcg), kvm or tcg.</summary>
    public string Accel { get; set; } = "auto";

    /// <summary>Host path of the published NativeAOT agent binary injected into every rootfs.</summary>
    public string? AgentPath { get; set; }

    /// <summary>Runs executing at once; the rest wait in order (queue_ms).</summary>
    public int MaxConcurrentRuns { get; set; } = 4;

    /// <summary>Runs allowed to wait; past that a run is refused with 429 rather than queued without bound.</summary>
    public int MaxQueuedRuns { get; set; } = 256;

    public int MaxCodeBytes { get; set; } = 1 << 20;

    public int MaxStdinBytes { get; set; } = 1 << 20;

    /// <summary>An artifact up to this size comes back inline (base64) in the RunResult.</summary>
    public long ArtifactInlineMaxBytes { get; set; } = 8L << 20;

    /// <summary>Inline artifact bytes per run, all artifacts together.</summary>
    public long ArtifactInlineTotalBytes { get; set; } = 32L << 20;

    /// <summary>Slack the host grants past the guest's own timeouts before it kills the sandbox itself.</summary>
    public double HostTimeoutMarginS { get; set; } = 3;

    /// <summary>
    /// Time a run's artifacts may take to come back after the exec's own deadline (its timeouts plus
    /// <see cref="HostTimeoutMarginS"/>): one host deadline covers the exec, the artifact list and every
    /// file read. A guest still handing over artifacts past it is killed (status <c>sandbox_error</c>).
    /// </summary>
    public double ArtifactTimeoutS { get; set; } = 30;

    /// <summary>Largest file a caller may download from a sandbox (GET .../files and .../artifacts/...); larger is a 409.</summary>
    public long MaxDownloadBytes { get; set; } = 1L << 30;

    /// <summary>Keep warm sandboxes for templates whose warm-up strategy is <c>pool</c>.</summary>
    public bool Pools { get; set; } = true;

    /// <summary>Build every available template in the background when the server starts.</summary>
    public bool BuildTemplatesOnStart { get; set; } = true;

    /// <summary>Live sandboxes (sessions) at once; past that creating one is a 429.</summary>
    public int MaxSandboxes { get; set; } = 8;

    /// <summary>
    /// Host memory (MiB, /proc/meminfo MemAvailable) below which no sandbox starts: creates and one-shot runs
    /// that need a new VM answer 503 <c>host_memory_low</c>, pool refills wait. 0: no floor.
    /// </summary>
    public int MinHostMemoryMiB { get; set; } = 512;

    /// <summary>Lifetime of a sandbox when its creator names none.</summary>
    public double SandboxTimeoutS { get; set; } = 3600;

    /// <summary>Longest lifetime (and idle timeout) a caller may ask for.</summary>
    public double MaxSandboxTimeoutS { get; set; } = 86400;

    /// <summary>A sandbox without calls for this long ends, unless its creator asked otherwise.</summary>
    public double SandboxIdleTimeoutS { get; set; } = 900;

    /// <summary>
    /// Where the server keeps what must outlive it: paused sandboxes (<c>paused/&lt;id&gt;/</c>: the saved
    /// image and a JSON record). On disk, not tmpfs: a paused sandbox costs no RAM and survives a restart.
    /// </summary>
    public string StateDir { get; set; } = "/var/lib/sandboxvm";

    /// <summary>
    /// A directory every node of a cluster mounts (e.g. NFS): paused sandboxes go to <c>paused/&lt;id&gt;/</c>
    /// there instead of under <see cref="StateDir"/>, so another node can resume them. Set, a starting server
    /// loads none of them: each is claimed on its next call by the node its cluster grain lives on
    /// (<see cref="Sessions.SessionManager.AdoptPaused"/>). Null: paused sandboxes are this server's alone.
    /// </summary>
    public string? SharedStateDir { get; set; }

    /// <summary>A paused sandbox not resumed for this long is removed (its image deleted).</summary>
    public double PausedTtlS { get; set; } = 7 * 86400;

    /// <summary>Most sandboxes one fork call makes.</summary>
    public int MaxForkCount { get; set; } = 8;

    /// <summary>Most named snapshots one API key keeps (each is a whole saved VM on disk).</summary>
    public int MaxSnapshotsPerOwner { get; set; } = 20;

    /// <summary>How often lifetimes and idle times are checked.</summary>
    public double SandboxReapIntervalS { get; set; } = 1;

    /// <summary>
    /// Freeze a sandbox (and the waiting members of a pool) while no call is in flight, so idle sandboxes
    /// cost no CPU; the next call thaws it first. A sandbox created with <c>keep_running</c> is never frozen.
    /// </summary>
    public bool FreezeIdle { get; set; } = true;

    /// <summary>
    /// Seconds a sandbox must have been without a call before it is frozen (checked on the reaper's tick):
    /// back-to-back calls do not pay a freeze and a thaw each (on gvisor each is a runsc call, 60-200 ms
    /// on a loaded 2-core host).
    /// </summary>
    public double SandboxFreezeAfterS { get; set; } = 2;

    /// <summary>Restores a pool runs at once when it refills; a template's <c>refill_concurrency</c> overrides it. 0: the host's cores.</summary>
    public int PoolRefillConcurrency { get; set; }

    /// <summary>
    /// Seconds a pool remembers a burst of requests it could not serve from ready sandboxes and its refills
    /// could not keep up with: its target stays at least that burst's size (up to the template's
    /// <c>pool_max</c>) for this long, so the same burst again is served from the pool. 0: the pool follows
    /// the arrival rate alone.
    /// </summary>
    public double PoolBurstMemoryS { get; set; } = 300;

    /// <summary>
    /// Milliseconds a pool's refill waits after a take while ready sandboxes remain, so the restore does not share
    /// the CPU with the taker's first call (a one-shot run is usually over by then). Not while a refill is already
    /// under way, so a series of takes is held once; a take that empties the pool refills at once. 0: refills
    /// start on the take.
    /// </summary>
    public int PoolRefillHoldMs { get; set; } = 250;

    /// <summary>Largest file a caller may upload into a sandbox (PUT .../files).</summary>
    public long MaxUploadBytes { get; set; } = 100L << 20;

    /// <summary>Requests a singleton template's VM serves at once.</summary>
    public int SingletonConcurrency { get; set; } = 4;

    /// <summary>Requests that may wait for a singleton; past that a request is a 429.</summary>
    public int SingletonQueue { get; set; } = 16;

    /// <summary>Start singleton VMs with the server (true) or on their first request.</summary>
    public bool StartSingletonsWithServer { get; set; } = true;

    /// <summary>
    /// Extra egress allow rules appended to every <c>network.mode: proxy</c> template's own (same forms:
    /// host, <c>*.domain</c>, address, CIDR, each optionally <c>:port</c>). For operators and tests,
    /// e.g. <c>127.0.0.1:8080</c> to reach a local service. Deny rules still win.
    /// </summary>
    public List<string> EgressAllow { get; set; } = [];

    /// <summary>Ports added to every proxy template's allowed ports (80 and 443 unless the template lists its own).</summary>
    public List<int> EgressPorts { get; set; } = [];

    /// <summary>Egress connections one proxy sandbox may have open at once (more: denied <c>too_many_connections</c>).</summary>
    public int EgressMaxConnections { get; set; } = 64;

    /// <summary>Egress connection requests one proxy sandbox may make per minute (more: denied <c>rate_limited</c>).</summary>
    public int EgressMaxConnectionsPerMinute { get; set; } = 600;

    /// <summary>Bytes per second one proxy sandbox may move through egress, both directions together (0: no limit).</summary>
    public long EgressMaxBytesPerSecond { get; set; } = 16L << 20;

    /// <summary>Where the guest agent's HTTP proxy listens inside proxy sandboxes (HTTP_PROXY of the template points there).</summary>
    public string EgressListen { get; set; } = "127.0.0.1:3128";

    /// <summary>Web search provider for proxy sandboxes: <c>searxng</c>, <c>brave</c>, <c>duckduckgo</c>; empty: not configured (env SANDBOXVM_SEARCH_PROVIDER).</summary>
    public string? SearchProvider { get; set; }

    /// <summary>Base URL of the search service (env SANDBOXVM_SEARCH_URL).</summary>
    public string? SearchBaseUrl { get; set; }

    /// <summary>API key of the search service (brave); stays on the host (env SANDBOXVM_SEARCH_API_KEY).</summary>
    public string? SearchApiKey { get; set; }

    /// <summary>Searches one sandbox may ask the host for per minute (a token bucket; more are refused <c>rate_limited</c>).</summary>
    public int SearchesPerMinutePerSandbox { get; set; } = 30;

    /// <summary>
    /// JSON file of the API keys (callers): name, SHA-256 of the key, admin flag, limits; read again when it
    /// changes (env SANDBOXVM_API_KEYS_FILE). Format in docs/API.md; <c>sandboxvm keys new</c> makes entries.
    /// </summary>
    public string? ApiKeysFile { get; set; }

    /// <summary>
    /// Host header names the server answers (<c>*.example.com</c> wildcards, <c>*</c> for any); others get a 400.
    /// Empty: <c>localhost</c>, <c>127.0.0.1</c> and <c>[::1]</c>, plus this host's names and interface addresses
    /// when it listens beyond loopback.
    /// </summary>
    public List<string> AllowedHosts { get; set; } = [];

    /// <summary>
    /// Listen on a non-loopback address without API keys, for a trusted network only (CLI
    /// <c>serve --insecure-no-auth</c>). Without it such a server refuses to start.
    /// </summary>
    public bool InsecureNoAuth { get; set; }

    /// <summary>Limits of every key in <see cref="ApiKeysFile"/> that does not set its own.</summary>
    public KeyLimitOptions KeyLimits { get; set; } = new();
}

/// <summary>What one API key may use at once or per minute (each at least 1).</summary>
public sealed class KeyLimitOptions
{
    /// <summary>Live sandboxes of the key.</summary>
    public int Sandboxes { get; set; } = 4;

    /// <summary>Runs (one-shot, sandbox and tools calls) the key may start per minute.</summary>
    public int RunsPerMinute { get; set; } = 60;

    /// <summary>Runs of the key executing at once.</summary>
    public int ConcurrentRuns { get; set; } = 2;

    /// <summary>Web searches per minute: <c>/v1/tools/search</c> calls and searches from the key's sandboxes.</summary>
    public int SearchesPerMinute { get; set; } = 30;
}
