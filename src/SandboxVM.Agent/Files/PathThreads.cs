using System.Threading.Channels;
using SandboxVM.Agent.Native;

namespace SandboxVM.Agent.Files;

/// <summary>
/// The threads on which every path syscall the agent makes on the user's behalf runs, each job with the
/// filesystem identity of the user it is done for.
/// </summary>
/// <remarks>
/// Why: the agent is root and user code is not, but the paths it opens, creates, lists and removes for
/// the user are the user's to change at any moment (a symlink, FIFO, device or hard link swapped in
/// between a check and a use). Checks in the agent cannot close that race; the kernel can, if it does
/// every lookup as the user: Linux credentials are per thread, and a thread whose fsuid/fsgid are the
/// user's and that has no supplementary groups gets exactly the user's permissions for every path
/// lookup, open, create, link and remove (the file capabilities CAP_DAC_OVERRIDE, CAP_FOWNER... leave
/// its effective set when fsuid leaves 0, and come back when it returns). Whatever the user swaps in,
/// the agent can then reach only what the user could reach anyway; files it creates are the user's
/// without a chown. fsuid changes nothing about signals or ptrace (those look at the real, effective
/// and saved uids, which stay 0), so user code cannot signal or trace these threads.
/// <para>
/// Only the path syscalls need such a thread (see the guard in <see cref="Libc"/>): reads and writes of
/// a descriptor opened here happen on any thread. A job is synchronous and short (a lookup, an open, one
/// directory level or batch); four threads so a long recursive removal does not hold up other operations.
/// glibc's setgroups() would change every thread (it broadcasts set*id calls), so the threads drop their
/// groups with the raw syscall; setfsuid/setfsgid are per thread in glibc too.
/// </para>
/// <para>
/// Alternatives ruled out: openat2 with RESOLVE_BENEATH/NO_SYMLINKS from a root-opened directory alone
/// (still root for hard links and for what lies beneath, and no answer for removals); forking a helper
/// per operation (slow under emulation, and a fork in a managed process is unsafe).
/// </para>
/// </remarks>
internal static class PathThreads
{
    private const int ThreadCount = 4;

    private static readonly Channel<Action> _jobs = Channel.CreateUnbounded<Action>(new UnboundedChannelOptions { SingleWriter = false });
    private static readonly Lazy<bool> _started = new(Start);

    /// <summary>
    /// Runs <paramref name="work"/> on a path thread as <paramref name="who"/> (<see cref="SandboxUser.Self"/>:
    /// the agent's own identity). Exceptions of the work end the task.
    /// </summary>
    public static Task<T> RunAsync<T>(SandboxUser who, Func<T> work)
    {
        _ = _started.Value;
        var done = new TaskCompletionSource<T>(TaskCreationOptions.RunContinuationsAsynchronously);
        bool queued = _jobs.Writer.TryWrite(() =>
        {
            try
            {
                Libc.SetFilesystemIdentity(who.Uid, who.Gid);
                done.TrySetResult(work());
            }
            catch (Exception e)
            {
                done.TrySetException(e);
            }
        });
        if (!queued)
        {
            done.TrySetException(new InvalidOperationException("the path threads are gone"));
        }
        return done.Task;
    }

    public static Task RunAsync(SandboxUser who, Action work) => RunAsync(who, () =>
    {
        work();
        return true;
    });

    /// <summary><see cref="RunAsync{T}(SandboxUser, Func{T})"/>, waited for (start-up and shutdown paths only).</summary>
    public static T Run<T>(SandboxUser who, Func<T> work) => RunAsync(who, work).GetAwaiter().GetResult();

    private static bool Start()
    {
        bool dropGroups = Libc.IsRoot;
        var ready = new CountdownEvent(ThreadCount);
        Exception? failure = null;
        for (int i = 0; i < ThreadCount; i++)
        {
            var thread = new Thread(() =>
            {
                try
                {
                    Libc.BecomePathThread(dropGroups);
                }
                catch (InvalidOperationException e)
                {
                    failure = e;
                    ready.Signal();
                    return;
                }
                ready.Signal();
                Serve();
            })
            { IsBackground = true, Name = $"path-{i}" };
            thread.Start();
        }
        ready.Wait();
        if (failure is not null)
        {
            // No path thread without dropped groups: every file operation fails instead of running with root's groups.
            _jobs.Writer.TryComplete(failure);
            AgentLog.Write(failure.Message);
        }
        return true;
    }

    private static void Serve()
    {
        var reader = _jobs.Reader;
        while (true)
        {
            Action job;
            try
            {
                if (!reader.WaitToReadAsync().AsTask().GetAwaiter().GetResult())
                {
                    return;
                }
            }
            catch (InvalidOperationException)
            {
                return;
            }
            while (reader.TryRead(out job!))
            {
                job();
            }
        }
    }
}
