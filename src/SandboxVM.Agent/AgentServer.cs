using System.Collections.Concurrent;
using System.Text.Json;
using System.Text.Json.Serialization.Metadata;
using System.Threading.Channels;
using SandboxVM.Agent.Egress;
using SandboxVM.Agent.Operations;
using SandboxVM.Protocol;

namespace SandboxVM.Agent;

/// <summary>
/// Serves one connection: a single reader loop, each Request dispatched to its own task so operations
/// run side by side; Data/DataEnd/Cancel frames routed to the operation with their id.
/// Leniency: requests are served before (and without) a Hello; a second Hello is answered again.
/// A rejected frame (too large, unknown type) is answered with an Error and the loop goes on; only
/// the end of the stream ends <see cref="RunAsync"/>, after every operation was cancelled and every
/// process group the agent started was killed.
/// </summary>
internal sealed class AgentServer : IHostLink
{
    private delegate Task OperationHandler(OperationContext context, AgentState state);

    private static readonly Dictionary<string, OperationHandler> _handlers = new(StringComparer.Ordinal)
    {
        [Ops.Ping] = SystemOperations.PingAsync,
        [Ops.Exec] = ExecOperation.RunAsync,
        [Ops.FileWrite] = FileOperations.WriteAsync,
        [Ops.FileRead] = FileOperations.ReadAsync,
        [Ops.FileList] = FileOperations.ListAsync,
        [Ops.FileStat] = FileOperations.StatAsync,
        [Ops.FileRemove] = FileOperations.RemoveAsync,
        [Ops.FileMkdir] = FileOperations.MkdirAsync,
        [Ops.ArtifactsList] = FileOperations.ListArtifactsAsync,
        [Ops.Reinit] = SystemOperations.ReinitAsync,
        [Ops.EgressEnable] = SystemOperations.EgressEnableAsync,
        [Ops.CommandStart] = CommandOperations.StartAsync,
        [Ops.CommandGet] = CommandOperations.GetAsync,
        [Ops.CommandList] = CommandOperations.ListAsync,
        [Ops.CommandStdin] = CommandOperations.StdinAsync,
        [Ops.CommandSignal] = CommandOperations.SignalAsync,
        [Ops.PortOpen] = PortOperations.OpenAsync,
        [Ops.PtyOpen] = PtyOperations.OpenAsync,
        [Ops.PtyResize] = PtyOperations.ResizeAsync,
        [Ops.KernelStop] = SystemOperations.KernelStopAsync,
    };

    /// <summary>How long operations get to answer once the connection has ended.</summary>
    private static readonly TimeSpan _shutdownGrace = TimeSpan.FromSeconds(2);

    private readonly AgentState _state;
    private readonly FrameReader _reader;
    private readonly FrameWriter _writer;
    private readonly ConcurrentDictionary<uint, ActiveOperation> _active = new();
    private readonly ConcurrentDictionary<Task, bool> _running = new();
    private readonly CancellationTokenSource _closing = new();
    private readonly ConcurrentDictionary<uint, Outgoing> _outgoing = new();
    /// <summary>Streams the host opened (port_open): they outlive their operation's Response.</summary>
    private readonly ConcurrentDictionary<uint, FrameStream> _streams = new();
    private int _nextOutgoingId;

    public AgentServer(AgentState state, Stream input, Stream output)
    {
        _state = state;
        _reader = new FrameReader(input);
        _writer = new FrameWriter(output);
    }

    /// <summary>Operation names served, as announced in HelloReply.</summary>
    public static IReadOnlyCollection<string> Capabilities => _handlers.Keys;

    public async Task RunAsync(CancellationToken cancellationToken)
    {
        _state.Egress.Link = this;
        try
        {
            while (true)
            {
                ReadResult read;
                try
                {
                    read = await _reader.ReadAsync(cancellationToken);
                }
                catch (Exception e) when (e is EndOfStreamException or IOException)
                {
                    AgentLog.Write($"channel broken: {e.Message}");
                    break;
                }
                if (read.Outcome == ReadOutcome.EndOfStream)
                {
                    break;
                }
                try
                {
                    if (read.Outcome == ReadOutcome.Rejected)
                    {
                        await OnRejectedAsync(read, cancellationToken);
                    }
                    else
                    {
                        await OnFrameAsync(read.Frame, cancellationToken);
                    }
                }
                catch (IOException e)
                {
                    AgentLog.Write($"channel broken while answering: {e.Message}");
                    break;
                }
            }
        }
        finally
        {
            await ShutDownAsync();
        }
    }

