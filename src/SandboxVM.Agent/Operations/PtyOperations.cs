using Microsoft.Win32.SafeHandles;
using SandboxVM.Agent.Files;
using SandboxVM.Agent.Native;
using SandboxVM.Agent.Processes;
using SandboxVM.Protocol;

namespace SandboxVM.Agent.Operations;

/// <summary>
/// pty_open / pty_resize: a program (the template's shell) as the sandbox user on a new pseudo-terminal, in a session
/// of its own with the terminal as its controlling one, started like a command (<see cref="ProcessSupervisor"/>, setpriv,
/// the working directory opened as the user). The operation's stream carries the terminal's bytes both ways, bounded by
/// the stream's credit window; it ends when the program has exited (DataEnd, then <see cref="PtyExit"/>), and a Cancel
/// kills its process group. See README "Terminals".
/// </summary>
internal static class PtyOperations
{
    public static async Task OpenAsync(OperationContext context, AgentState state)
    {
        var request = context.Request.Pty ?? throw AgentException.BadRequest("pty_open needs a 'pty' member");
        var stream = context.Stream ?? throw new AgentException(ErrorCodes.Internal, "pty_open without its stream");
        Validate(request);
        var who = state.Options.User;
        var (cwd, environment) = CommandOperations.Place(state, request.Cwd, request.Env);
        environment.TryAdd("TERM", "xterm-256color");
        string path = await UserFiles.ResolveExecutableAsync(who, request.Argv[0], cwd, environment["PATH"])
            ?? throw new AgentException(ErrorCodes.CommandNotFound, $"{request.Argv[0]}: command not found");
        using var cwdHandle = await UserFiles.OpenDirectoryAsync(who, cwd);
        using var master = Libc.OpenPseudoTerminal(request.Cols, request.Rows, who.Uid, who.Gid, out string slave);
        ChildProcess child;
        try
        {
            child = state.Supervisor.StartOnTerminal(path, request.Argv, [.. environment.Select(kv => $"{kv.Key}={kv.Value}")], cwdHandle, slave);
        }
        catch (SpawnException e)
        {
            throw new AgentException(ErrorCodes.CommandNotFound, e.Message);
        }
        using (child)
        {
            state.Terminals[context.Id] = master;
            // A terminal may sit idle for hours; the host ends it by closing the stream.
            stream.IdleTimeout = null;
            try
            {
                await stream.RelayAsync(new TerminalStream(master, child.Exited), () => { }, ReadOnlyMemory<byte>.Empty, context.Cancellation);
            }
            finally
            {
                state.Terminals.TryRemove(KeyValuePair.Create(context.Id, master));
                if (!child.Exited.IsCompleted)
                {
                    child.Kill();
                }
                var status = await child.Exited;
                // Jobs the shell left in its group go with it, as a command's do.
                child.KillRemainingGroup();
                context.Cancellation.ThrowIfCancellationRequested();
                if (stream.AbortReason is null)
                {
                    await context.RespondAsync(new PtyExit { ExitCode = status.Signal is int s ? 128 + s : status.ExitCode, Signal = status.Signal },
                        ProtocolJson.Default.PtyExit);
                }
            }
        }
        if (!context.IsFinished)
        {
            throw new AgentException(ErrorCodes.Cancelled, $"the terminal's stream ended: {stream.AbortReason}");
        }
    }

    public static async Task ResizeAsync(OperationContext context, AgentState state)
    {
        var request = context.Request.Pty ?? throw AgentException.BadRequest("pty_resize needs a 'pty' member");
        CheckSize(request);
        if (!state.Terminals.TryGetValue(request.Target, out var master))
        {
            throw new AgentException(ErrorCodes.NotFound, $"no terminal is open on operation {request.Target}");
        }
        try
        {
            Libc.ResizeTerminal(master, request.Cols, request.Rows);
        }
        catch (ObjectDisposedException)
        {
            throw new AgentException(ErrorCodes.NotFound, $"the terminal of operation {request.Target} has closed");
        }
        await context.RespondAsync(new OkBody(), ProtocolJson.Default.OkBody);
    }

