using System.Threading.Channels;
using SandboxVM.Core.Sessions;
using SandboxVM.Protocol;
using SandboxVM.Runtime.Agent;

namespace SandboxVM.Server.E2b;

/// <summary>
/// A process envd started with a <c>pty</c>: the agent's terminal (pty_open, as /v1/sandboxes/{id}/pty uses), kept
/// beyond the stream that started it, as envd keeps its processes: a Start or Connect stream subscribes to its bytes,
/// SendInput writes keystrokes, Update resizes, SendSignal ends it. While it lives the sandbox counts as in use.
/// Output while no stream is subscribed is dropped (envd's is too); a slow subscriber holds the terminal back through
/// the agent's credit window rather than being buffered without bound.
/// </summary>
internal sealed class E2bPty
{
    /// <summary>Keystrokes are queued in pieces of at most this many bytes, at most <see cref="InputQueue"/> of them (256 KiB).</summary>
    private const int InputPiece = 4096;
    private const int InputQueue = 64;

    /// <summary>Chunks of output (at most one frame, 64 KiB, each) a subscriber may have unread before the terminal waits for it.</summary>
    private const int OutputQueue = 16;

    private readonly Channel<byte[]> _input = Channel.CreateBounded<byte[]>(new BoundedChannelOptions(InputQueue) { SingleReader = true });
    private readonly Lock _lock = new();
    private readonly List<Channel<byte[]>> _subscribers = [];
    private readonly TaskCompletionSource _opened = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private readonly TaskCompletionSource<PtyExit> _ended = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private Terminal? _terminal;
    private bool _closed;

    /// <summary>Completes once the terminal's program started; faults with why it could not (no such command, sandbox gone).</summary>
    public Task Opened => _opened.Task;

    /// <summary>How the program ended; faults when the terminal was killed or its sandbox went away.</summary>
    public Task<PtyExit> Ended => _ended.Task;

    public bool Running => !_ended.Task.IsCompleted;

    /// <summary>Opens the terminal in sandbox <paramref name="sandboxId"/> and relays it in the background until its program ends.</summary>
    public void Start(SessionManager sessions, string sandboxId, PtyRequest request) => _ = RunAsync(sessions, sandboxId, request);

    private async Task RunAsync(SessionManager sessions, string sandboxId, PtyRequest request)
    {
        try
        {
            var exit = await sessions.UseTerminalAsync(sandboxId, request.Argv, async (agent, argv) =>
            {
                request.Argv = argv;
                var terminal = await agent.OpenTerminalAsync(request, CancellationToken.None);
                lock (_lock)
                {
                    _terminal = terminal;
                }
                _opened.TrySetResult();
                try
                {
                    await terminal.Stream.RelayAsync(new Side(this), () => _input.Writer.TryComplete(), ReadOnlyMemory<byte>.Empty, CancellationToken.None);
                    return await terminal.Exit;
                }
                finally
                {
                    agent.CloseTerminal(terminal);
                }
            });
            _ended.TrySetResult(exit);
        }
        catch (Exception e)
        {
            // Before the start: the Start call answers it; after: the streams end with it.
            _opened.TrySetException(e);
            _ended.TrySetException(e);
        }
        finally
        {
            _input.Writer.TryComplete();
            lock (_lock)
            {
                _closed = true;
                foreach (var s in _subscribers)
                {
                    s.Writer.TryComplete();
                }
                _subscribers.Clear();
            }
            // Observed here so an unobserved fault is not reported for a terminal no stream waited on.
            _ = _ended.Task.Exception;
        }
    }

    /// <summary>A reader of the terminal's output from now on; it completes when the terminal ends. Dispose to leave.</summary>
    public Subscription Subscribe()
    {
        var channel = Channel.CreateBounded<byte[]>(new BoundedChannelOptions(OutputQueue) { SingleReader = true, SingleWriter = true });
        lock (_lock)
        {
            if (_closed)
            {
                channel.Writer.TryComplete();
            }
            else
            {
                _subscribers.Add(channel);
            }
        }
        return new Subscription(this, channel);
    }

