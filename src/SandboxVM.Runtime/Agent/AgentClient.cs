using System.Collections.Concurrent;
using System.Text.Json;
using System.Text.Json.Serialization.Metadata;
using System.Threading.Channels;
using SandboxVM.Protocol;

namespace SandboxVM.Runtime.Agent;

/// <summary>The agent answered an operation with an Error frame.</summary>
public sealed class AgentException(string code, string message) : Exception(message)
{
    public string Code { get; } = code;
}

/// <summary>
/// What the host allows one agent connection: everything the guest sends is hostile, so every queue is
/// bounded, every wait timed, and a guest past a bound gets its channel closed (its VM killed by the
/// owner, see <see cref="AgentClient.FailureReason"/>). Defaults suit a real VM under TCG.
/// </summary>
public sealed record AgentClientLimits
{
    /// <summary>A frame the guest does not take within this long (it stopped reading): the channel is closed as hostile.</summary>
    public TimeSpan WriteTimeout { get; init; } = TimeSpan.FromSeconds(30);

    /// <summary>
    /// Bytes (payload + 64 per frame) queued for one operation before the reader loop waits for it to
    /// take them: backpressure on the whole channel, so no operation buffers more than this.
    /// </summary>
    public int OperationQueueBytes { get; init; } = 1 << 20;

    /// <summary>
    /// How long the reader loop waits for an operation to make room (its consumer, e.g. a download's
    /// HTTP client, is stuck) before it gives the operation up (Cancel to the agent, the caller gets a
    /// <see cref="TimeoutException"/>). Not the guest's fault: the channel stays open.
    /// </summary>
    public TimeSpan OperationStallTimeout { get; init; } = TimeSpan.FromSeconds(30);

    /// <summary>Refusals of agent-opened operations not yet written; one more and the channel is closed as hostile.</summary>
    public int MaxPendingRefusals { get; init; } = 2 * ProtocolInfo.MaxAgentOperations;

    /// <summary>Event frames one exec may send (the agent sends two: compile_started, run_started).</summary>
    public int MaxExecEvents { get; init; } = 64;

    /// <summary>
    /// Frames for ids that are not open (payload + 64 bytes each) the host drops before it calls the
    /// guest hostile. Every operation the host ends before the agent did (a Cancel, a read cut at its
    /// limit) adds <see cref="LateFramesPerCancel"/>: an honest agent sends at most what was in flight.
    /// </summary>
    public long LateFramesAllowance { get; init; } = 16L << 20;

    /// <summary>See <see cref="LateFramesAllowance"/>.</summary>
    public long LateFramesPerCancel { get; init; } = 4L << 20;

    public static AgentClientLimits Default { get; } = new();
}

/// <summary>The channel to the agent broke: the VM or process is gone, or the host closed it because the guest broke the protocol.</summary>
public sealed class AgentDisconnectedException(string message, Exception? inner = null, string? guestFault = null) : Exception(message, inner)
{
    /// <summary>How the guest broke the protocol when that is why the host closed the channel (no host detail in it); else null.</summary>
    public string? GuestFault { get; } = guestFault;
}

/// <summary>
/// A file read sent more bytes than the caller allowed (<see cref="AgentClient.ReadFileAsync"/>): the
/// destination got exactly <see cref="Limit"/> bytes, the agent was told to cancel, the rest was dropped.
/// </summary>
public sealed class AgentReadLimitException(string path, long limit)
    : Exception($"'{path}' sent more than the {limit} bytes the host reads of it")
{
    public string Path { get; } = path;
    public long Limit { get; } = limit;
}

/// <summary>Receives what an exec streams while it runs. Callbacks run on the reader loop: keep them short.</summary>
public interface IExecObserver
{
    void OnStdout(ReadOnlySpan<byte> data);
    void OnStderr(ReadOnlySpan<byte> data);
    void OnEvent(ExecEvent e);
}

/// <summary>
/// Serves operations the agent opens (ids with <see cref="ProtocolInfo.AgentIdBit"/>: egress_open, search).
/// <see cref="HandleAsync"/> runs on a task of its own; it must answer with exactly one of
/// <see cref="AgentIncomingRequest.RespondAsync"/> / <see cref="AgentIncomingRequest.FailAsync"/>, and for a
/// stream relay <see cref="AgentIncomingRequest.Stream"/> before it returns (the id is freed then).
/// </summary>
public interface IAgentRequestHandler
{
    Task HandleAsync(AgentIncomingRequest request, CancellationToken cancellationToken);
}

/// <summary>One operation the agent opened.</summary>
public sealed class AgentIncomingRequest
{
    private readonly FrameWriter _writer;
    private int _answered;

    internal AgentIncomingRequest(FrameWriter writer, uint id, AgentRequest request, TimeProvider time)
    {
        _writer = writer;
        Id = id;
        Request = request;
        Stream = new FrameStream(writer, id, time);
    }

    public uint Id { get; }

    public AgentRequest Request { get; }

    /// <summary>The byte stream on this id, for ops that become one (egress_open after an ok Response).</summary>
    public FrameStream Stream { get; }

