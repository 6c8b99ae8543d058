using Microsoft.Extensions.Logging;

namespace SandboxVM.Runtime.Tests;

/// <summary>Writes log lines to the current test's output, so a failed E2E run shows what the runtime did.</summary>
internal sealed class TestLogger<T> : ILogger<T>
{
    public IDisposable? BeginScope<TState>(TState state) where TState : notnull => null;

    public bool IsEnabled(LogLevel logLevel) => logLevel >= LogLevel.Debug;

    public void Log<TState>(LogLevel logLevel, EventId eventId, TState state, Exception? exception, Func<TState, Exception?, string> formatter)
    {
        try
        {
            TestContext.Current.TestOutputHelper?.WriteLine($"[{logLevel}] {formatter(state, exception)}");
        }
        catch (InvalidOperationException)
        {
            // No test is running (fixture teardown).
        }
    }
}