    private async Task ShutDownAsync()
    {
        _state.Egress.Detach(this);
        await _closing.CancelAsync();
        foreach (var o in _outgoing.Values)
        {
            o.Reply.TrySetException(new AgentException(ErrorCodes.Cancelled, "the host connection ended"));
            o.Stream.Abort("the host connection ended");
        }
        _state.Supervisor.KillAll();
        var running = _running.Keys.ToArray();
        if (running.Length > 0)
        {
            await Task.WhenAny(Task.WhenAll(running), Task.Delay(_shutdownGrace, CancellationToken.None));
        }
        // Anything started while the operations wound down.
        _state.Supervisor.KillAll();
        await _state.Supervisor.WaitForChildrenAsync(TimeSpan.FromSeconds(1), CancellationToken.None);
    }

    private async Task OnFrameAsync(Frame frame, CancellationToken cancellationToken)
    {
        if (ProtocolInfo.IsAgentInitiated(frame.Id))
        {
            OnOutgoingFrame(frame);
            return;
        }
        if (frame.Type is FrameType.Data or FrameType.DataEnd or FrameType.Credit or FrameType.Cancel
            && _streams.TryGetValue(frame.Id, out var stream))
        {
            stream.Deliver(frame);
            return;
        }
        switch (frame.Type)
        {
            case FrameType.Hello:
                await OnHelloAsync(frame, cancellationToken);
                break;
            case FrameType.Request:
                await OnRequestAsync(frame, cancellationToken);
                break;
            case FrameType.Cancel:
                if (_active.TryGetValue(frame.Id, out var target))
                {
                    try
                    {
                        await target.Cancel.CancelAsync();
                    }
                    catch (ObjectDisposedException)
                    {
                        // It finished meanwhile: nothing left to cancel.
                    }
                }
                break;
            case FrameType.Data or FrameType.DataEnd:
                await RouteAsync(frame.Id, new InboxItem(frame), cancellationToken);
                break;
            default:
                // Frames only the agent sends (or an Error from the host): nothing to do with them.
                await SendErrorAsync(0, ErrorCodes.BadFrame, $"unexpected {frame.Type} frame for id {frame.Id}", cancellationToken);
                break;
        }
    }

    private async Task OnHelloAsync(Frame frame, CancellationToken cancellationToken)
    {
        Hello? hello;
        try
        {
            hello = JsonSerializer.Deserialize(frame.Payload.Span, ProtocolJson.Default.Hello);
        }
        catch (JsonException e)
        {
            await SendErrorAsync(frame.Id, ErrorCodes.BadRequest, $"malformed hello: {e.Message}", cancellationToken);
            return;
        }
        if (hello is null || hello.ProtocolVersion != ProtocolInfo.Version)
        {
            await SendErrorAsync(frame.Id, ErrorCodes.VersionMismatch,
                $"agent speaks protocol {ProtocolInfo.Version}, host asked for {hello?.ProtocolVersion}", cancellationToken);
            return;
        }
        var reply = new HelloReply
        {
            ProtocolVersion = ProtocolInfo.Version,
            AgentVersion = typeof(AgentServer).Assembly.GetName().Version?.ToString(3) ?? "0.0.0",
            Capabilities = [.. Capabilities],
            Pid = Environment.ProcessId,
        };
        await _writer.WriteJsonAsync(FrameType.HelloReply, frame.Id, reply, ProtocolJson.Default.HelloReply, cancellationToken);
    }

