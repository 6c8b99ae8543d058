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

/// <summary>The channel to the agent broke: the VM or process is gone.</summary>
public sealed class AgentDisconnectedException(string message, Exception? inner = null) : Exception(message, inner);

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

    internal AgentIncomingRequest(FrameWriter writer, uint id, AgentRequest request)
    {
        _writer = writer;
        Id = id;
        Request = request;
        Stream = new FrameStream(writer, id);
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
public sealed class AgentClient : IAsyncDisposable
{
    private readonly FrameReader _reader;
    private readonly FrameWriter _writer;
    private readonly ConcurrentDictionary<uint, Channel<Frame>> _pending = new();
    private readonly ConcurrentDictionary<uint, AgentIncomingRequest> _incoming = new();
    private readonly CancellationTokenSource _stop = new();
    private readonly TaskCompletionSource<HelloReply> _hello = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private readonly Task _readLoop;
    private int _nextId;
    private volatile Exception? _broken;

    public AgentClient(Stream fromAgent, Stream toAgent)
    {
        _reader = new FrameReader(fromAgent);
        _writer = new FrameWriter(toAgent);
        _readLoop = Task.Run(ReadLoopAsync);
    }

    /// <summary>Completes when the channel is closed or broken.</summary>
    public Task Completion => _readLoop;

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
    public async Task<ExecResult> ExecAsync(ExecRequest request, IExecObserver observer, CancellationToken cancellationToken)
    {
        var (id, frames) = Open();
        try
        {
            await SendRequestAsync(id, new AgentRequest { Op = Ops.Exec, Exec = request });
            using var onCancel = cancellationToken.Register(() =>
                _ = _writer.WriteAsync(FrameType.Cancel, id, ReadOnlyMemory<byte>.Empty).AsTask());
            while (true)
            {
                Frame f = await ReadFrameAsync(frames);
                switch (f.Type)
                {
                    case FrameType.Stdout:
                        observer.OnStdout(f.Payload.Span);
                        break;
                    case FrameType.Stderr:
                        observer.OnStderr(f.Payload.Span);
                        break;
                    case FrameType.Event:
                        observer.OnEvent(Parse(f, ProtocolJson.Default.ExecEvent));
                        break;
                    case FrameType.Response:
                        return Parse(f, ProtocolJson.Default.ExecResult);
                    case FrameType.Error:
                        throw ToException(f);
                }
            }
        }
        finally
        {
            _pending.TryRemove(id, out _);
        }
    }

    /// <summary>Streams <paramref name="content"/> into a file in the guest.</summary>
    public async Task<FileInfoBody> WriteFileAsync(string path, Stream content, CancellationToken cancellationToken)
    {
        var (id, frames) = Open();
        try
        {
            await SendRequestAsync(id, new AgentRequest { Op = Ops.FileWrite, File = new FileRequest { Path = path } });
            byte[] buffer = new byte[Frame.ChunkSize];
            int n;
            while ((n = await content.ReadAsync(buffer, cancellationToken)) > 0)
            {
                // An early error (bad path) arrives before we finish sending: stop there.
                if (frames.Reader.TryPeek(out Frame early) && early.Type == FrameType.Error)
                {
                    break;
                }
                await SendAsync(() => _writer.WriteAsync(FrameType.Data, id, buffer.AsMemory(0, n), cancellationToken));
            }
            await SendAsync(() => _writer.WriteAsync(FrameType.DataEnd, id, ReadOnlyMemory<byte>.Empty, cancellationToken));
            Frame f = await ReadFrameAsync(frames).WaitAsync(cancellationToken);
            return f.Type == FrameType.Response ? Parse(f, ProtocolJson.Default.FileInfoBody) : throw ToException(f);
        }
        finally
        {
            _pending.TryRemove(id, out _);
        }
    }

    /// <summary>Streams a guest file into <paramref name="destination"/>.</summary>
    public async Task<FileInfoBody> ReadFileAsync(string path, Stream destination, CancellationToken cancellationToken)
    {
        var (id, frames) = Open();
        try
        {
            await SendRequestAsync(id, new AgentRequest { Op = Ops.FileRead, File = new FileRequest { Path = path } });
            while (true)
            {
                Frame f = await ReadFrameAsync(frames).WaitAsync(cancellationToken);
                switch (f.Type)
                {
                    case FrameType.Data:
                        await destination.WriteAsync(f.Payload, cancellationToken);
                        break;
                    case FrameType.Response:
                        return Parse(f, ProtocolJson.Default.FileInfoBody);
                    case FrameType.Error:
                        throw ToException(f);
                }
            }
        }
        finally
        {
            _pending.TryRemove(id, out _);
        }
    }

    private async Task<T> CallAsync<T>(AgentRequest request, JsonTypeInfo<T> replyType, CancellationToken cancellationToken)
    {
        var (id, frames) = Open();
        try
        {
            await SendRequestAsync(id, request);
            Frame f = await ReadFrameAsync(frames).WaitAsync(cancellationToken);
            return f.Type == FrameType.Response ? Parse(f, replyType) : throw ToException(f);
        }
        finally
        {
            _pending.TryRemove(id, out _);
        }
    }

    private (uint Id, Channel<Frame> Frames) Open()
    {
        if (_broken is { } e)
        {
            throw new AgentDisconnectedException("agent channel is closed", e);
        }
        uint id = (uint)Interlocked.Increment(ref _nextId);
        var frames = Channel.CreateUnbounded<Frame>(new UnboundedChannelOptions { SingleReader = true, SingleWriter = true });
        _pending[id] = frames;
        if (_broken is not null)
        {
            // The reader loop ended between the check above and the registration.
            frames.Writer.TryComplete();
        }
        return (id, frames);
    }

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
            throw new AgentDisconnectedException("agent channel broke while sending", e);
        }
        catch (ObjectDisposedException e)
        {
            throw new AgentDisconnectedException("agent channel is closed", e);
        }
    }

    private async Task<Frame> ReadFrameAsync(Channel<Frame> frames)
    {
        try
        {
            return await frames.Reader.ReadAsync();
        }
        catch (ChannelClosedException e)
        {
            throw new AgentDisconnectedException("agent channel closed during the operation", _broken ?? e);
        }
    }

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
                    throw new AgentException(ErrorCodes.BadFrame, r.Error ?? "bad frame from agent");
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
                else if (_pending.TryGetValue(f.Id, out var channel))
                {
                    channel.Writer.TryWrite(f);
                }
                // Frames for an operation we gave up on (cancelled read) are dropped.
            }
        }
        catch (OperationCanceledException) when (_stop.IsCancellationRequested)
        {
        }
        catch (Exception e)
        {
            failure = e;
        }
        _broken = failure ?? new EndOfStreamException("agent closed the channel");
        _hello.TrySetException(new AgentDisconnectedException("agent closed the channel before hello", failure));
        foreach (var channel in _pending.Values)
        {
            channel.Writer.TryComplete();
        }
        foreach (var incoming in _incoming.Values)
        {
            incoming.Stream.Abort("the agent channel closed");
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
            // Late frames of a finished operation are dropped.
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
            _ = SendQuietlyAsync(() => _writer.WriteJsonAsync(FrameType.Error, f.Id, new ErrorBody { Code = code, Message = refusal }, ProtocolJson.Default.ErrorBody));
            return;
        }
        var incoming = new AgentIncomingRequest(_writer, f.Id, request!);
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
            }
        }, CancellationToken.None);
    }

    private static async Task SendQuietlyAsync(Func<ValueTask> write)
    {
        try
        {
            await write();
        }
        catch (Exception e) when (e is IOException or ObjectDisposedException)
        {
            // The channel is gone.
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
}
