using System.Text.RegularExpressions;
using SandboxVM.Protocol;

namespace SandboxVM.Agent.Processes;

/// <summary>
/// The agent's kernels by context (<see cref="ForkServerRequest.Context"/>): one <see cref="KernelHost"/>, and
/// so one independent Python state, per context, the default one ("") included. A context's kernel is started
/// by its first persistent run; at most <see cref="KernelRequest.MaxContexts"/> contexts are kept (each is a whole
/// interpreter with its preloads), a run naming one more is refused. kernel_stop ends a context's kernel and
/// forgets the context, so its next run starts fresh.
/// </summary>
internal sealed partial class KernelContexts(ProcessSupervisor supervisor)
{
    private readonly Lock _lock = new();
    private readonly Dictionary<string, KernelHost> _hosts = new(StringComparer.Ordinal);
    private bool _stopped;

    [GeneratedRegex(@"^[A-Za-z0-9_.-]{1,64}$")]
    private static partial Regex ContextRegex();

    /// <summary>Throws bad_request unless <paramref name="context"/> is null, empty or a short name.</summary>
    public static string Check(string? context)
    {
        if (string.IsNullOrEmpty(context))
        {
            return "";
        }
        return ContextRegex().IsMatch(context)
            ? context
            : throw AgentException.BadRequest("fork_server.context must be 1 to 64 letters, digits, '_', '.' or '-'");
    }

    /// <summary>The kernel host of <paramref name="context"/>, made for its first run; <see cref="ErrorCodes.TooManyKernels"/> past the cap.</summary>
    public KernelHost For(string? context)
    {
        string name = Check(context);
        lock (_lock)
        {
            if (_hosts.TryGetValue(name, out var host))
            {
                return host;
            }
            if (_hosts.Count >= KernelRequest.MaxContexts)
            {
                throw new AgentException(ErrorCodes.TooManyKernels,
                    $"{_hosts.Count} kernel contexts are kept, at most {KernelRequest.MaxContexts}: stop one (kernel_stop) before using context '{name}'");
            }
            host = new KernelHost(supervisor, name);
            if (_stopped)
            {
                host.StopAll();
            }
            _hosts[name] = host;
            return host;
        }
    }

    /// <summary>Ends the kernel of <paramref name="context"/> (a run in it ends as killed) and forgets the context.</summary>
    public void Stop(string? context)
    {
        string name = Check(context);
        KernelHost? host;
        lock (_lock)
        {
            if (_hosts.Remove(name, out host))
            {
                AgentLog.Write($"kernel context '{name}' stopped");
            }
        }
        host?.StopAll();
    }

    /// <summary>Kills every kernel (the agent is exiting); later requests get none.</summary>
    public void StopAll()
    {
        KernelHost[] hosts;
        lock (_lock)
        {
            _stopped = true;
            hosts = [.. _hosts.Values];
        }
        foreach (var host in hosts)
        {
            host.StopAll();
        }
    }
}
