namespace SandboxVM.Cli;

/// <summary>Reports on the caller's thread, so progress lines print in order (Progress&lt;T&gt; posts to the pool).</summary>
internal sealed class SyncProgress<T>(Action<T> report) : IProgress<T>
{
    public void Report(T value) => report(value);
}
