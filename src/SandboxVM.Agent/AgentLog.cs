using System.Text;
using Microsoft.Win32.SafeHandles;

namespace SandboxVM.Agent;

/// <summary>
/// Diagnostics to stderr (stdout may be the protocol channel). Writes straight to fd 2 rather than
/// through System.Console, whose terminal set-up installs a SIGCHLD handler that, when the agent is
/// PID 1, reaps every child and would steal the exit statuses the agent waits for.
/// </summary>
internal static class AgentLog
{
    private static readonly Lock _lock = new();
    private static readonly FileStream? _stderr = OpenStderr();

    public static void Write(string message)
    {
        if (_stderr is null)
        {
            return;
        }
        byte[] line = Encoding.UTF8.GetBytes($"sandboxvm-agent: {message}\n");
        lock (_lock)
        {
            try
            {
                _stderr.Write(line);
            }
            catch (IOException)
            {
                // Nobody is listening; diagnostics are best effort.
            }
        }
    }

    private static FileStream? OpenStderr()
    {
        try
        {
            return new FileStream(new SafeFileHandle(2, ownsHandle: false), FileAccess.Write, bufferSize: 0);
        }
        catch (Exception e) when (e is IOException or ArgumentException or UnauthorizedAccessException)
        {
            return null;
        }
    }
}