    private static void CheckSize(PtyRequest request)
    {
        if (request.Cols is < 1 or > PtyRequest.MaxCells || request.Rows is < 1 or > PtyRequest.MaxCells)
        {
            throw AgentException.BadRequest($"pty cols and rows must be 1..{PtyRequest.MaxCells}");
        }
    }

    private static void Validate(PtyRequest request)
    {
        CheckSize(request);
        if (request.Argv is not { Count: > 0 } || request.Argv[0].Length == 0)
        {
            throw AgentException.BadRequest("pty.argv needs at least a program name");
        }
        // Strings become C strings for execve: an embedded NUL would silently cut them.
        if (request.Argv.Concat(request.Env.Keys).Concat(request.Env.Values).Append(request.Cwd).Any(s => s.Contains('\0', StringComparison.Ordinal)))
        {
            throw AgentException.BadRequest("pty strings may not contain NUL");
        }
        if (request.Env.Keys.Any(k => k.Length == 0 || k.Contains('=', StringComparison.Ordinal)))
        {
            throw AgentException.BadRequest("pty.env names must be non-empty and without '='");
        }
    }

    /// <summary>
    /// A terminal's non-blocking master as a stream. Reads end (0) once the program has exited and its output is drained,
    /// or every slave is closed (EIO); both directions wait in poll with a short timeout, so a cancel is seen within it.
    /// </summary>
    private sealed class TerminalStream(SafeFileHandle master, Task exited) : Stream
    {
        private const int PollMs = 100;

        public override bool CanRead => true;
        public override bool CanWrite => true;
        public override bool CanSeek => false;
        public override long Length => throw new NotSupportedException();
        public override long Position { get => throw new NotSupportedException(); set => throw new NotSupportedException(); }

        public override ValueTask<int> ReadAsync(Memory<byte> buffer, CancellationToken cancellationToken = default) =>
            new(Task.Run(() => ReadBlocking(buffer, cancellationToken), cancellationToken));

        private int ReadBlocking(Memory<byte> buffer, CancellationToken cancellationToken)
        {
            while (true)
            {
                cancellationToken.ThrowIfCancellationRequested();
                bool done = exited.IsCompleted;
                short events = Libc.Poll(master, Libc.PollIn, PollMs);
                if ((events & Libc.PollIn) != 0)
                {
                    try
                    {
                        int n = Libc.Read(master, buffer.Span);
                        if (n != -1)
                        {
                            return n;
                        }
                    }
                    catch (IOException)
                    {
                        // EIO: no slave is open any more.
                        return 0;
                    }
                }
                else if ((events & (Libc.PollHup | Libc.PollErr)) != 0 || done)
                {
                    // Exited before a poll that found nothing: drained.
                    return 0;
                }
            }
        }

        public override async ValueTask WriteAsync(ReadOnlyMemory<byte> buffer, CancellationToken cancellationToken = default)
        {
            while (!buffer.IsEmpty)
            {
                cancellationToken.ThrowIfCancellationRequested();
                int n = Libc.Write(master, buffer.Span);
                if (n < 0)
                {
                    throw new IOException("the terminal has closed");
                }
                buffer = buffer[n..];
                if (n == 0)
                {
                    // The program is not reading its input: wait for room.
                    await Task.Run(() => Libc.Poll(master, Libc.PollOut, PollMs), cancellationToken);
                }
            }
        }

        public override Task WriteAsync(byte[] buffer, int offset, int count, CancellationToken cancellationToken) =>
            WriteAsync(buffer.AsMemory(offset, count), cancellationToken).AsTask();

        public override Task<int> ReadAsync(byte[] buffer, int offset, int count, CancellationToken cancellationToken) =>
            ReadAsync(buffer.AsMemory(offset, count), cancellationToken).AsTask();

        public override int Read(byte[] buffer, int offset, int count) => ReadBlocking(buffer.AsMemory(offset, count), CancellationToken.None);
        public override void Write(byte[] buffer, int offset, int count) => WriteAsync(buffer.AsMemory(offset, count)).AsTask().GetAwaiter().GetResult();
        public override Task FlushAsync(CancellationToken cancellationToken) => Task.CompletedTask;
        public override void Flush() { }
        public override long Seek(long offset, SeekOrigin origin) => throw new NotSupportedException();
        public override void SetLength(long value) => throw new NotSupportedException();
    }
}
