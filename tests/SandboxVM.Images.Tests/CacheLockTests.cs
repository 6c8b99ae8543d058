namespace SandboxVM.Images.Tests;

[Trait("tier", "unit")]
public sealed class CacheLockTests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("sbvm-lock-").FullName;

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    [Fact]
    public async Task TryAcquire_WhileAnotherOpenFileHoldsTheFlock_Fails()
    {
        var path = Path.Combine(_dir, "k.lock");
        // Another process holding the lock looks the same: an exclusive flock on another open file.
        var other = new FileStream(path, FileMode.OpenOrCreate, FileAccess.ReadWrite, FileShare.None);

        Assert.Null(CacheLock.TryAcquire(path));

        await other.DisposeAsync();
        var held = CacheLock.TryAcquire(path);
        Assert.NotNull(held);
        Assert.Null(CacheLock.TryAcquire(path));
        await held.DisposeAsync();
    }

    [Fact]
    public async Task AcquireAsync_WaitsUntilTheHolderReleases()
    {
        var path = Path.Combine(_dir, "k.lock");
        var first = await CacheLock.AcquireAsync(path, null, TestContext.Current.CancellationToken);
        var waited = new TaskCompletionSource();

        var second = CacheLock.AcquireAsync(path, () => waited.TrySetResult(), TestContext.Current.CancellationToken);
        await waited.Task.WaitAsync(TimeSpan.FromSeconds(10), TestContext.Current.CancellationToken);
        Assert.False(second.IsCompleted);

        await first.DisposeAsync();
        await using var acquired = await second.WaitAsync(TimeSpan.FromSeconds(10), TestContext.Current.CancellationToken);
    }

    [Fact]
    public async Task AcquireAsync_WhenCancelled_GivesUpAndLeavesTheLockUsable()
    {
        var path = Path.Combine(_dir, "k.lock");
        var other = new FileStream(path, FileMode.OpenOrCreate, FileAccess.ReadWrite, FileShare.None);
        using var cts = CancellationTokenSource.CreateLinkedTokenSource(TestContext.Current.CancellationToken);
        cts.CancelAfter(TimeSpan.FromMilliseconds(300));

        await Assert.ThrowsAnyAsync<OperationCanceledException>(() => CacheLock.AcquireAsync(path, null, cts.Token));

        await other.DisposeAsync();
        await using var held = await CacheLock.AcquireAsync(path, null, TestContext.Current.CancellationToken);
    }
}
