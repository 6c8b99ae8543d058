using System.Collections.Concurrent;
using System.Net.Sockets;
using System.Security.Cryptography;
using System.Text;
using System.Text.Json.Serialization.Metadata;
using System.Threading.Channels;
using SandboxVM.Protocol;

namespace SandboxVM.Testing;

/// <summary>
/// A guest agent played by a test: the real frame protocol over a Unix socket pair (QEMU's agent port is
/// one too), so the host's <c>AgentClient</c> and everything above it run unchanged. Honest by default
/// (hello, ping, an exec that prints <see cref="Stdout"/> and lists the files under its outputs directory,
/// file read/write/stat/list from <see cref="Files"/>); a test holds execs open with <see cref="ExecGate"/>,
/// asks the host for a search as the guest's proxy would (<see cref="SearchAsync"/>), replaces
/// <see cref="Handler"/> (per op) or writes raw frames with <see cref="Writer"/> to play a hostile guest.
/// </summary>
public sealed class FakeAgent : IAsyncDisposable
{
    private readonly Socket _socket;
    private readonly NetworkStream _stream;
    private readonly FrameReader _reader;
    private readonly ConcurrentDictionary<uint, FakeOperation> _ops = new();
    private readonly ConcurrentDictionary<uint, TaskCompletionSource> _cancelled = new();
    private readonly TaskCompletionSource _closed = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private readonly CancellationTokenSource _dispose = new();
    private readonly CancellationTokenSource _readStop;
    private readonly List<Task> _tasks = [];
    private readonly SemaphoreSlim _answers = new(0);
    private readonly ConcurrentDictionary<uint, TaskCompletionSource<Frame>> _outgoing = new();
    private Task _loop = Task.CompletedTask;
    private long _framesReceived;
    private uint _nextOutgoing;
    private int _execs;

    public FakeAgent(Socket socket)
    {
        _socket = socket;
        _stream = new NetworkStream(socket, ownsSocket: false);
        _reader = new FrameReader(_stream);
        Writer = new FrameWriter(_stream);
        Handler = HonestAsync;
        _readStop = CancellationTokenSource.CreateLinkedTokenSource(_dispose.Token);
    }

    /// <summary>Files of the guest, by absolute path (relative paths are under <see cref="Home"/>).</summary>
    public ConcurrentDictionary<string, byte[]> Files { get; } = new(StringComparer.Ordinal);

    public const string Home = "/home/sandbox";

    /// <summary>What the honest exec prints.</summary>
    public string Stdout { get; set; } = "hello\n";

    /// <summary>Awaited by every honest exec (after it is counted) before it answers: tests hold runs open with it.</summary>
    public Func<Task> ExecGate { get; set; } = () => Task.CompletedTask;

    /// <summary>Exec requests the honest agent received.</summary>
    public int Execs => Volatile.Read(ref _execs);

    /// <summary>Serves each operation the host opens, on a task of its own. Default: <see cref="HonestAsync"/>.</summary>
    public Func<FakeOperation, Task> Handler { get; set; }

    /// <summary>Serves <paramref name="op"/> with <paramref name="handler"/> and every other op honestly.</summary>
    public void Override(string op, Func<FakeOperation, Task> handler) =>
        Handler = o => o.Request.Op == op ? handler(o) : HonestAsync(o);

    /// <summary>Writes frames to the host (the guest's side of the channel), for raw hostile frames.</summary>
    public FrameWriter Writer { get; }

    /// <summary>The guest's end of the channel, for bytes that are no frame (a lying length prefix).</summary>
    public Stream RawStream => _stream;

    /// <summary>Cancelled when the agent is disposed (its VM killed): a guest's "forever".</summary>
    public CancellationToken Stopping => _dispose.Token;

    /// <summary>Every request the host sent, in order.</summary>
    public ConcurrentQueue<AgentRequest> Requests { get; } = new();

    /// <summary>Frames of any kind read from the host.</summary>
    public long FramesReceived => Interlocked.Read(ref _framesReceived);

    /// <summary>Waits for <paramref name="count"/> more answers (Response or Error) of the host to operations the agent opened.</summary>
    public async Task WaitForAnswersAsync(int count, TimeSpan timeout, CancellationToken cancellationToken)
    {
        for (int i = 0; i < count; i++)
        {
            if (!await _answers.WaitAsync(timeout, cancellationToken))
            {
                throw new TimeoutException($"the host answered {i} of {count} agent requests within {timeout.TotalSeconds:0.#} s");
            }
        }
    }

