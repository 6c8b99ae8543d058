namespace SandboxVM.Runtime;

/// <summary>What <see cref="ISandboxSaver.SaveAsync"/> wrote: its directory, its size on disk and how long it took.</summary>
public sealed record SavedSandbox(string Directory, long Bytes, TimeSpan Elapsed);

/// <summary>
/// A runtime that can save a whole running sandbox (memory, device state, its tmpfs /tmp and home, its
/// processes) into a directory and start it again from there, as often as wanted: pause/resume and
/// fork of sandboxes. Runtimes without it (the process runtime) cannot pause.
/// </summary>
public interface ISandboxSaver
{
    /// <summary>
    /// Saves <paramref name="vm"/> (started from <paramref name="spec"/>) into <paramref name="directory"/>,
    /// which the caller has created empty. With <paramref name="keepRunning"/> the sandbox goes on afterwards
    /// (fork); without, it has ended when this returns (pause) and the caller disposes it. On failure the
    /// sandbox is left running when it can be (a failed pause keeps the sandbox) and the directory may hold
    /// a partial image, which the caller removes.
    /// </summary>
    Task<SavedSandbox> SaveAsync(IVm vm, VmSpec spec, string directory, bool keepRunning, CancellationToken cancellationToken);

    /// <summary>
    /// Starts a new sandbox from what <see cref="SaveAsync"/> wrote into <paramref name="directory"/> (the
    /// same <paramref name="spec"/>) and gives it a fresh identity, clock and entropy (reinit). The
    /// directory is not changed: one image restores any number of times.
    /// </summary>
    Task<IVm> RestoreSavedAsync(VmSpec spec, string directory, CancellationToken cancellationToken);

    /// <summary>
    /// Before several <see cref="RestoreSavedAsync"/> calls from one image (a fork): lets the runtime turn it into
    /// something its restores share copy-on-write. The restores then started use it; dispose the result after them.
    /// </summary>
    Task<IAsyncDisposable> PrepareRestoresAsync(VmSpec spec, string directory, CancellationToken cancellationToken) =>
        Task.FromResult<IAsyncDisposable>(NoPreparation.Instance);
}

/// <summary>What <see cref="ISandboxSaver.PrepareRestoresAsync"/> returns when there is nothing to prepare.</summary>
public sealed class NoPreparation : IAsyncDisposable
{
    public static NoPreparation Instance { get; } = new();

    public ValueTask DisposeAsync() => ValueTask.CompletedTask;
}