    private void Leave(Channel<byte[]> channel)
    {
        lock (_lock)
        {
            _subscribers.Remove(channel);
        }
        // Wakes the relay if it waits on this subscriber's full queue.
        channel.Writer.TryComplete();
    }

    /// <summary>Keystrokes for the terminal; waits while the terminal is behind by the input queue.</summary>
    public async Task WriteInputAsync(byte[] data, CancellationToken ct)
    {
        try
        {
            for (int i = 0; i < data.Length; i += InputPiece)
            {
                await _input.Writer.WriteAsync(data[i..Math.Min(data.Length, i + InputPiece)], ct);
            }
        }
        catch (ChannelClosedException)
        {
            throw new ConnectException("not_found", "the terminal's process has ended");
        }
    }

    public async Task ResizeAsync(int cols, int rows, CancellationToken ct)
    {
        var terminal = Volatile.Read(ref _terminal);
        if (terminal is null || !Running)
        {
            throw new ConnectException("not_found", "the terminal's process has ended");
        }
        try
        {
            await terminal.Agent.ResizeTerminalAsync(terminal, cols, rows, ct);
        }
        catch (AgentException e)
        {
            throw new ConnectException("not_found", $"the terminal could not be resized: {e.Message}");
        }
    }

    /// <summary>Ends the terminal: the agent kills its process group. False when it had ended already.</summary>
    public bool Kill()
    {
        var terminal = Volatile.Read(ref _terminal);
        if (terminal is null || !Running)
        {
            return false;
        }
        terminal.Agent.CloseTerminal(terminal);
        return true;
    }

    /// <summary>Hands a chunk of output to every subscriber, waiting for a slow one; one that left is skipped.</summary>
    private async Task PublishAsync(byte[] chunk, CancellationToken ct)
    {
        Channel<byte[]>[] now;
        lock (_lock)
        {
            now = [.. _subscribers];
        }
        foreach (var s in now)
        {
            try
            {
                await s.Writer.WriteAsync(chunk, ct);
            }
            catch (ChannelClosedException)
            {
                // The stream went away meanwhile.
            }
        }
    }

    private async ValueTask<int> ReadInputAsync(Memory<byte> buffer, CancellationToken ct)
    {
        while (true)
        {
            if (_pending is { } p)
            {
                int n = Math.Min(p.Length - _pendingAt, buffer.Length);
                p.AsMemory(_pendingAt, n).CopyTo(buffer);
                _pendingAt += n;
                if (_pendingAt == p.Length)
                {
                    _pending = null;
                }
                return n;
            }
            if (!await _input.Reader.WaitToReadAsync(ct))
            {
                return 0;
            }
            if (_input.Reader.TryRead(out var next))
            {
                _pending = next;
                _pendingAt = 0;
            }
        }
    }

    private byte[]? _pending;
    private int _pendingAt;

    public sealed class Subscription(E2bPty pty, Channel<byte[]> channel) : IDisposable
    {
        public ChannelReader<byte[]> Output => channel.Reader;

        public void Dispose() => pty.Leave(channel);
    }

    /// <summary>The relay's local end: reads the queued keystrokes, writes the terminal's output to the subscribers.</summary>
    private sealed class Side(E2bPty pty) : RelayStream
    {
        public override ValueTask<int> ReadAsync(Memory<byte> buffer, CancellationToken cancellationToken = default) => pty.ReadInputAsync(buffer, cancellationToken);

        // The relay reuses its buffers: each chunk is copied once for all subscribers.
        public override ValueTask WriteAsync(ReadOnlyMemory<byte> buffer, CancellationToken cancellationToken = default) =>
            new(pty.PublishAsync(buffer.ToArray(), cancellationToken));
    }
}