    public bool IsAnswered => Volatile.Read(ref _answered) != 0;

    public async Task RespondAsync<T>(T body, JsonTypeInfo<T> typeInfo)
    {
        if (Interlocked.Exchange(ref _answered, 1) == 0)
        {
            await _writer.WriteJsonAsync(FrameType.Response, Id, body, typeInfo, CancellationToken.None);
        }
    }

    public async Task FailAsync(string code, string message)
    {
        if (Interlocked.Exchange(ref _answered, 1) == 0)
        {
            await _writer.WriteJsonAsync(FrameType.Error, Id, new ErrorBody { Code = code, Message = message }, ProtocolJson.Default.ErrorBody, CancellationToken.None);
        }
    }
}

/// <summary>
/// Host side of the agent protocol over one duplex byte stream. One reader loop demultiplexes frames
/// to operations by id; any number of operations may be in flight. Ownership: the client owns neither
/// stream; the VM that created it closes them. When the stream breaks every pending operation fails
/// with <see cref="AgentDisconnectedException"/>.
/// </summary>
/// <remarks>
/// Nothing the guest sends is trusted (<see cref="AgentClientLimits"/>): each operation's queue is
/// bounded (the reader waits for room, so a fast guest is slowed, not buffered); a frame of the wrong
/// kind for its operation, too many exec events, an oversized frame, too many frames for ids that are not
/// open, too many unread refusals, or a write the guest does not take in time closes the channel for good,
/// with <see cref="FailureReason"/> saying why. Its owner kills the VM then (<see cref="Completion"/>).
/// </remarks>
public sealed class AgentClient : IAsyncDisposable
{
    /// <summary>What a queued frame costs besides its payload (the frame and its queue slot).</summary>
    private const int FrameOverhead = 64;

    private readonly FrameReader _reader;
    private readonly FrameWriter _writer;
    private readonly AgentClientLimits _limits;
    private readonly TimeProvider _time;
    private readonly ConcurrentDictionary<uint, Operation> _pending = new();
    private readonly ConcurrentDictionary<uint, AgentIncomingRequest> _incoming = new();
    /// <summary>Streams the host opened (port_open): their frames go to the stream, the answer to the operation.</summary>
    private readonly ConcurrentDictionary<uint, FrameStream> _streams = new();
    private readonly CancellationTokenSource _stop = new();
    private readonly TaskCompletionSource<HelloReply> _hello = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private readonly Task _readLoop;
    private int _nextId;
    private int _pendingRefusals;
    private long _lateBytes;
    private long _lateAllowance;
    private volatile Exception? _broken;
    private string? _failureReason;

    /// <summary>
    /// A client over the two streams; <paramref name="time"/> (null: the system clock) times the write
    /// and stall limits and the idle timeout of streams the agent opens.
    /// </summary>
    public AgentClient(Stream fromAgent, Stream toAgent, AgentClientLimits? limits = null, TimeProvider? time = null)
    {
        _limits = limits ?? AgentClientLimits.Default;
        _time = time ?? TimeProvider.System;
        _lateAllowance = _limits.LateFramesAllowance;
        // An oversized frame closes the channel: it is refused at its header, never read through.
        _reader = new FrameReader(fromAgent, Frame.MaxPayload, skipOversized: false);
        _writer = new FrameWriter(toAgent, _limits.WriteTimeout, e => Fail(e.Message), _time);
        _readLoop = Task.Run(ReadLoopAsync);
    }

    /// <summary>Completes when the channel is closed or broken.</summary>
    public Task Completion => _readLoop;

    /// <summary>Why the host closed the channel (the guest broke the protocol or stopped reading); null otherwise.</summary>
    public string? FailureReason => Volatile.Read(ref _failureReason);

    /// <summary>
    /// Serves operations the agent opens (egress, search); null (the default) refuses every one with
    /// <see cref="ErrorCodes.UnknownOp"/>: sandboxes without network get none.
    /// </summary>
    public IAgentRequestHandler? RequestHandler { get; set; }

    /// <summary>Agent-initiated operations open right now.</summary>
    public int IncomingCount => _incoming.Count;

    /// <summary>Starts the agent's in-guest HTTP proxy; returns the address it listens on.</summary>
    public async Task<string> EnableEgressAsync(string listen, CancellationToken cancellationToken) =>
        (await CallAsync(new AgentRequest { Op = Ops.EgressEnable, EgressEnable = new EgressEnableRequest { Listen = listen } },
            ProtocolJson.Default.EgressEnableReply, cancellationToken)).Listen;

    public async Task<HelloReply> HelloAsync(CancellationToken cancellationToken)
    {
        await SendAsync(() => _writer.WriteJsonAsync(FrameType.Hello, 0, new Hello(), ProtocolJson.Default.Hello, cancellationToken));
        HelloReply reply = await _hello.Task.WaitAsync(cancellationToken);
        if (reply.ProtocolVersion != ProtocolInfo.Version)
        {
            throw new AgentException(ErrorCodes.VersionMismatch, $"agent speaks protocol {reply.ProtocolVersion}, host {ProtocolInfo.Version}");
        }
        return reply;
    }