    private async Task OnRequestAsync(Frame frame, CancellationToken cancellationToken)
    {
        uint id = frame.Id;
        if (id == 0)
        {
            await SendErrorAsync(0, ErrorCodes.BadRequest, "id 0 is the connection; operations need another id", cancellationToken);
            return;
        }
        if (_active.ContainsKey(id))
        {
            await SendErrorAsync(id, ErrorCodes.DuplicateId, $"operation {id} is still running", cancellationToken);
            return;
        }
        AgentRequest? request;
        try
        {
            request = JsonSerializer.Deserialize(frame.Payload.Span, ProtocolJson.Default.AgentRequest);
        }
        catch (JsonException e)
        {
            await SendErrorAsync(id, ErrorCodes.BadRequest, $"malformed request: {e.Message}", cancellationToken);
            return;
        }
        if (request is null || string.IsNullOrEmpty(request.Op))
        {
            await SendErrorAsync(id, ErrorCodes.BadRequest, "request has no 'op'", cancellationToken);
            return;
        }
        if (!_handlers.TryGetValue(request.Op, out var handler))
        {
            await SendErrorAsync(id, ErrorCodes.UnknownOp, $"unknown op '{request.Op}'", cancellationToken);
            return;
        }

        FrameStream? stream = null;
        if (request.Op is Ops.PortOpen or Ops.PtyOpen)
        {
            if (_streams.Count >= ProtocolInfo.MaxAgentOperations)
            {
                await SendErrorAsync(id, ErrorCodes.TooManyStreams, $"{ProtocolInfo.MaxAgentOperations} port and terminal streams are open", cancellationToken);
                return;
            }
            stream = new FrameStream(_writer, id);
            _streams[id] = stream;
        }

        var cancel = CancellationTokenSource.CreateLinkedTokenSource(_closing.Token);
        // Only file_write consumes frames; a small bound makes a fast host wait for the disk.
        var inbox = request.Op == Ops.FileWrite
            ? Channel.CreateBounded<InboxItem>(new BoundedChannelOptions(16) { SingleReader = true, SingleWriter = true })
            : null;
        // Removal is by id and entry: once the terminal frame is out, the host may already reuse the id.
        ActiveOperation? entry = null;
        var context = new OperationContext(id, request, _writer, inbox?.Reader, cancel.Token, _ => Forget(entry!)) { Stream = stream };
        entry = new ActiveOperation(context, cancel, inbox);
        _active[id] = entry;
        var task = Task.Run(() => RunOperationAsync(entry, handler), CancellationToken.None);
        _running[task] = true;
        _ = task.ContinueWith(t => _running.TryRemove(t, out _), CancellationToken.None,
            TaskContinuationOptions.ExecuteSynchronously, TaskScheduler.Default);
    }

    private void Forget(ActiveOperation entry) =>
        _active.TryRemove(KeyValuePair.Create(entry.Context.Id, entry));

    private async Task RunOperationAsync(ActiveOperation entry, OperationHandler handler)
    {
        var (context, cancel, inbox) = entry;
        try
        {
            try
            {
                await handler(context, _state);
                if (!context.IsFinished)
                {
                    await context.FailAsync(ErrorCodes.Internal, "operation ended without a reply");
                }
            }
            catch (AgentException e)
            {
                await context.FailAsync(e.Code, e.Message);
            }
            catch (OperationCanceledException) when (cancel.IsCancellationRequested)
            {
                await context.FailAsync(AgentException.Cancelled, $"operation {context.Id} was cancelled");
            }
            catch (Exception e) when (AgentException.IsIo(e))
            {
                await context.FailAsync(ErrorCodes.IoError, e.Message);
            }
            catch (Exception e)
            {
                AgentLog.Write($"operation {context.Id} ({context.Request.Op}) failed: {e}");
                await context.FailAsync(ErrorCodes.Internal, e.Message);
            }
        }
        catch (Exception e) when (e is IOException or ObjectDisposedException)
        {
            AgentLog.Write($"operation {context.Id}: cannot send its reply: {e.Message}");
        }
        finally
        {
            Forget(entry);
            if (context.Stream is { } stream)
            {
                stream.Abort("the operation ended");
                _streams.TryRemove(KeyValuePair.Create(context.Id, stream));
            }
            // Releases the reader loop if it waits on a full inbox nobody reads any more.
            inbox?.Writer.TryComplete();
            cancel.Dispose();
        }
    }

    private async Task RouteAsync(uint id, InboxItem item, CancellationToken cancellationToken)
    {
        if (!_active.TryGetValue(id, out var target) || target.Inbox is null)
        {
            AgentLog.Write($"dropped {item.Frame.Type} frame for id {id}: no operation takes it");
            return;
        }
        try
        {
            await target.Inbox.Writer.WriteAsync(item, cancellationToken);
        }
        catch (ChannelClosedException)
        {
            // The operation finished meanwhile.
        }
    }

    /// <summary>
    /// The reader skipped a frame. A file_write whose frame it was fails with the error; for an id that
    /// is free, the Error carries that id; otherwise (a running op that takes no frames) it goes on id 0.
    /// </summary>
    private async Task OnRejectedAsync(ReadResult read, CancellationToken cancellationToken)
    {
        // The reader checks the size before the type: a known type means the frame was too large.
        string code = Enum.IsDefined(read.Frame.Type) ? ErrorCodes.FrameTooLarge : ErrorCodes.BadFrame;
        string message = read.Error ?? "rejected frame";
        uint id = read.Frame.Id;
        if (id != 0 && _active.TryGetValue(id, out var target))
        {
            if (target.Inbox is not null)
            {
                await RouteAsync(id, new InboxItem(read.Frame, new AgentException(code, message)), cancellationToken);
                return;
            }
            await SendErrorAsync(0, code, $"frame for operation {id}: {message}", cancellationToken);
            return;
        }
        await SendErrorAsync(id, code, message, cancellationToken);
    }

