using System.Threading.RateLimiting;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.RateLimiting;
using Microsoft.Extensions.DependencyInjection;
using SandboxVM.Core;
using SandboxVM.Core.Egress;
using SandboxVM.Core.Sessions;

namespace SandboxVM.Server;

/// <summary>
/// Per-key limits on runs (one-shot, sandbox and tools calls): runs started per minute and runs
/// executing at once, through ASP.NET Core's rate limiter partitioned by caller. Past either a 429
/// problem with Retry-After; the server-wide run slots and queue still apply after these.
/// </summary>
internal static class RunLimits
{
    public const string Policy = "runs";

    public static void AddServices(IServiceCollection services) => services.AddRateLimiter(o =>
    {
        // Every /v1 request has its caller; an E2B call without a valid sandbox token has none and is refused by its handler.
        o.AddPolicy(Policy, context => context.Features.Get<Caller>() is { } caller
            ? Partition(caller, context.RequestServices.GetService<TimeProvider>() ?? TimeProvider.System)
            : RateLimitPartition.GetNoLimiter(""));
        o.OnRejected = RejectAsync;
    });

    /// <summary>Marks an endpoint as a run: it counts against its caller's run limits.</summary>
    public static TBuilder CountsAsRun<TBuilder>(this TBuilder endpoint) where TBuilder : IEndpointConventionBuilder =>
        endpoint.RequireRateLimiting(Policy);

    private static RateLimitPartition<string> Partition(Caller caller, TimeProvider time)
    {
        var limits = caller.Limits;
        if (limits.RunsPerMinute is null && limits.ConcurrentRuns is null)
        {
            return RateLimitPartition.GetNoLimiter("");
        }
        // Limits are part of the partition: a key whose limits change in the keys file gets fresh limiters.
        string key = $"{caller.Name}\n{limits.RunsPerMinute}\n{limits.ConcurrentRuns}";
        return RateLimitPartition.Get(key, _ =>
        {
            var limiters = new List<RateLimiter>();
            if (limits.RunsPerMinute is int perMinute)
            {
                limiters.Add(new ClockedTokenBucket(PerMinute(perMinute), time));
            }
            if (limits.ConcurrentRuns is int concurrent)
            {
                limiters.Add(new ConcurrencyLimiter(new ConcurrencyLimiterOptions { PermitLimit = concurrent, QueueLimit = 0 }));
            }
            return limiters.Count == 1 ? limiters[0] : RateLimiter.CreateChained([.. limiters]);
        });
    }

    /// <summary>
    /// A bucket of <paramref name="perMinute"/> tokens refilled evenly over a minute (so a burst of that
    /// size is allowed); refused requests do not wait.
    /// </summary>
    public static TokenBucketRateLimiterOptions PerMinute(int perMinute)
    {
        var period = TimeSpan.FromMinutes(1) / perMinute;
        int tokens = 1;
        if (period < TimeSpan.FromSeconds(1))
        {
            // Refills come from a timer; below a second per token, refill a second's worth at once.
            period = TimeSpan.FromSeconds(1);
            tokens = (int)Math.Ceiling(perMinute / 60.0);
        }
        return new TokenBucketRateLimiterOptions
        {
            TokenLimit = perMinute,
            TokensPerPeriod = tokens,
            ReplenishmentPeriod = period,
            QueueLimit = 0,
            AutoReplenishment = true,
        };
    }

