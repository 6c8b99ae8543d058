using System.Collections.Concurrent;
using System.Diagnostics;

namespace SandboxVM.Host;

/// <summary>
/// Starts processes from one thread that lives as long as the server. For PR_SET_PDEATHSIG (bubblewrap's
/// --die-with-parent) a child's parent is the thread that forked it, not the process: a bubblewrap
/// started from a thread-pool thread is SIGKILLed when the pool retires that thread. Seen: a template
/// build step (go install std) killed with exit code 137 minutes in, under a load that came and went.
/// One per server process: every host process starts here (<see cref="HostProcess"/>).
/// </summary>
public static class SpawnThread
{
    private static readonly BlockingCollection<(Process Process, TaskCompletionSource Started)> _queue = [];

    static SpawnThread() => new Thread(Run) { IsBackground = true, Name = "sandboxvm-spawn" }.Start();

    /// <summary><see cref="Process.Start()"/> on the spawning thread; its exceptions are thrown here.</summary>
    public static void Start(Process process)
    {
        var started = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        _queue.Add((process, started));
        started.Task.GetAwaiter().GetResult();
    }

    private static void Run()
    {
        foreach (var (process, started) in _queue.GetConsumingEnumerable())
        {
            try
            {
                process.Start();
                started.SetResult();
            }
            catch (Exception e)
            {
                started.SetException(e);
            }
        }
    }
}