    /// <summary>
    /// What the guest's search proxy does: asks the host to search (an agent-initiated request) and
    /// returns its answer, a Response (<see cref="SearchReply"/>) or an Error (<see cref="ErrorBody"/>) frame.
    /// </summary>
    public async Task<Frame> SearchAsync(string query, CancellationToken cancellationToken, int maxResults = 3)
    {
        uint id = ProtocolInfo.AgentIdBit | Interlocked.Increment(ref _nextOutgoing);
        var answer = new TaskCompletionSource<Frame>(TaskCreationOptions.RunContinuationsAsynchronously);
        _outgoing[id] = answer;
        await Writer.WriteJsonAsync(FrameType.Request, id, new AgentRequest { Op = Ops.Search, Search = new SearchRequest { Query = query, MaxResults = maxResults } },
            ProtocolJson.Default.AgentRequest, cancellationToken);
        return await answer.Task.WaitAsync(cancellationToken);
    }

    /// <summary>Completes when the host closed the channel (its end of the socket): the VM was killed or disposed.</summary>
    public Task Closed => _closed.Task;

    /// <summary>
    /// Whether the host sends (or sent) Cancel for operation <paramref name="id"/>, waiting up to
    /// <paramref name="timeout"/> for the frame to be read. The agent reads everything the host sent
    /// before its end closed, also when it is being killed.
    /// </summary>
    public async Task<bool> WasCancelledAsync(uint id, TimeSpan timeout)
    {
        var seen = _cancelled.GetOrAdd(id, _ => new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously));
        return await Task.WhenAny(seen.Task, Task.Delay(timeout)) == seen.Task;
    }

    /// <summary>From now on the guest reads nothing the host writes (a guest that never reads).</summary>
    public void StopReading() => _readStop.Cancel();

    /// <summary>Set to stop reading right after hello.</summary>
    public bool NeverReadAfterHello { get; set; }

    public void Start() => _loop = Task.Run(ReadLoopAsync);

    /// <summary>Runs <paramref name="work"/> next to the agent (a daemon of the guest); awaited at dispose.</summary>
    public void Spawn(Func<CancellationToken, Task> work)
    {
        lock (_tasks)
        {
            _tasks.Add(Task.Run(() => work(_dispose.Token)));
        }
    }

    private async Task ReadLoopAsync()
    {
        try
        {
            while (true)
            {
                var read = await _reader.ReadAsync(_readStop.Token);
                if (read.Outcome == ReadOutcome.EndOfStream)
                {
                    break;
                }
                Interlocked.Increment(ref _framesReceived);
                if (read.Outcome == ReadOutcome.Frame)
                {
                    await OnFrameAsync(read.Frame);
                }
            }
        }
        catch (OperationCanceledException) when (_readStop.IsCancellationRequested && !_dispose.IsCancellationRequested)
        {
            // A guest that stopped reading: it holds the channel open, unread, until it is killed.
            await Task.Delay(Timeout.Infinite, _dispose.Token).ContinueWith(_ => { }, TaskScheduler.Default);
        }
        catch (Exception e) when (e is IOException or ObjectDisposedException or OperationCanceledException or SocketException or EndOfStreamException)
        {
        }
        _closed.TrySetResult();
        foreach (var op in _ops.Values)
        {
            op.Abort();
        }
    }

    private async Task OnFrameAsync(Frame frame)
    {
        switch (frame.Type)
        {
            case FrameType.Hello:
                await Writer.WriteJsonAsync(FrameType.HelloReply, 0,
                    new HelloReply { ProtocolVersion = ProtocolInfo.Version, AgentVersion = "fake" }, ProtocolJson.Default.HelloReply);
                if (NeverReadAfterHello)
                {
                    StopReading();
                }
                break;
            case FrameType.Request:
                var request = System.Text.Json.JsonSerializer.Deserialize(frame.Payload.Span, ProtocolJson.Default.AgentRequest)!;
                Requests.Enqueue(request);
                var op = new FakeOperation(this, frame.Id, request);
                _ops[frame.Id] = op;
                Spawn(async stopping =>
                {
                    try
                    {
                        await Handler(op);
                    }
                    catch (Exception e) when (e is IOException or ObjectDisposedException or OperationCanceledException or SocketException)
                    {
                        // The host went away or cancelled: a guest does not care.
                    }
                    finally
                    {
                        _ops.TryRemove(frame.Id, out _);
                    }
                });
                break;
            case FrameType.Cancel:
                _cancelled.GetOrAdd(frame.Id, _ => new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously)).TrySetResult();
                if (_ops.TryGetValue(frame.Id, out var cancelled))
                {
                    cancelled.Cancel();
                }
                break;
            case FrameType.Response or FrameType.Error when ProtocolInfo.IsAgentInitiated(frame.Id):
                if (_outgoing.TryRemove(frame.Id, out var waiter))
                {
                    waiter.TrySetResult(new Frame(frame.Type, frame.Id, frame.Payload.ToArray()));
                }
                _answers.Release();
                break;
            case FrameType.Data or FrameType.DataEnd:
                if (_ops.TryGetValue(frame.Id, out var target))
                {
                    target.Inbox.Writer.TryWrite(frame);
                }
                break;
        }
    }

    /// <summary>The honest agent: what the real one answers, from <see cref="Files"/>.</summary>
    public async Task HonestAsync(FakeOperation op)
    {
        var r = op.Request;
        switch (r.Op)
        {
            case Ops.Ping or Ops.Reinit:
                await op.RespondAsync(new OkBody(), ProtocolJson.Default.OkBody);
                break;
            case Ops.EgressEnable:
                await op.RespondAsync(new EgressEnableReply { Listen = r.EgressEnable?.Listen ?? "" }, ProtocolJson.Default.EgressEnableReply);
                break;
            case Ops.Exec:
                await HonestExecAsync(op);
                break;
            case Ops.FileRead:
                await HonestReadAsync(op);
                break;
            case Ops.FileStat:
                if (Describe(Resolve(r.File!.Path)) is { } info)
                {
                    await op.RespondAsync(info, ProtocolJson.Default.FileInfoBody);
                }
                else
                {
                    await op.FailAsync(ErrorCodes.NotFound, "no such file or directory");
                }
                break;
            case Ops.FileWrite:
                await HonestWriteAsync(op);
                break;
            case Ops.FileRemove:
                Files.TryRemove(Resolve(r.File!.Path), out _);
                await op.RespondAsync(new OkBody(), ProtocolJson.Default.OkBody);
                break;
            case Ops.FileMkdir:
                await op.RespondAsync(new FileInfoBody { Path = Resolve(r.File!.Path), Name = Path.GetFileName(r.File.Path), Kind = FileKind.Directory },
                    ProtocolJson.Default.FileInfoBody);
                break;
            case Ops.FileList:
                string dir = Resolve(r.File!.Path).TrimEnd('/') + "/";
                await op.RespondAsync(new FileListBody
                {
                    Path = dir.TrimEnd('/'),
                    Entries = [.. Files.Keys.Where(k => k.StartsWith(dir, StringComparison.Ordinal)).Order(StringComparer.Ordinal).Select(k => Describe(k)!)],
                }, ProtocolJson.Default.FileListBody);
                break;
            case Ops.ArtifactsList:
                await op.RespondAsync(new ArtifactListBody { Artifacts = ListArtifacts("/tmp/outputs") }, ProtocolJson.Default.ArtifactListBody);
                break;
            default:
                await op.FailAsync(ErrorCodes.UnknownOp, $"the fake agent serves no '{r.Op}'");
                break;
        }
    }

    /// <summary>Events, the configured stdout, and a result listing the outputs directory's files (hashed now).</summary>
    public async Task HonestExecAsync(FakeOperation op)
    {
        var exec = op.Request.Exec!;
        Interlocked.Increment(ref _execs);
        await ExecGate();
        foreach (var (name, content) in exec.Files)
        {
            Files[Path.Combine(exec.Cwd, name)] = Encoding.UTF8.GetBytes(content);
        }
        if (exec.Compile is not null)
        {
            await op.EventAsync("compile_started");
        }
        await op.EventAsync("run_started");
        if (Stdout.Length > 0)
        {
            await op.SendAsync(FrameType.Stdout, Encoding.UTF8.GetBytes(Stdout));
        }
        await op.RespondAsync(new ExecResult
        {
            Compile = exec.Compile is null ? null : new StepResult { Reason = TerminationReason.Exited, ExitCode = 0, DurationMs = 1 },
            Run = new StepResult { Reason = TerminationReason.Exited, ExitCode = 0, DurationMs = 1 },
            Artifacts = ListArtifacts(exec.OutputsDir),
        }, ProtocolJson.Default.ExecResult);
    }

    private async Task HonestReadAsync(FakeOperation op)
    {
        if (!Files.TryGetValue(Resolve(op.Request.File!.Path), out var content))
        {
            await op.FailAsync(ErrorCodes.NotFound, "no such file or directory");
            return;
        }
        for (int offset = 0; offset < content.Length; offset += Frame.ChunkSize)
        {
            await op.SendAsync(FrameType.Data, content.AsMemory(offset, Math.Min(Frame.ChunkSize, content.Length - offset)));
        }
        await op.SendAsync(FrameType.DataEnd, ReadOnlyMemory<byte>.Empty);
        await op.RespondAsync(Describe(Resolve(op.Request.File.Path))!, ProtocolJson.Default.FileInfoBody);
    }

    private async Task HonestWriteAsync(FakeOperation op)
    {
        var content = new MemoryStream();
        await foreach (var frame in op.Inbox.Reader.ReadAllAsync(op.Cancelled))
        {
            if (frame.Type == FrameType.DataEnd)
            {
                break;
            }
            content.Write(frame.Payload.Span);
        }
        string path = Resolve(op.Request.File!.Path);
        Files[path] = content.ToArray();
        await op.RespondAsync(Describe(path)!, ProtocolJson.Default.FileInfoBody);
    }

    /// <summary>Files under <paramref name="dir"/> with their size and hash, as the agent lists artifacts.</summary>
    public List<ArtifactInfo> ListArtifacts(string dir) =>
    [
        .. Files.Where(f => f.Key.StartsWith(dir.TrimEnd('/') + "/", StringComparison.Ordinal))
            .OrderBy(f => f.Key, StringComparer.Ordinal)
            .Select(f => new ArtifactInfo { Path = f.Key, Size = f.Value.Length, Sha256 = Convert.ToHexStringLower(SHA256.HashData(f.Value)) }),
    ];

    public static string Resolve(string path) => path.StartsWith('/') ? path : Home + "/" + path;

    private FileInfoBody? Describe(string path)
    {
        if (Files.TryGetValue(path, out var content))
        {
            return new FileInfoBody { Path = path, Name = Path.GetFileName(path), Kind = FileKind.File, Size = content.Length, MtimeMs = 1 };
        }
        string prefix = path.TrimEnd('/') + "/";
        return Files.Keys.Any(k => k.StartsWith(prefix, StringComparison.Ordinal))
            ? new FileInfoBody { Path = path, Name = Path.GetFileName(path.TrimEnd('/')), Kind = FileKind.Directory, MtimeMs = 1 }
            : null;
    }

    /// <summary>The guest's end of the connection goes away at once, as when the VM dies: the host reads end of stream.</summary>
    public void Crash()
    {
        try
        {
            _socket.Shutdown(SocketShutdown.Both);
        }
        catch (SocketException)
        {
        }
    }

    public async ValueTask DisposeAsync()
    {
        if (!_readStop.IsCancellationRequested)
        {
            // The host's end is closed first (the kill): read what it sent before, up to the end of the stream.
            await _closed.Task.WaitAsync(TimeSpan.FromSeconds(5)).ContinueWith(_ => { }, TaskScheduler.Default);
        }
        await _dispose.CancelAsync();
        try
        {
            _socket.Shutdown(SocketShutdown.Both);
        }
        catch (SocketException)
        {
        }
        _socket.Dispose();
        Task[] tasks;
        lock (_tasks)
        {
            tasks = [.. _tasks, _loop];
        }
        await Task.WhenAll(tasks).WaitAsync(TimeSpan.FromSeconds(5)).ContinueWith(_ => { }, TaskScheduler.Default);
        await _stream.DisposeAsync();
        _closed.TrySetResult();
    }

    /// <summary>Two connected Unix stream sockets (the host's end and the guest's).</summary>
    public static (Socket Host, Socket Guest) SocketPair()
    {
        string path = Path.Combine(Path.GetTempPath(), "sbx-fake-" + Guid.NewGuid().ToString("N")[..16] + ".sock");
        using var listener = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
        listener.Bind(new UnixDomainSocketEndPoint(path));
        listener.Listen(1);
        var host = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
        host.Connect(new UnixDomainSocketEndPoint(path));
        var guest = listener.Accept();
        File.Delete(path);
        return (host, guest);
    }
}

