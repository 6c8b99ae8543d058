namespace SandboxVM.Testing;

/// <summary>
/// Watches this process's managed heap while a test runs: the baseline is taken after a full
/// collection, then a background thread samples <see cref="GC.GetTotalMemory(bool)"/> (live objects plus
/// garbage not yet collected) every millisecond and keeps the highest value. Tests that use it must not
/// run in parallel with others (the heap is the process's).
/// </summary>
public sealed class HeapWatch : IDisposable
{
    private readonly long _baseline;
    private readonly Thread _sampler;
    private long _peak;
    private volatile bool _stopped;

    public HeapWatch()
    {
        _baseline = GC.GetTotalMemory(forceFullCollection: true);
        _peak = _baseline;
        _sampler = new Thread(Sample) { IsBackground = true, Name = "heap-watch" };
        _sampler.Start();
    }

    /// <summary>Highest heap size seen, over the baseline.</summary>
    public long PeakGrowth => Interlocked.Read(ref _peak) - _baseline;

    /// <summary>Live objects now (after a full collection), over the baseline.</summary>
    public long RetainedGrowth() => GC.GetTotalMemory(forceFullCollection: true) - _baseline;

    public static string Mib(long bytes) => $"{bytes / (1024.0 * 1024.0):0.0} MiB";

    private void Sample()
    {
        while (!_stopped)
        {
            long now = GC.GetTotalMemory(forceFullCollection: false);
            if (now > Interlocked.Read(ref _peak))
            {
                Interlocked.Exchange(ref _peak, now);
            }
            Thread.Sleep(1);
        }
    }

    public void Dispose()
    {
        _stopped = true;
        _sampler.Join();
    }
}