    private static async ValueTask RejectAsync(OnRejectedContext rejected, CancellationToken cancellationToken)
    {
        var context = rejected.HttpContext;
        var caller = context.GetCaller();
        // Only the token bucket says when it has room again; a refusal without it is the concurrency limit.
        bool perMinute = rejected.Lease.TryGetMetadata(MetadataName.RetryAfter, out TimeSpan retry);
        string why = perMinute
            ? $"this API key may start {caller.Limits.RunsPerMinute} runs a minute; try again later"
            : $"this API key may have {caller.Limits.ConcurrentRuns} runs executing at once; wait for one to finish";
        var after = perMinute ? Max(retry, TimeSpan.FromSeconds(1)) : TimeSpan.FromSeconds(1);
        if (context.Request.Path.StartsWithSegments(E2b.E2bEndpoints.Prefix))
        {
            // E2B's error body; the code interpreter SDK reports a 429 as SandboxError "429 Too Many Requests".
            context.Response.Headers.RetryAfter = ((int)Math.Ceiling(after.TotalSeconds)).ToString(System.Globalization.CultureInfo.InvariantCulture);
            await E2b.E2bEndpoints.Error(429, why).ExecuteAsync(context);
            return;
        }
        await Problems.Write(context, 429, perMinute ? HttpProblemCodes.RateLimited : HttpProblemCodes.TooManyRuns, null, why, after);
    }

    private static TimeSpan Max(TimeSpan a, TimeSpan b) => a > b ? a : b;
}

/// <summary>
/// Web searches: per sandbox (every search a guest asks the host for) and per key (its tools searches and
/// the searches of its sandboxes). A search costs a call to a paid or rate-limited service on the host.
/// </summary>
internal sealed class SearchBudgets : ISearchBudget, IDisposable
{
    private readonly PartitionedRateLimiter<string> _sandboxes;
    private readonly PartitionedRateLimiter<Caller> _keys;
    private readonly IServiceProvider _services;
    private readonly int _perSandbox;

    public SearchBudgets(SandboxVmOptions options, IServiceProvider services, TimeProvider? time = null)
    {
        time ??= TimeProvider.System;
        _services = services;
        _perSandbox = options.SearchesPerMinutePerSandbox;
        ArgumentOutOfRangeException.ThrowIfLessThan(_perSandbox, 1, nameof(options.SearchesPerMinutePerSandbox));
        _sandboxes = PartitionedRateLimiter.Create<string, string>(vm =>
            RateLimitPartition.Get(vm, _ => new ClockedTokenBucket(RunLimits.PerMinute(_perSandbox), time)));
        _keys = PartitionedRateLimiter.Create<Caller, string>(caller => caller.Limits.SearchesPerMinute is int n
            ? RateLimitPartition.Get($"{caller.Name}\n{n}", _ => new ClockedTokenBucket(RunLimits.PerMinute(n), time))
            : RateLimitPartition.GetNoLimiter(""));
    }

    /// <summary>A search from the sandbox on <paramref name="vmId"/>: its own budget, then its owner's.</summary>
    public string? TryTake(string vmId)
    {
        using (var lease = _sandboxes.AttemptAcquire(vmId))
        {
            if (!lease.IsAcquired)
            {
                return $"more than {_perSandbox} searches a minute from this sandbox";
            }
        }
        // Sandboxes (sessions) belong to a key; pooled and singleton VMs only have their own budget.
        string? owner = _services.GetService<SessionManager>()?.FindByVm(vmId)?.Owner;
        return owner is not null && _services.GetRequiredService<CallerStore>().Find(owner) is { } caller ? TryTake(caller)?.Why : null;
    }

    /// <summary>A search on behalf of <paramref name="caller"/>; null when allowed, else why not and when to try again.</summary>
    public (string Why, TimeSpan RetryAfter)? TryTake(Caller caller)
    {
        using var lease = _keys.AttemptAcquire(caller);
        if (lease.IsAcquired)
        {
            return null;
        }
        var retry = lease.TryGetMetadata(MetadataName.RetryAfter, out TimeSpan r) && r > TimeSpan.FromSeconds(1) ? r : TimeSpan.FromSeconds(1);
        return ($"more than {caller.Limits.SearchesPerMinute} searches a minute for API key '{caller.Name}'", retry);
    }

    public void Dispose()
    {
        _sandboxes.Dispose();
        _keys.Dispose();
    }
}

