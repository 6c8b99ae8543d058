
namespace SandboxVM.Runtime.Gvisor;

/// <summary>The runsc command lines of one state directory (pure argument lists; unit-tested) and short runsc commands.</summary>
internal sealed class Runsc(string path, string stateDir, string platform, bool rootless)
{
    public string Path { get; } = path;

    public string StateDir { get; } = stateDir;

    /// <summary>
    /// Flags of every command: this server's state directory; the platform; no network device but a
    /// loopback (<c>none</c>); no overlay (the root is read-only and the writable paths are tmpfs, so
    /// nothing is ever written into the shared image cache); cgroups left to the host's own group around
    /// the whole sandbox (the caller joins it before runsc starts).
    /// </summary>
    public IReadOnlyList<string> GlobalFlags()
    {
        var flags = new List<string>
        {
            "--root", StateDir,
            "--platform", platform,
            "--network=none",
            "--overlay2=none",
            "--ignore-cgroups",
        };
        if (rootless)
        {
            flags.Add("--rootless");
        }
        return flags;
    }

    /// <summary><c>runsc run</c>: the container's init gets this process's stdin, stdout and stderr.</summary>
    public IReadOnlyList<string> RunArguments(string bundleDir, string id) => [.. GlobalFlags(), "run", "--bundle", bundleDir, id];

    /// <summary><c>runsc restore</c>: the restored init's stdio, saved as the host's, are rebound to this process's.</summary>
    public IReadOnlyList<string> RestoreArguments(string bundleDir, string imageDir, string id) =>
        [.. GlobalFlags(), "restore", "--image-path", imageDir, "--bundle", bundleDir, id];

    /// <summary>
    /// <c>runsc checkpoint</c>: saves the sandbox into <paramref name="imageDir"/> and ends it. Uncompressed,
    /// without committed zero pages: python-data-analysis's warm interpreters (numpy, pandas, matplotlib)
    /// saved in 1.0-1.2 s to 90 MB and restored in 1.8-2.3 s, against 5.6 s to 25 MB and 4.8-5.3 s to restore
    /// with runsc's default flate compression (this host, load average 17-20; bench/results/).
    /// </summary>
    public IReadOnlyList<string> CheckpointArguments(string imageDir, string id, bool leaveRunning = false) => leaveRunning
        ? [.. GlobalFlags(), "checkpoint", "--image-path", imageDir, "--compression=none", "--exclude-committed-zero-pages", "--leave-running", id]
        : [.. GlobalFlags(), "checkpoint", "--image-path", imageDir, "--compression=none", "--exclude-committed-zero-pages", id];

    /// <summary><c>runsc delete --force</c>: kills the sandbox if it still runs and removes its state.</summary>
    public IReadOnlyList<string> DeleteArguments(string id) => [.. GlobalFlags(), "delete", "--force", id];

    /// <summary><c>runsc pause</c> / <c>runsc resume</c>: the sentry stops (or restarts) every task of the sandbox.</summary>
    public IReadOnlyList<string> PauseArguments(string id, bool pause) => [.. GlobalFlags(), pause ? "pause" : "resume", id];

    public IReadOnlyList<string> ListArguments() => [.. GlobalFlags(), "list", "--quiet"];

    /// <summary>Runs a short runsc command with a deadline; returns its exit code and output (stdout then stderr, bounded).</summary>
    public Task<(int ExitCode, string Output)> RunAsync(IReadOnlyList<string> arguments, TimeSpan timeout, CancellationToken cancellationToken) =>
        RunCommandAsync(Path, arguments, timeout, cancellationToken);

    /// <summary>Runs <paramref name="program"/> with a deadline (killed at it); returns its exit code and output, bounded.</summary>
    internal static async Task<(int ExitCode, string Output)> RunCommandAsync(string program, IReadOnlyList<string> arguments, TimeSpan timeout,
        CancellationToken cancellationToken)
    {
        var result = await HostProcess.RunAsync(new HostCommand(program, arguments)
        {
            Environment = _environment,
            Timeout = timeout,
            MaxStdoutChars = 8 * 1024,
            // A failed checkpoint prints the sentry's error and then its goroutine's stack: keep both ends.
            HeadLines = 5,
        }, cancellationToken);
        return (result.ExitCode, result.Output);
    }

    private static readonly Dictionary<string, string> _environment = new(StringComparer.Ordinal) { ["PATH"] = "/usr/sbin:/usr/bin:/sbin:/bin" };
}
