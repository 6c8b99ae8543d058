namespace SandboxVM.Runtime;

/// <summary>
/// The end every runtime's start shares: a launched VM's handshake (a restore's loading, hello, reinit)
/// under a deadline on the runtime's clock. A VM that fails it is disposed, and the failure becomes a
/// <see cref="Process.SandboxStartException"/> naming the step, with the VM's diagnostics (its log tail);
/// the caller's own cancellation stays a cancellation.
/// </summary>
internal static class VmStartup
{
    public static async Task<TVm> CompleteAsync<TVm>(TVm vm, string step, TimeSpan within, TimeProvider time,
        Func<CancellationToken, Task> handshake, Func<string> diagnostics, CancellationToken cancellationToken)
        where TVm : IVm
    {
        try
        {
            using var deadline = new Deadline(within, time, cancellationToken);
            await handshake(deadline.Token);
            return vm;
        }
        catch (Exception e)
        {
            await vm.DisposeAsync();
            if (cancellationToken.IsCancellationRequested)
            {
                throw;
            }
            throw new Process.SandboxStartException($"{step} failed: {e.Message}. {diagnostics()}", e);
        }
    }
}

/// <summary>A token cancelled by the caller's token or after a time on an injected clock; both sources disposed together.</summary>
internal sealed class Deadline : IDisposable
{
    private readonly CancellationTokenSource _timer;
    private readonly CancellationTokenSource _linked;

    public Deadline(TimeSpan after, TimeProvider time, CancellationToken cancellationToken)
    {
        _timer = new CancellationTokenSource(after, time);
        _linked = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken, _timer.Token);
    }

    public CancellationToken Token => _linked.Token;

    public void Dispose()
    {
        _linked.Dispose();
        _timer.Dispose();
    }
}