    public Task PingAsync(CancellationToken cancellationToken) =>
        CallAsync(new AgentRequest { Op = Ops.Ping }, ProtocolJson.Default.OkBody, cancellationToken);

    /// <summary>Ends the kernel of a persistent-run context (its state with it); the next run there starts a fresh one.</summary>
    public Task StopKernelAsync(string? context, CancellationToken cancellationToken) =>
        CallAsync(new AgentRequest { Op = Ops.KernelStop, Kernel = new KernelRequest { Context = context } }, ProtocolJson.Default.OkBody, cancellationToken);

    public Task ReinitAsync(ReinitRequest request, CancellationToken cancellationToken) =>
        CallAsync(new AgentRequest { Op = Ops.Reinit, Reinit = request }, ProtocolJson.Default.OkBody, cancellationToken);

    public Task<FileInfoBody> StatAsync(string path, CancellationToken cancellationToken) =>
        CallAsync(new AgentRequest { Op = Ops.FileStat, File = new FileRequest { Path = path } }, ProtocolJson.Default.FileInfoBody, cancellationToken);

    public Task<FileListBody> ListAsync(string path, CancellationToken cancellationToken) =>
        CallAsync(new AgentRequest { Op = Ops.FileList, File = new FileRequest { Path = path } }, ProtocolJson.Default.FileListBody, cancellationToken);

    public Task RemoveAsync(string path, bool recursive, CancellationToken cancellationToken) =>
        CallAsync(new AgentRequest { Op = Ops.FileRemove, File = new FileRequest { Path = path, Recursive = recursive } }, ProtocolJson.Default.OkBody, cancellationToken);

    public Task<FileInfoBody> MakeDirAsync(string path, bool parents, CancellationToken cancellationToken) =>
        CallAsync(new AgentRequest { Op = Ops.FileMkdir, File = new FileRequest { Path = path, Recursive = parents } }, ProtocolJson.Default.FileInfoBody, cancellationToken);

    public Task<ArtifactListBody> ListArtifactsAsync(CancellationToken cancellationToken) =>
        CallAsync(new AgentRequest { Op = Ops.ArtifactsList }, ProtocolJson.Default.ArtifactListBody, cancellationToken);

    /// <summary>Runs an exec; output streams to <paramref name="observer"/>. Cancelling sends Cancel and waits for the agent's answer.</summary>
    public Task<ExecResult> ExecAsync(ExecRequest request, IExecObserver observer, CancellationToken cancellationToken) =>
        StreamAsync(new AgentRequest { Op = Ops.Exec, Exec = request }, observer, ProtocolJson.Default.ExecResult, cancellationToken);

    /// <summary>
    /// Starts a command. A background one answers at once; a foreground one streams its output to
    /// <paramref name="observer"/> and answers when it ended (cancelling kills it).
    /// </summary>
    public Task<CommandInfo> StartCommandAsync(CommandRequest request, IExecObserver observer, CancellationToken cancellationToken) =>
        StreamAsync(new AgentRequest { Op = Ops.CommandStart, Command = request }, observer, ProtocolJson.Default.CommandInfo, cancellationToken);

    /// <summary>A command's state and kept output, waiting up to <paramref name="waitMs"/> for it to end.</summary>
    public Task<CommandInfo> GetCommandAsync(string id, int waitMs, bool includeOutput, CancellationToken cancellationToken, long? outputBeyond = null) =>
        CallAsync(new AgentRequest { Op = Ops.CommandGet, Command = new CommandRequest { Id = id, WaitMs = waitMs, IncludeOutput = includeOutput, OutputBeyond = outputBeyond } },
            ProtocolJson.Default.CommandInfo, cancellationToken);

    public Task<CommandListBody> ListCommandsAsync(CancellationToken cancellationToken) =>
        CallAsync(new AgentRequest { Op = Ops.CommandList, Command = new CommandRequest() }, ProtocolJson.Default.CommandListBody, cancellationToken);

    public Task<CommandInfo> WriteCommandStdinAsync(string id, byte[] data, bool eof, CancellationToken cancellationToken) =>
        CallAsync(new AgentRequest { Op = Ops.CommandStdin, Command = new CommandRequest { Id = id, Data = data, Eof = eof } },
            ProtocolJson.Default.CommandInfo, cancellationToken);

    /// <summary>Signals a command's group; with <paramref name="killAfterMs"/> &gt; 0 SIGKILL follows if it still runs then, and the answer waits for its end.</summary>
    public Task<CommandInfo> SignalCommandAsync(string id, int signal, int killAfterMs, CancellationToken cancellationToken) =>
        CallAsync(new AgentRequest { Op = Ops.CommandSignal, Command = new CommandRequest { Id = id, Signal = signal, KillAfterMs = killAfterMs } },
            ProtocolJson.Default.CommandInfo, cancellationToken);

