namespace SandboxVM.Core.Pools;

/// <summary>
/// What a pool's target follows: the arrival rate of requests for its template over a recent window and
/// the measured time of one start (restore and priming). Times come from the pool's clock.
/// </summary>
internal sealed class PoolDemand(TimeProvider time, TimeSpan window)
{
    // At most this many arrivals are remembered: the rate saturates there, far above any pool's max.
    private const int MaxArrivals = 4096;
    // Weight of the newest start time in the running average.
    private const double StartWeight = 0.3;

    private readonly Queue<long> _arrivals = new();
    private double? _startSeconds;

    /// <summary>One request for a sandbox of the template (taken from the pool or not).</summary>
    public void Arrived()
    {
        lock (_arrivals)
        {
            _arrivals.Enqueue(time.GetTimestamp());
            if (_arrivals.Count > MaxArrivals)
            {
                _arrivals.Dequeue();
            }
        }
    }

    /// <summary>One start took <paramref name="elapsed"/>.</summary>
    public void Started(TimeSpan elapsed)
    {
        lock (_arrivals)
        {
            double s = elapsed.TotalSeconds;
            _startSeconds = _startSeconds is { } avg ? avg + StartWeight * (s - avg) : s;
        }
    }

    /// <summary>Requests per second over the window.</summary>
    public double ArrivalRate
    {
        get
        {
            lock (_arrivals)
            {
                while (_arrivals.Count > 0 && time.GetElapsedTime(_arrivals.Peek()) > window)
                {
                    _arrivals.Dequeue();
                }
                return _arrivals.Count / window.TotalSeconds;
            }
        }
    }

    /// <summary>The running average of start times; null before the first start.</summary>
    public TimeSpan? StartTime
    {
        get
        {
            lock (_arrivals)
            {
                return _startSeconds is { } s ? TimeSpan.FromSeconds(s) : null;
            }
        }
    }

    public int Target(int min, int max) => PoolTarget.Compute(min, max, ArrivalRate, StartTime ?? TimeSpan.Zero);
}

/// <summary>The size a pool aims at.</summary>
public static class PoolTarget
{
    /// <summary>
    /// Enough ready sandboxes for the requests that arrive while one start runs, plus headroom, within
    /// [<paramref name="min"/>, <paramref name="max"/>]: with <c>m</c> = rate × start time arrivals expected
    /// during one start, <c>ceil(m + 2√m)</c>: arrivals are bursty (near Poisson), and two standard
    /// deviations above the mean covers about 97% of restore windows. No demand (or no start measured yet): <paramref name="min"/>.
    /// </summary>
    public static int Compute(int min, int max, double arrivalsPerSecond, TimeSpan startTime)
    {
        double m = Math.Max(0, arrivalsPerSecond) * Math.Max(0, startTime.TotalSeconds);
        double wanted = Math.Ceiling(m + 2 * Math.Sqrt(m));
        return (int)Math.Clamp(wanted, min, Math.Max(min, max));
    }
}
