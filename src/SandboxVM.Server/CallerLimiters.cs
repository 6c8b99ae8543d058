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
        o.AddPolicy(Policy, context => context.Features.Get<Caller>() is { } caller ? Partition(caller) : RateLimitPartition.GetNoLimiter(""));
        o.OnRejected = RejectAsync;
    });

    /// <summary>Marks an endpoint as a run: it counts against its caller's run limits.</summary>
    public static TBuilder CountsAsRun<TBuilder>(this TBuilder endpoint) where TBuilder : IEndpointConventionBuilder =>
        endpoint.RequireRateLimiting(Policy);

    private static RateLimitPartition<string> Partition(Caller caller)
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
                limiters.Add(new TokenBucketRateLimiter(PerMinute(perMinute)));
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

    public SearchBudgets(SandboxVmOptions options, IServiceProvider services)
    {
        _services = services;
        _perSandbox = options.SearchesPerMinutePerSandbox;
        ArgumentOutOfRangeException.ThrowIfLessThan(_perSandbox, 1, nameof(options.SearchesPerMinutePerSandbox));
        _sandboxes = PartitionedRateLimiter.Create<string, string>(vm =>
            RateLimitPartition.GetTokenBucketLimiter(vm, _ => RunLimits.PerMinute(_perSandbox)));
        _keys = PartitionedRateLimiter.Create<Caller, string>(caller => caller.Limits.SearchesPerMinute is int n
            ? RateLimitPartition.GetTokenBucketLimiter($"{caller.Name}\n{n}", _ => RunLimits.PerMinute(n))
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