/// <summary>
/// A token bucket refilled on a <see cref="TimeProvider"/>'s clock. System.Threading.RateLimiting's buckets
/// read Stopwatch whatever they are given (a manual TryReplenish too), so a limit's refill could not be
/// tested on a fake clock: a test slower than a refill period on a loaded host saw one. Refused acquires
/// never wait (every limit here has QueueLimit 0); a refusal carries RetryAfter, the time to enough tokens.
/// </summary>
internal sealed class ClockedTokenBucket : ReplenishingRateLimiter
{
    private static readonly string[] RetryAfterName = [MetadataName.RetryAfter.Name];
    private static readonly RateLimitLease Acquired = new Lease(true, null);

    private readonly TimeProvider _time;
    private readonly int _limit;
    private readonly int _perPeriod;
    private readonly TimeSpan _period;
    private readonly Lock _lock = new();
    private int _tokens;
    private long _lastRefill;
    private long? _idleSince;
    private long _successful;
    private long _failed;

    public ClockedTokenBucket(TokenBucketRateLimiterOptions options, TimeProvider time)
    {
        ArgumentOutOfRangeException.ThrowIfNotEqual(options.QueueLimit, 0, nameof(options.QueueLimit));
        _time = time;
        _limit = options.TokenLimit;
        _perPeriod = options.TokensPerPeriod;
        _period = options.ReplenishmentPeriod;
        _tokens = _limit;
        _lastRefill = time.GetTimestamp();
        _idleSince = _lastRefill;
    }

    // Not a timer of its own: every acquire refills first, and partitioned limiters call TryReplenish.
    public override bool IsAutoReplenishing => false;
    public override TimeSpan ReplenishmentPeriod => _period;

    public override TimeSpan? IdleDuration
    {
        get
        {
            lock (_lock)
            {
                Refill();
                return _idleSince is long since ? _time.GetElapsedTime(since) : null;
            }
        }
    }

    public override bool TryReplenish()
    {
        lock (_lock)
        {
            Refill();
        }
        return true;
    }

    public override RateLimiterStatistics? GetStatistics()
    {
        lock (_lock)
        {
            Refill();
            return new RateLimiterStatistics { CurrentAvailablePermits = _tokens, TotalSuccessfulLeases = _successful, TotalFailedLeases = _failed };
        }
    }

    protected override RateLimitLease AttemptAcquireCore(int permitCount)
    {
        ArgumentOutOfRangeException.ThrowIfGreaterThan(permitCount, _limit);
        lock (_lock)
        {
            Refill();
            if (_tokens >= Math.Max(permitCount, 1))
            {
                if (permitCount > 0)
                {
                    _tokens -= permitCount;
                    _idleSince = null;
                    _successful++;
                }
                return Acquired;
            }
            _failed++;
            // Whole periods to enough tokens, the first already partly gone.
            int periods = (Math.Max(permitCount, 1) - _tokens + _perPeriod - 1) / _perPeriod;
            return new Lease(false, _period * periods - _time.GetElapsedTime(_lastRefill));
        }
    }

    protected override ValueTask<RateLimitLease> AcquireAsyncCore(int permitCount, CancellationToken cancellationToken) =>
        ValueTask.FromResult(AttemptAcquireCore(permitCount));

    /// <summary>Adds a period's tokens for every whole period passed on the clock since the last refill.</summary>
    private void Refill()
    {
        long periods = (long)(_time.GetElapsedTime(_lastRefill) / _period);
        if (periods <= 0)
        {
            return;
        }
        _lastRefill += (long)(periods * _period.TotalSeconds * _time.TimestampFrequency);
        if (_tokens < _limit)
        {
            _tokens = (int)Math.Min(_limit, _tokens + periods * _perPeriod);
            if (_tokens == _limit)
            {
                _idleSince = _time.GetTimestamp();
            }
        }
    }

    private sealed class Lease(bool acquired, TimeSpan? retryAfter) : RateLimitLease
    {
        public override bool IsAcquired => acquired;

        public override IEnumerable<string> MetadataNames => retryAfter is null ? [] : RetryAfterName;

        public override bool TryGetMetadata(string metadataName, out object? metadata)
        {
            metadata = retryAfter;
            return retryAfter is not null && metadataName == MetadataName.RetryAfter.Name;
        }
    }
}