    /// <summary>An operation that streams Stdout/Stderr/Event frames before its Response.</summary>
    private async Task<T> StreamAsync<T>(AgentRequest request, IExecObserver observer, JsonTypeInfo<T> replyType, CancellationToken cancellationToken)
    {
        var op = Open();
        int events = 0;
        try
        {
            await SendRequestAsync(op.Id, request);
            using var onCancel = cancellationToken.Register(() => _ = SendCancelAsync(op.Id));
            while (true)
            {
                Frame f = await ReadFrameAsync(op, CancellationToken.None);
                switch (f.Type)
                {
                    case FrameType.Stdout:
                        observer.OnStdout(f.Payload.Span);
                        break;
                    case FrameType.Stderr:
                        observer.OnStderr(f.Payload.Span);
                        break;
                    case FrameType.Event:
                        if (++events > _limits.MaxExecEvents)
                        {
                            throw Violation($"the agent sent more than {_limits.MaxExecEvents} events for {request.Op} {op.Id}");
                        }
                        observer.OnEvent(Parse(f, ProtocolJson.Default.ExecEvent));
                        break;
                    case FrameType.Response:
                        op.Answered = true;
                        return Parse(f, replyType);
                    case FrameType.Error:
                        op.Answered = true;
                        throw ToException(f);
                    default:
                        throw Unexpected(f, request.Op);
                }
            }
        }
        finally
        {
            End(op);
        }
    }

    /// <summary>Streams the host opened right now.</summary>
    public int OpenStreams => _streams.Count;

    /// <summary>
    /// A byte stream to TCP port <paramref name="port"/> on the guest's loopback (port_open). Relay it with
    /// <see cref="FrameStream.RelayAsync"/>, then <see cref="ClosePort"/> it. At most
    /// <see cref="ProtocolInfo.MaxAgentOperations"/> at once (<c>too_many_streams</c>).
    /// </summary>
    public async Task<FrameStream> OpenPortAsync(int port, CancellationToken cancellationToken)
    {
        if (_streams.Count >= ProtocolInfo.MaxAgentOperations)
        {
            throw new AgentException(ErrorCodes.TooManyStreams, $"{ProtocolInfo.MaxAgentOperations} port streams are open to this sandbox");
        }
        var op = Open();
        // Registered before the request: the guest's server may speak first, right after the answer.
        var stream = new FrameStream(_writer, op.Id, _time);
        _streams[op.Id] = stream;
        try
        {
            await SendRequestAsync(op.Id, new AgentRequest { Op = Ops.PortOpen, Port = new PortOpenRequest { Port = port } });
            Answer(await ReadFrameAsync(op, cancellationToken), op, ProtocolJson.Default.OkBody, Ops.PortOpen);
            return stream;
        }
        catch
        {
            ClosePort(stream);
            throw;
        }
        finally
        {
            End(op);
        }
    }

    /// <summary>
    /// A program on a new pseudo-terminal in the guest (pty_open). Relay <see cref="Terminal.Stream"/> (keystrokes up,
    /// the terminal's output down) with <see cref="FrameStream.RelayAsync"/>; <see cref="Terminal.Exit"/> completes with the
    /// program's end after the output (or with the agent's refusal); end it with <see cref="CloseTerminal"/>. Counts
    /// against <see cref="ProtocolInfo.MaxAgentOperations"/> like port streams.
    /// </summary>
    public async Task<Terminal> OpenTerminalAsync(PtyRequest request, CancellationToken cancellationToken)
    {
        if (_streams.Count >= ProtocolInfo.MaxAgentOperations)
        {
            throw new AgentException(ErrorCodes.TooManyStreams, $"{ProtocolInfo.MaxAgentOperations} port and terminal streams are open to this sandbox");
        }
        var op = Open();
        // A terminal may sit idle for hours: the caller ends it.
        var stream = new FrameStream(_writer, op.Id, _time) { IdleTimeout = null };
        _streams[op.Id] = stream;
        try
        {
            await SendRequestAsync(op.Id, new AgentRequest { Op = Ops.PtyOpen, Pty = request }).WaitAsync(cancellationToken);
        }
        catch
        {
            _streams.TryRemove(KeyValuePair.Create(op.Id, stream));
            End(op);
            throw;
        }
        return new Terminal(this, stream, WaitExitAsync(op, stream));
    }

    private async Task<PtyExit> WaitExitAsync(Operation op, FrameStream stream)
    {
        try
        {
            long late = 0;
            while (true)
            {
                var f = await ReadFrameAsync(op, CancellationToken.None);
                // Once CloseTerminal removed the stream, the bytes the guest had in flight (at most its credit window) reach
                // the operation before its answer: dropped, not a protocol violation that would end the sandbox.
                if (f.Type is FrameType.Data or FrameType.DataEnd or FrameType.Credit && stream.AbortReason is not null
                    && (late += FrameOverhead + f.Payload.Length) <= FrameStream.Window + FrameOverhead * 64)
                {
                    continue;
                }
                return Answer(f, op, ProtocolJson.Default.PtyExit, Ops.PtyOpen);
            }
        }
        finally
        {
            if (!op.Answered)
            {
                stream.Abort("the terminal's operation ended");
            }
            End(op);
        }
    }

