using Microsoft.Extensions.Logging;

namespace SandboxVM.Functional.Tests;

/// <summary>
/// A fixture server's warnings and errors, with their exceptions, appended to one file per server under
/// artifacts/test-results/logs/: a failed test's answer says "the server log has the details" (an
/// internal error is not the caller's to read), and scripts/test.sh prints these files when a test failed.
/// </summary>
internal sealed class ServerLogFile(string path) : ILoggerProvider
{
    private readonly Lock _lock = new();

    public string Path { get; } = path;

    public ILogger CreateLogger(string categoryName) => new Logger(this, categoryName);

    public void Dispose()
    {
    }

    private void Append(string line)
    {
        lock (_lock)
        {
            try
            {
                File.AppendAllText(Path, line);
            }
            catch (IOException)
            {
                // A full disk must not fail the server the tests are about.
            }
        }
    }

    private sealed class Logger(ServerLogFile owner, string category) : ILogger
    {
        public IDisposable? BeginScope<TState>(TState state) where TState : notnull => null;

        public bool IsEnabled(LogLevel logLevel) => logLevel >= LogLevel.Warning;

        public void Log<TState>(LogLevel logLevel, EventId eventId, TState state, Exception? exception, Func<TState, Exception?, string> formatter)
        {
            if (IsEnabled(logLevel))
            {
                owner.Append($"{DateTime.UtcNow:HH:mm:ss.fff} {logLevel} {category}: {formatter(state, exception)}{(exception is null ? "" : "\n" + exception)}\n");
            }
        }
    }
}
