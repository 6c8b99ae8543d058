namespace SandboxVM.Core.Pools;

/// <summary>
/// What a pool's target follows: the arrival rate of requests for its template over a recent window, the
/// measured time of one start (restore and priming), and the bursts of the last <c>burstMemory</c>: how far
/// arrivals ran ahead of what the pool's refills could restore meanwhile. Times come from the pool's clock.
/// </summary>
/// <remarks>
/// Time during which a caller waited for a sandbox started for it (a miss) is not counted as time the refills
/// had: a client that runs one request after another is held up by its miss, so its requests look further apart
/// than it sends them when served from the pool (print(1) back to back: 0.3 s apart from the pool, 1-2 s across
/// a miss), and the refills meanwhile share the host's cores with that start. Counted, a series the refills could
/// not keep up with would look nearly covered, and the next series would miss as often.
/// </remarks>
internal sealed class PoolDemand(TimeProvider time, TimeSpan window, TimeSpan burstMemory)
{
    // At most this many arrivals are remembered: the rate saturates there, far above any pool's max.
    private const int MaxArrivals = 4096;
    // Weight of the newest start time in the running average.
    private const double StartWeight = 0.3;

    private readonly Queue<long> _arrivals = new();
    // Stretches (start, end timestamps) during which a caller waited for an on-demand start, oldest end first.
    private readonly Queue<(long Start, long End)> _waits = new();
    private double? _startSeconds;

    public PoolDemand(TimeProvider time, TimeSpan window) : this(time, window, window)
    {
    }

    // Arrivals are kept for the longer of the rate's window and the burst memory.
    private TimeSpan Kept => window > burstMemory ? window : burstMemory;

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

    /// <summary>A caller that found the pool empty waited <paramref name="elapsed"/>, until now, for the start of its own sandbox.</summary>
    public void StartedOnDemand(TimeSpan elapsed)
    {
        Started(elapsed);
        lock (_arrivals)
        {
            long now = time.GetTimestamp();
            _waits.Enqueue((now - (long)(elapsed.TotalSeconds * time.TimestampFrequency), now));
            if (_waits.Count > MaxArrivals)
            {
                _waits.Dequeue();
            }
        }
    }

    /// <summary>Requests per second over the window.</summary>
    public double ArrivalRate
    {
        get
        {
            lock (_arrivals)
            {
                Forget();
                return _arrivals.Count(a => time.GetElapsedTime(a) <= window) / window.TotalSeconds;
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

    private void Forget()
    {
        while (_arrivals.Count > 0 && time.GetElapsedTime(_arrivals.Peek()) > Kept)
        {
            _arrivals.Dequeue();
        }
        while (_waits.Count > 0 && time.GetElapsedTime(_waits.Peek().End) > Kept)
        {
            _waits.Dequeue();
        }
    }

    /// <summary>
    /// The largest burst of the burst memory: over any stretch of time, the arrivals in it less the starts
    /// <paramref name="concurrency"/> refills of the measured start time could complete in it (see
    /// <see cref="PoolTarget.Shortfall"/>). 0 before the first start is measured.
    /// </summary>
    public double Shortfall(int concurrency)
    {
        lock (_arrivals)
        {
            Forget();
            if (_startSeconds is not { } start || start <= 0 || burstMemory <= TimeSpan.Zero)
            {
                return 0;
            }
            long now = time.GetTimestamp();
            double f = time.TimestampFrequency;
            // Seconds before now, on a clock that stands still while a caller waits for an on-demand start.
            var arrivals = _arrivals.Where(a => time.GetElapsedTime(a, now) <= burstMemory).Select(a => (a - now) / f);
            var waits = _waits.Select(w => ((w.Start - now) / f, (w.End - now) / f));
            return PoolTarget.Shortfall(PoolTarget.WithoutWaits(arrivals, waits), Math.Max(1, concurrency) / start);
        }
    }

    /// <summary>The target for a pool between <paramref name="min"/> and <paramref name="max"/> that refills <paramref name="concurrency"/> at once.</summary>
    public int Target(int min, int max, int concurrency) =>
        PoolTarget.Compute(min, max, ArrivalRate, StartTime ?? TimeSpan.Zero, Shortfall(concurrency));
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
    /// <remarks>
    /// <paramref name="shortfall"/> (<see cref="Shortfall"/>): the largest recent burst the refills could not
    /// keep up with. The target covers it too, so the next burst of that size (a batch job's fan-out, a
    /// client's back-to-back loop) finds its sandboxes ready: the rate over a minute-long window dilutes a
    /// burst of 10 in one second to 0.17/s, one ready clone, while the burst needed ten at once.
    /// </remarks>
    public static int Compute(int min, int max, double arrivalsPerSecond, TimeSpan startTime, double shortfall = 0)
    {
        double m = Math.Max(0, arrivalsPerSecond) * Math.Max(0, startTime.TotalSeconds);
        double wanted = Math.Max(Math.Ceiling(m + 2 * Math.Sqrt(m)), Math.Ceiling(shortfall - 1e-9));
        return (int)Math.Clamp(wanted, min, Math.Max(min, max));
    }

    /// <summary>
    /// Over every stretch of time from one arrival to a later one (both counted), the arrivals in it less the
    /// starts the refills complete in it at <paramref name="startsPerSecond"/> (refill concurrency / start
    /// time): how many ready sandboxes the pool would have needed at the stretch's start so that no arrival in
    /// it waited for a start. Its largest value; 0 without arrivals. A burst of n at once: n. n arrivals back
    /// to back over s seconds: n - s × startsPerSecond (when that is larger than any part of them).
    /// <paramref name="arrivalTimes"/>: seconds on any one clock, in order.
    /// </summary>
    public static double Shortfall(IEnumerable<double> arrivalTimes, double startsPerSecond)
    {
        // For arrivals i <= j: (j - i + 1) - (t_j - t_i) * r = (j + 1 - r t_j) + (r t_i - i); the best i for each j
        // is the running maximum of the second term, so one pass.
        double best = 0, bestStart = double.NegativeInfinity;
        int j = 0;
        foreach (double t in arrivalTimes)
        {
            bestStart = Math.Max(bestStart, startsPerSecond * t - j);
            best = Math.Max(best, j + 1 - startsPerSecond * t + bestStart);
            j++;
        }
        return best;
    }

    /// <summary>
    /// <paramref name="times"/> (in order) on a clock that stands still during <paramref name="waits"/> (start, end;
    /// overlapping ones count once): each time less the waiting done before it.
    /// </summary>
    public static IEnumerable<double> WithoutWaits(IEnumerable<double> times, IEnumerable<(double Start, double End)> waits)
    {
        // The union of the waits, as disjoint stretches in order.
        var merged = new List<(double Start, double End)>();
        foreach (var w in waits.Where(w => w.End > w.Start).OrderBy(w => w.Start))
        {
            if (merged.Count > 0 && w.Start <= merged[^1].End)
            {
                merged[^1] = (merged[^1].Start, Math.Max(merged[^1].End, w.End));
            }
            else
            {
                merged.Add(w);
            }
        }
        int k = 0;
        double waitedBefore = 0;
        foreach (double t in times)
        {
            while (k < merged.Count && merged[k].End <= t)
            {
                waitedBefore += merged[k].End - merged[k].Start;
                k++;
            }
            // Inside a wait: only its part before t.
            double partial = k < merged.Count && merged[k].Start < t ? t - merged[k].Start : 0;
            yield return t - waitedBefore - partial;
        }
    }
}