    /// <summary>New size of a terminal of <see cref="OpenTerminalAsync"/> (the program gets SIGWINCH).</summary>
    public Task ResizeTerminalAsync(Terminal terminal, int cols, int rows, CancellationToken cancellationToken) =>
        CallAsync(new AgentRequest { Op = Ops.PtyResize, Pty = new PtyRequest { Target = terminal.Stream.Id, Cols = cols, Rows = rows } },
            ProtocolJson.Default.OkBody, cancellationToken);

    /// <summary>Ends a terminal: one still open gets a Cancel (the agent kills its process group).</summary>
    public void CloseTerminal(Terminal terminal)
    {
        var stream = terminal.Stream;
        if (_streams.TryRemove(KeyValuePair.Create(stream.Id, stream)) && !terminal.Exit.IsCompleted)
        {
            stream.Abort("closed by the host");
            if (_pending.TryGetValue(stream.Id, out var op))
            {
                op.CancelSent = true;
            }
            _ = SendCancelAsync(stream.Id);
        }
    }

    /// <summary>Forgets a stream of <see cref="OpenPortAsync"/>; one that did not end cleanly gets a Cancel.</summary>
    public void ClosePort(FrameStream stream)
    {
        if (_streams.TryRemove(KeyValuePair.Create(stream.Id, stream)) && stream.AbortReason is null)
        {
            stream.Abort("closed by the host");
            _ = SendCancelAsync(stream.Id);
        }
    }

    /// <summary>Streams <paramref name="content"/> into a file in the guest.</summary>
    public async Task<FileInfoBody> WriteFileAsync(string path, Stream content, CancellationToken cancellationToken)
    {
        var op = Open();
        try
        {
            await SendRequestAsync(op.Id, new AgentRequest { Op = Ops.FileWrite, File = new FileRequest { Path = path } });
            byte[] buffer = new byte[Frame.ChunkSize];
            int n;
            while ((n = await content.ReadAsync(buffer, cancellationToken)) > 0)
            {
                // An early error (bad path) arrives before we finish sending: stop there.
                if (op.HasQueued)
                {
                    break;
                }
                await SendAsync(() => _writer.WriteAsync(FrameType.Data, op.Id, buffer.AsMemory(0, n), cancellationToken));
            }
            await SendAsync(() => _writer.WriteAsync(FrameType.DataEnd, op.Id, ReadOnlyMemory<byte>.Empty, cancellationToken));
            return Answer(await ReadFrameAsync(op, cancellationToken), op, ProtocolJson.Default.FileInfoBody, "file_write");
        }
        finally
        {
            End(op);
        }
    }

