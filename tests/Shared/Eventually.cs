using System.Diagnostics;
using Microsoft.Extensions.Time.Testing;

namespace SandboxVM.Testing;

/// <summary>
/// Waits for what the code under test does on tasks of its own: a condition polled against a real-time
/// deadline (the poll interval orders nothing), and, for code on a fake clock, the clock stepped until
/// the condition holds.
/// </summary>
internal static class Eventually
{
    /// <summary>Long enough for a loaded 2-core host; a condition that holds returns at its first poll.</summary>
    public static readonly TimeSpan Patience = TimeSpan.FromSeconds(20);

    private static CancellationToken Ct => TestContext.Current.CancellationToken;

    public static async Task TrueAsync(Func<bool> condition, Func<string> what)
    {
        long start = Stopwatch.GetTimestamp();
        while (!condition())
        {
            Assert.True(Stopwatch.GetElapsedTime(start) < Patience, $"not within {Patience.TotalSeconds} s: {what()}");
            await Task.Delay(5, Ct);
        }
    }

    /// <summary>
    /// Moves <paramref name="time"/> on by <paramref name="step"/> until <paramref name="condition"/> holds:
    /// for waits the code arms on its own task, so the test cannot know the timer is there before it
    /// advances (a step taken too early is followed by another). Use it only where extra steps change
    /// nothing else: no other timeout of the code may be running meanwhile.
    /// </summary>
    public static async Task AdvanceUntilAsync(this FakeTimeProvider time, TimeSpan step, Func<bool> condition, Func<string> what)
    {
        long start = Stopwatch.GetTimestamp();
        while (!condition())
        {
            Assert.True(Stopwatch.GetElapsedTime(start) < Patience, $"not within {Patience.TotalSeconds} s (fake clock at {time.GetUtcNow():O}): {what()}");
            time.Advance(step);
            await Task.Delay(5, Ct);
        }
    }
}