/// <summary>One operation the host opened on a <see cref="FakeAgent"/>.</summary>
public sealed class FakeOperation
{
    private readonly FakeAgent _agent;
    private readonly CancellationTokenSource _cancel = new();

    internal FakeOperation(FakeAgent agent, uint id, AgentRequest request)
    {
        _agent = agent;
        Id = id;
        Request = request;
    }

    public uint Id { get; }

    public AgentRequest Request { get; }

    /// <summary>Data and DataEnd frames the host sent on this id.</summary>
    public Channel<Frame> Inbox { get; } = Channel.CreateUnbounded<Frame>();

    /// <summary>Cancelled when the host sends Cancel for this id (or the channel closes).</summary>
    public CancellationToken Cancelled => _cancel.Token;

    internal void Cancel() => _cancel.Cancel();

    internal void Abort()
    {
        Inbox.Writer.TryComplete();
        _cancel.Cancel();
    }

    public ValueTask SendAsync(FrameType type, ReadOnlyMemory<byte> payload) => _agent.Writer.WriteAsync(type, Id, payload);

    public ValueTask RespondAsync<T>(T body, JsonTypeInfo<T> type) => _agent.Writer.WriteJsonAsync(FrameType.Response, Id, body, type);

    public ValueTask FailAsync(string code, string message) =>
        _agent.Writer.WriteJsonAsync(FrameType.Error, Id, new ErrorBody { Code = code, Message = message }, ProtocolJson.Default.ErrorBody);

    public ValueTask EventAsync(string kind) => _agent.Writer.WriteJsonAsync(FrameType.Event, Id, new ExecEvent { Kind = kind }, ProtocolJson.Default.ExecEvent);
}
