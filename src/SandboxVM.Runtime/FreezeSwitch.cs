namespace SandboxVM.Runtime;

/// <summary>
/// The frozen/running state of one sandbox and the one lock its transitions take, so that
/// <see cref="IVm.FreezeAsync"/> and <see cref="IVm.ThawAsync"/> are idempotent and never interleave.
/// The runtime supplies the two actions.
/// </summary>
internal sealed class FreezeSwitch(Func<CancellationToken, Task> freeze, Func<CancellationToken, Task> thaw, TimeProvider? time = null)
{
    /// <summary>A freeze or thaw that takes longer has failed (QMP answers in milliseconds, runsc in 50-200 ms).</summary>
    private static readonly TimeSpan Timeout = TimeSpan.FromSeconds(10);

    private readonly SemaphoreSlim _gate = new(1, 1);
    private volatile bool _frozen;

    public bool IsFrozen => _frozen;

    public async Task FreezeAsync(CancellationToken cancellationToken)
    {
        await _gate.WaitAsync(cancellationToken);
        try
        {
            if (_frozen)
            {
                return;
            }
            try
            {
                using var limit = Limit(cancellationToken);
                await freeze(limit.Token);
            }
            catch
            {
                // It may have half happened (a pause that answered late): make sure the sandbox runs.
                try
                {
                    using var limit = Limit(CancellationToken.None);
                    await thaw(limit.Token);
                }
                catch (Exception e) when (e is not OutOfMemoryException)
                {
                }
                throw;
            }
            _frozen = true;
        }
        finally
        {
            _gate.Release();
        }
    }

    public async Task ThawAsync(CancellationToken cancellationToken)
    {
        await _gate.WaitAsync(cancellationToken);
        try
        {
            if (!_frozen)
            {
                return;
            }
            using var limit = Limit(cancellationToken);
            await thaw(limit.Token);
            _frozen = false;
        }
        finally
        {
            _gate.Release();
        }
    }

    private Limited Limit(CancellationToken cancellationToken) => new(cancellationToken, time ?? TimeProvider.System);

    /// <summary>The caller's token, cut at <see cref="Timeout"/> on the switch's clock.</summary>
    private sealed class Limited : IDisposable
    {
        private readonly CancellationTokenSource _timer;
        private readonly CancellationTokenSource _linked;

        public Limited(CancellationToken cancellationToken, TimeProvider time)
        {
            _timer = new CancellationTokenSource(Timeout, time);
            _linked = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken, _timer.Token);
        }

        public CancellationToken Token => _linked.Token;

        public void Dispose()
        {
            _linked.Dispose();
            _timer.Dispose();
        }
    }
}