    /// <summary>A frame on an id the agent opened: the host's answer, or stream traffic. Never blocks.</summary>
    private void OnOutgoingFrame(Frame frame)
    {
        if (!_outgoing.TryGetValue(frame.Id, out var o))
        {
            return;
        }
        switch (frame.Type)
        {
            case FrameType.Response or FrameType.Error:
                o.Reply.TrySetResult(frame);
                break;
            case FrameType.Data or FrameType.DataEnd or FrameType.Credit or FrameType.Cancel:
                o.Stream.Deliver(frame);
                break;
        }
    }

    /// <inheritdoc />
    public async Task<FrameStream> OpenAsync(AgentRequest request, CancellationToken cancellationToken)
    {
        var (o, reply) = await CallRawAsync(request, cancellationToken);
        if (reply.Type == FrameType.Response)
        {
            // The caller relays and then calls Release.
            return o.Stream;
        }
        Release(o.Stream.Id);
        throw ToException(reply);
    }

    /// <inheritdoc />
    public async Task<T> CallAsync<T>(AgentRequest request, JsonTypeInfo<T> replyType, CancellationToken cancellationToken)
    {
        var (o, reply) = await CallRawAsync(request, cancellationToken);
        Release(o.Stream.Id);
        if (reply.Type != FrameType.Response)
        {
            throw ToException(reply);
        }
        try
        {
            return JsonSerializer.Deserialize(reply.Payload.Span, replyType) ?? throw new AgentException(ErrorCodes.BadFrame, "empty reply from the host");
        }
        catch (JsonException e)
        {
            throw new AgentException(ErrorCodes.BadFrame, $"malformed reply from the host: {e.Message}");
        }
    }

    /// <inheritdoc />
    public void Release(uint id) => _outgoing.TryRemove(id, out _);

    private async Task<(Outgoing Op, Frame Reply)> CallRawAsync(AgentRequest request, CancellationToken cancellationToken)
    {
        if (_closing.IsCancellationRequested)
        {
            throw new AgentException(ErrorCodes.Cancelled, "the host connection ended");
        }
        uint id = ProtocolInfo.AgentIdBit | ((uint)Interlocked.Increment(ref _nextOutgoingId) & ~ProtocolInfo.AgentIdBit);
        var o = new Outgoing(new FrameStream(_writer, id), new TaskCompletionSource<Frame>(TaskCreationOptions.RunContinuationsAsynchronously));
        _outgoing[id] = o;
        try
        {
            await _writer.WriteJsonAsync(FrameType.Request, id, request, ProtocolJson.Default.AgentRequest, cancellationToken);
            using var linked = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken, _closing.Token);
            Frame reply = await o.Reply.Task.WaitAsync(linked.Token);
            return (o, reply);
        }
        catch (OperationCanceledException) when (!cancellationToken.IsCancellationRequested)
        {
            Release(id);
            throw new AgentException(ErrorCodes.Cancelled, "the host connection ended");
        }
        catch
        {
            // The host may still answer; a Cancel tells it to drop whatever it opened.
            Release(id);
            try
            {
                await _writer.WriteAsync(FrameType.Cancel, id, ReadOnlyMemory<byte>.Empty, CancellationToken.None);
            }
            catch (Exception e) when (e is IOException or ObjectDisposedException)
            {
            }
            throw;
        }
    }

    private static AgentException ToException(Frame reply)
    {
        try
        {
            var body = JsonSerializer.Deserialize(reply.Payload.Span, ProtocolJson.Default.ErrorBody);
            return new AgentException(body?.Code ?? ErrorCodes.Internal, body?.Message ?? "");
        }
        catch (JsonException e)
        {
            return new AgentException(ErrorCodes.BadFrame, $"malformed error from the host: {e.Message}");
        }
    }

    private sealed record Outgoing(FrameStream Stream, TaskCompletionSource<Frame> Reply);

    private ValueTask SendErrorAsync(uint id, string code, string message, CancellationToken cancellationToken) =>
        _writer.WriteJsonAsync(FrameType.Error, id, new ErrorBody { Code = code, Message = message }, ProtocolJson.Default.ErrorBody, cancellationToken);

    private sealed record ActiveOperation(OperationContext Context, CancellationTokenSource Cancel, Channel<InboxItem>? Inbox);
}