    /// <summary>
    /// Streams a guest file into <paramref name="destination"/>, at most <paramref name="maxBytes"/> of it
    /// (callers pass min(the size they were told, their own limit)). A file that sends more gets exactly
    /// <paramref name="maxBytes"/> written, a Cancel, and <see cref="AgentReadLimitException"/>; the bytes
    /// beyond are never buffered.
    /// </summary>
    public async Task<FileInfoBody> ReadFileAsync(string path, Stream destination, long maxBytes, CancellationToken cancellationToken)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(maxBytes);
        var op = Open();
        try
        {
            await SendRequestAsync(op.Id, new AgentRequest { Op = Ops.FileRead, File = new FileRequest { Path = path } });
            long received = 0;
            bool ended = false;
            while (true)
            {
                Frame f = await ReadFrameAsync(op, cancellationToken);
                switch (f.Type)
                {
                    case FrameType.DataEnd when !ended:
                        ended = true;
                        break;
                    case FrameType.Data when !ended:
                        long room = maxBytes - received;
                        if (f.Payload.Length > room)
                        {
                            if (room > 0)
                            {
                                // Not an empty write: to an HTTP response that would start it, with nothing to say.
                                await destination.WriteAsync(f.Payload[..(int)room], cancellationToken);
                            }
                            // Told before the caller hears of it (it may kill the VM next): the agent stops reading the file.
                            op.CancelSent = true;
                            await SendCancelAsync(op.Id);
                            throw new AgentReadLimitException(path, maxBytes);
                        }
                        await destination.WriteAsync(f.Payload, cancellationToken);
                        received += f.Payload.Length;
                        break;
                    case FrameType.Response or FrameType.Error:
                        return Answer(f, op, ProtocolJson.Default.FileInfoBody, "file_read");
                    default:
                        throw Unexpected(f, "file_read");
                }
            }
        }
        finally
        {
            End(op);
        }
    }

    private async Task<T> CallAsync<T>(AgentRequest request, JsonTypeInfo<T> replyType, CancellationToken cancellationToken)
    {
        var op = Open();
        try
        {
            await SendRequestAsync(op.Id, request);
            return Answer(await ReadFrameAsync(op, cancellationToken), op, replyType, request.Op);
        }
        finally
        {
            End(op);
        }
    }

    /// <summary>The operation's closing frame as its reply (Response) or exception (Error); any other kind is a violation.</summary>
    private T Answer<T>(Frame f, Operation op, JsonTypeInfo<T> replyType, string what)
    {
        switch (f.Type)
        {
            case FrameType.Response:
                op.Answered = true;
                return Parse(f, replyType);
            case FrameType.Error:
                op.Answered = true;
                throw ToException(f);
            default:
                throw Unexpected(f, what);
        }
    }

    private Operation Open()
    {
        if (_broken is { } e)
        {
            throw Disconnected(e);
        }
        var op = new Operation((uint)Interlocked.Increment(ref _nextId));
        _pending[op.Id] = op;
        if (_broken is { } late)
        {
            // The reader loop ended between the check above and the registration.
            op.Complete(Disconnected(late));
        }
        return op;
    }

    /// <summary>
    /// The operation is over on the host's side. One the agent has not finished (a cancel, a read cut at
    /// its limit, a caller that gave up) gets a Cancel, and its late frames are allowed for.
    /// </summary>
    private void End(Operation op)
    {
        if (!_pending.TryRemove(KeyValuePair.Create(op.Id, op)))
        {
            return;
        }
        op.Complete(null);
        if (!op.Answered && _broken is null)
        {
            Interlocked.Add(ref _lateAllowance, _limits.LateFramesPerCancel);
            if (!op.CancelSent)
            {
                _ = SendCancelAsync(op.Id);
            }
        }
    }

    private Task SendCancelAsync(uint id) => SendQuietlyAsync(() => _writer.WriteAsync(FrameType.Cancel, id, ReadOnlyMemory<byte>.Empty));

    private Task SendRequestAsync(uint id, AgentRequest request) =>
        SendAsync(() => _writer.WriteJsonAsync(FrameType.Request, id, request, ProtocolJson.Default.AgentRequest));

    private async Task SendAsync(Func<ValueTask> write)
    {
        try
        {
            await write();
        }
        catch (IOException e)
        {
            throw _broken is { } broken ? Disconnected(broken) : new AgentDisconnectedException("agent channel broke while sending: " + e.Message, e);
        }
        catch (ObjectDisposedException e)
        {
            throw _broken is { } broken ? Disconnected(broken) : new AgentDisconnectedException("agent channel is closed", e);
        }
    }

    private async Task<Frame> ReadFrameAsync(Operation op, CancellationToken cancellationToken)
    {
        try
        {
            return await op.ReadAsync(cancellationToken);
        }
        catch (ChannelClosedException e)
        {
            throw e.InnerException is { } why and not ChannelClosedException
                ? why
                : Disconnected(_broken ?? e);
        }
    }

    private static AgentDisconnectedException Disconnected(Exception why) =>
        why as AgentDisconnectedException ?? new AgentDisconnectedException("agent channel closed: " + why.Message, why);

    private static T Parse<T>(Frame f, JsonTypeInfo<T> type)
    {
        try
        {
            return JsonSerializer.Deserialize(f.Payload.Span, type)
                ?? throw new AgentException(ErrorCodes.BadFrame, $"agent sent an empty {type.Type.Name}");
        }
        catch (JsonException e)
        {
            throw new AgentException(ErrorCodes.BadFrame, $"agent sent malformed {type.Type.Name}: {e.Message}");
        }
    }

    private static AgentException ToException(Frame f)
    {
        var body = Parse(f, ProtocolJson.Default.ErrorBody);
        return new AgentException(body.Code, body.Message);
    }

    private AgentDisconnectedException Unexpected(Frame f, string what) =>
        Violation($"the agent sent a {f.Type} frame to {what} operation {f.Id}");

    /// <summary>The guest broke the protocol: the channel is closed; the exception to throw where it was seen.</summary>
    private AgentDisconnectedException Violation(string reason)
    {
        Fail(reason);
        return Disconnected(_broken!);
    }

    /// <summary>
    /// Closes the channel for good because of the guest: every operation fails naming
    /// <paramref name="reason"/>, the reader stops, and the owner sees <see cref="FailureReason"/>.
    /// </summary>
    private void Fail(string reason)
    {
        if (Interlocked.CompareExchange(ref _failureReason, reason, null) is not null)
        {
            return;
        }
        Close(new AgentDisconnectedException("the host closed the agent channel: " + reason, guestFault: reason));
        try
        {
            _stop.Cancel();
        }
        catch (ObjectDisposedException)
        {
        }
    }

    /// <summary>Marks the channel broken and ends every operation on it (idempotent).</summary>
    private void Close(Exception why)
    {
        Interlocked.CompareExchange(ref _broken, why, null);
        var error = Disconnected(_broken!);
        _hello.TrySetException(new AgentDisconnectedException("agent closed the channel before hello: " + error.Message, error));
        foreach (var op in _pending.Values)
        {
            op.Complete(error);
        }
        foreach (var incoming in _incoming.Values)
        {
            incoming.Stream.Abort("the agent channel closed");
        }
        foreach (var stream in _streams.Values)
        {
            stream.Abort("the agent channel closed");
        }
    }

    private async Task ReadLoopAsync()
    {
        Exception? failure = null;
        try
        {
            while (!_stop.IsCancellationRequested)
            {
                ReadResult r = await _reader.ReadAsync(_stop.Token);
                if (r.Outcome == ReadOutcome.EndOfStream)
                {
                    break;
                }
                if (r.Outcome == ReadOutcome.Rejected)
                {
                    // The agent never sends such frames; a peer that does is not our agent.
                    Fail(r.Error ?? "bad frame from agent");
                    break;
                }
                Frame f = r.Frame;
                if (ProtocolInfo.IsAgentInitiated(f.Id))
                {
                    OnAgentInitiated(f);
                }
                else if (f.Type == FrameType.HelloReply)
                {
                    _hello.TrySetResult(Parse(f, ProtocolJson.Default.HelloReply));
                }
                else if (f.Id == 0 && f.Type == FrameType.Error)
                {
                    _hello.TrySetException(ToException(f));
                }
                else if (f.Type is FrameType.Data or FrameType.DataEnd or FrameType.Credit or FrameType.Cancel
                    && _streams.TryGetValue(f.Id, out var stream))
                {
                    stream.Deliver(f);
                }
                else if (_pending.TryGetValue(f.Id, out var op))
                {
                    await PostAsync(op, f);
                }
                else
                {
                    Late(f);
                }
            }
        }
        catch (OperationCanceledException) when (_stop.IsCancellationRequested)
        {
        }
        catch (Exception e)
        {
            failure = e;
        }
        Close(failure ?? new EndOfStreamException(FailureReason ?? "agent closed the channel"));
    }

    /// <summary>
    /// Queues a frame for its operation. Past the operation's byte bound the reader waits (the guest is
    /// slowed by the socket filling); an operation that takes nothing for the stall timeout is given up.
    /// </summary>
    private async Task PostAsync(Operation op, Frame f)
    {
        if (await op.PostAsync(f, FrameOverhead + f.Payload.Length, _limits.OperationQueueBytes, _limits.OperationStallTimeout, _time, _stop.Token))
        {
            return;
        }
        op.Complete(new TimeoutException(
            $"operation {op.Id} took none of the agent's frames for {_limits.OperationStallTimeout.TotalSeconds:0.#} s; the host gave it up"));
        End(op);
    }

    /// <summary>A frame for an id that is not open: dropped, and counted against the allowance for late frames.</summary>
    private void Late(Frame f)
    {
        long late = Interlocked.Add(ref _lateBytes, FrameOverhead + f.Payload.Length);
        if (late > Interlocked.Read(ref _lateAllowance))
        {
            Fail($"the agent sent {late} bytes of frames for operations that are not open");
        }
    }

    /// <summary>A frame on an id the agent opened. Runs on the reader loop: never blocks.</summary>
    private void OnAgentInitiated(Frame f)
    {
        if (f.Type != FrameType.Request)
        {
            if (_incoming.TryGetValue(f.Id, out var open))
            {
                open.Stream.Deliver(f);
            }
            else
            {
                Late(f);
            }
            return;
        }
        AgentRequest? request = null;
        string? refusal = null;
        string code = ErrorCodes.BadRequest;
        try
        {
            request = JsonSerializer.Deserialize(f.Payload.Span, ProtocolJson.Default.AgentRequest);
        }
        catch (JsonException e)
        {
            refusal = "malformed request: " + e.Message;
        }
        var handler = RequestHandler;
        if (refusal is not null)
        {
        }
        else if (request is null || string.IsNullOrEmpty(request.Op))
        {
            refusal = "request has no 'op'";
        }
        else if (handler is null)
        {
            (code, refusal) = (ErrorCodes.UnknownOp, $"the host serves no '{request.Op}' for this sandbox (it has no network)");
        }
        else if (_incoming.ContainsKey(f.Id))
        {
            (code, refusal) = (ErrorCodes.DuplicateId, $"operation {f.Id} is still open");
        }
        else if (_incoming.Count >= ProtocolInfo.MaxAgentOperations)
        {
            (code, refusal) = (ErrorCodes.TooManyStreams, $"{ProtocolInfo.MaxAgentOperations} agent operations are open, the most a sandbox may have");
        }
        if (refusal is not null)
        {
            Refuse(f.Id, code, refusal);
            return;
        }
        var incoming = new AgentIncomingRequest(_writer, f.Id, request!, _time);
        _incoming[f.Id] = incoming;
        _ = Task.Run(async () =>
        {
            try
            {
                await handler!.HandleAsync(incoming, _stop.Token);
                if (!incoming.IsAnswered)
                {
                    await incoming.FailAsync(ErrorCodes.Internal, "the host handler ended without a reply");
                }
            }
            catch (Exception e)
            {
                incoming.Stream.Abort(e.Message);
                await SendQuietlyAsync(() => new ValueTask(incoming.FailAsync(
                    e is OperationCanceledException ? ErrorCodes.Cancelled : ErrorCodes.Internal, e.Message)));
            }
            finally
            {
                _incoming.TryRemove(KeyValuePair.Create(incoming.Id, incoming));
                // Frames the agent had in flight on it (at most a credit window) are late, not hostile.
                Interlocked.Add(ref _lateAllowance, FrameStream.Window + FrameOverhead * 64);
            }
        }, CancellationToken.None);
    }

    /// <summary>
    /// Answers an agent-opened operation with an Error, without waiting for the write. An honest agent
    /// reads its answers; one that has more than <see cref="AgentClientLimits.MaxPendingRefusals"/>
    /// unwritten is not reading them, and is cut off.
    /// </summary>
    private void Refuse(uint id, string code, string message)
    {
        if (Interlocked.Increment(ref _pendingRefusals) > _limits.MaxPendingRefusals)
        {
            Interlocked.Decrement(ref _pendingRefusals);
            Fail($"the agent opened operations faster than it read the host's {_limits.MaxPendingRefusals} refusals");
            return;
        }
        _ = SendRefusalAsync(id, code, message);
    }

    private async Task SendRefusalAsync(uint id, string code, string message)
    {
        try
        {
            await SendQuietlyAsync(() => _writer.WriteJsonAsync(FrameType.Error, id, new ErrorBody { Code = code, Message = message }, ProtocolJson.Default.ErrorBody));
        }
        finally
        {
            Interlocked.Decrement(ref _pendingRefusals);
        }
    }

    private static async Task SendQuietlyAsync(Func<ValueTask> write)
    {
        try
        {
            await write();
        }
        catch (Exception e) when (e is IOException or ObjectDisposedException)
        {
            // The channel is gone (or timed out, which closed it).
        }
    }

    public async ValueTask DisposeAsync()
    {
        await _stop.CancelAsync();
        try
        {
            await _readLoop.WaitAsync(TimeSpan.FromSeconds(2));
        }
        catch (TimeoutException)
        {
            // A read blocked in the kernel; closing the streams (the VM's job) ends it.
        }
        await _writer.DisposeAsync();
        _stop.Dispose();
    }

    /// <summary>
    /// One host-opened operation: its frames, queued by the reader loop and taken by the operation's task,
    /// bounded in bytes (the reader waits for room rather than queue more).
    /// </summary>
    private sealed class Operation(uint id)
    {
        private readonly Channel<Frame> _frames = Channel.CreateUnbounded<Frame>(new UnboundedChannelOptions { SingleReader = true, SingleWriter = true });
        private readonly SemaphoreSlim _room = new(0, 1);
        private long _queued;
        private volatile bool _completed;

        public uint Id { get; } = id;

        /// <summary>The agent's closing frame (Response/Error) was taken: nothing more is coming.</summary>
        public bool Answered { get; set; }

        /// <summary>The host already told the agent to stop this operation.</summary>
        public bool CancelSent { get; set; }

        public bool HasQueued => _frames.Reader.TryPeek(out _);

        /// <summary>Reader loop. False when the operation took nothing for <paramref name="stall"/> (on <paramref name="time"/>) while full.</summary>
        public async ValueTask<bool> PostAsync(Frame f, int charge, int budget, TimeSpan stall, TimeProvider time, CancellationToken stop)
        {
            while (Interlocked.Read(ref _queued) is > 0 and var queued && queued + charge > budget)
            {
                if (_completed)
                {
                    return true; // ended meanwhile: the frame is dropped
                }
                using var stalled = new CancellationTokenSource(stall, time);
                using var wait = CancellationTokenSource.CreateLinkedTokenSource(stop, stalled.Token);
                try
                {
                    await _room.WaitAsync(wait.Token);
                }
                catch (OperationCanceledException) when (!stop.IsCancellationRequested)
                {
                    return false;
                }
            }
            Interlocked.Add(ref _queued, charge);
            if (!_frames.Writer.TryWrite(f))
            {
                Interlocked.Add(ref _queued, -charge);
            }
            return true;
        }

        public async ValueTask<Frame> ReadAsync(CancellationToken cancellationToken)
        {
            Frame f = await _frames.Reader.ReadAsync(cancellationToken);
            Interlocked.Add(ref _queued, -(FrameOverhead + f.Payload.Length));
            Wake();
            return f;
        }

        public void Complete(Exception? error)
        {
            _completed = true;
            _frames.Writer.TryComplete(error);
            Wake();
        }

        private void Wake()
        {
            try
            {
                _room.Release();
            }
            catch (SemaphoreFullException)
            {
                // A wake-up is pending already.
            }
        }
    }
}

/// <summary>A pseudo-terminal in the guest (<see cref="AgentClient.OpenTerminalAsync"/>): its byte stream and the program's end.</summary>
public sealed class Terminal(AgentClient agent, FrameStream stream, Task<PtyExit> exit)
{
    public AgentClient Agent { get; } = agent;
    public FrameStream Stream { get; } = stream;
    /// <summary>The program's end, after its last output; faults with the agent's refusal (e.g. command_not_found) or a cancel.</summary>
    public Task<PtyExit> Exit { get; } = exit;
}
