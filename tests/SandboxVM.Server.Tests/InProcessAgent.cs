using System.Collections.Concurrent;
using System.IO.Pipes;
using System.Security.Cryptography;
using System.Text.Json;
using SandboxVM.Protocol;
using SandboxVM.Runtime;
using SandboxVM.Runtime.Agent;

namespace SandboxVM.Server.Tests;

/// <summary>
/// A runtime whose sandboxes are in-process fake agents speaking the real protocol: exec answers with
/// a fixed stdout, files live in a dictionary, and the guest side can open agent-initiated operations
/// (search) as a real agent's proxy would. Fast enough for every HTTP test.
/// </summary>
internal sealed class InProcessAgentRuntime : IVmRuntime
{
    private int _started;

    public string Name => "fake";
    public RuntimeCapabilities Capabilities { get; } = new(IsolationLevel.Vm, false, false, true);
    public string? Accel => null;

    public ConcurrentQueue<InProcessAgentVm> Vms { get; } = new();

    /// <summary>Files every new sandbox starts with (guest path to content).</summary>
    public Dictionary<string, byte[]> InitialFiles { get; } = new(StringComparer.Ordinal);

    /// <summary>Awaited by every exec before it answers; tests hold runs open with it.</summary>
    public Func<Task> ExecGate { get; set; } = () => Task.CompletedTask;

    /// <summary>Execs every sandbox of this runtime has received.</summary>
    public int Execs => Vms.Sum(v => v.Execs);

    public async Task<IVm> StartAsync(VmSpec spec, CancellationToken cancellationToken)
    {
        var vm = new InProcessAgentVm($"fake-{Interlocked.Increment(ref _started)}", spec.TemplateName, this);
        await vm.Agent.HelloAsync(cancellationToken);
        Vms.Enqueue(vm);
        return vm;
    }

    public Task<int> CleanupLeftoversAsync(CancellationToken cancellationToken) => Task.FromResult(0);
}

internal sealed class InProcessAgentVm : IVm
{
    private readonly AnonymousPipeServerStream _toAgent = new(PipeDirection.Out);
    private readonly AnonymousPipeServerStream _fromAgent = new(PipeDirection.In);
    private readonly AnonymousPipeClientStream _agentIn;
    private readonly AnonymousPipeClientStream _agentOut;
    private readonly FrameWriter _writer;
    private readonly SemaphoreSlim _writeLock = new(1, 1);
    private readonly TaskCompletionSource _exited = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private readonly ConcurrentDictionary<uint, TaskCompletionSource<Frame>> _outgoing = new();
    private readonly ConcurrentDictionary<uint, MemoryStream> _uploads = new();
    private readonly InProcessAgentRuntime _runtime;
    private readonly Task _loop;
    private uint _nextOutgoing;
    private int _execs;

    public InProcessAgentVm(string id, string template, InProcessAgentRuntime runtime)
    {
        Id = id;
        TemplateName = template;
        _runtime = runtime;
        foreach (var (path, content) in runtime.InitialFiles)
        {
            Files[path] = content;
        }
        _agentIn = new AnonymousPipeClientStream(PipeDirection.In, _toAgent.ClientSafePipeHandle);
        _agentOut = new AnonymousPipeClientStream(PipeDirection.Out, _fromAgent.ClientSafePipeHandle);
        _writer = new FrameWriter(_agentOut);
        Agent = new AgentClient(_fromAgent, _toAgent);
        _loop = Task.Run(ServeAsync);
    }

    public string Id { get; }
    public string TemplateName { get; }
    public VmSource Source => VmSource.Boot;
    public AgentClient Agent { get; }
    public TimeSpan StartupTime => TimeSpan.Zero;
    public Task Exited => _exited.Task;
    public VmUsage ReadUsage() => new(0, null);
    public int Execs => Volatile.Read(ref _execs);

    /// <summary>The guest's files by absolute path.</summary>
    public ConcurrentDictionary<string, byte[]> Files { get; } = new(StringComparer.Ordinal);

    /// <summary>
    /// What the guest's search proxy would do: asks the host to search; the host's Response
    /// (<see cref="SearchReply"/>) or Error (<see cref="ErrorBody"/>) frame comes back.
    /// </summary>
    public async Task<Frame> SearchFromGuestAsync(string query, CancellationToken cancellationToken)
    {
        uint id = ProtocolInfo.AgentIdBit | Interlocked.Increment(ref _nextOutgoing);
        var answer = new TaskCompletionSource<Frame>(TaskCreationOptions.RunContinuationsAsynchronously);
        _outgoing[id] = answer;
        await WriteAsync(FrameType.Request, id, new AgentRequest { Op = Ops.Search, Search = new SearchRequest { Query = query, MaxResults = 3 } },
            ProtocolJson.Default.AgentRequest);
        return await answer.Task.WaitAsync(cancellationToken);
    }

    private static string Absolute(string path) => path.StartsWith('/') ? path : "/home/sandbox/" + path;

    private FileInfoBody Info(string path) => Files.TryGetValue(path, out var content)
        ? new FileInfoBody { Path = path, Name = Path.GetFileName(path), Kind = FileKind.File, Size = content.Length, MtimeMs = 1 }
        : new FileInfoBody { Path = path, Name = Path.GetFileName(path), Kind = FileKind.Directory };

    private async Task ServeAsync()
    {
        var reader = new FrameReader(_agentIn);
        try
        {
            while (true)
            {
                var r = await reader.ReadAsync();
                if (r.Outcome != ReadOutcome.Frame)
                {
                    return;
                }
                var f = r.Frame;
                if (ProtocolInfo.IsAgentInitiated(f.Id))
                {
                    if (f.Type is FrameType.Response or FrameType.Error && _outgoing.TryRemove(f.Id, out var waiter))
                    {
                        waiter.TrySetResult(new Frame(f.Type, f.Id, f.Payload.ToArray()));
                    }
                    continue;
                }
                switch (f.Type)
                {
                    case FrameType.Hello:
                        await WriteAsync(FrameType.HelloReply, 0, new HelloReply { ProtocolVersion = ProtocolInfo.Version, AgentVersion = "fake" },
                            ProtocolJson.Default.HelloReply);
                        break;
                    case FrameType.Request:
                        var request = JsonSerializer.Deserialize(f.Payload.Span, ProtocolJson.Default.AgentRequest)!;
                        if (request.Op == Ops.FileWrite)
                        {
                            // Its Data frames follow at once: the upload must be expected before the next read.
                            _pendingWrites[f.Id] = Absolute(request.File?.Path ?? "");
                            break;
                        }
                        _ = Task.Run(() => HandleAsync(f.Id, request));
                        break;
                    case FrameType.Data:
                        _uploads.GetOrAdd(f.Id, _ => new MemoryStream()).Write(f.Payload.Span);
                        break;
                    case FrameType.DataEnd when _uploads.TryRemove(f.Id, out var upload) && _pendingWrites.TryRemove(f.Id, out var path):
                        Files[path] = upload.ToArray();
                        await WriteAsync(FrameType.Response, f.Id, Info(path), ProtocolJson.Default.FileInfoBody);
                        break;
                    case FrameType.DataEnd when _pendingWrites.TryRemove(f.Id, out var emptyPath):
                        Files[emptyPath] = [];
                        await WriteAsync(FrameType.Response, f.Id, Info(emptyPath), ProtocolJson.Default.FileInfoBody);
                        break;
                }
            }
        }
        catch (Exception e) when (e is IOException or ObjectDisposedException)
        {
        }
    }

    private readonly ConcurrentDictionary<uint, string> _pendingWrites = new();

    private async Task HandleAsync(uint id, AgentRequest request)
    {
        string path = Absolute(request.File?.Path ?? "");
        switch (request.Op)
        {
            case Ops.Exec:
                Interlocked.Increment(ref _execs);
                await _runtime.ExecGate();
                await WriteRawAsync(FrameType.Stdout, id, "ran\n"u8.ToArray());
                await WriteAsync(FrameType.Response, id, new ExecResult
                {
                    Run = new StepResult { Reason = TerminationReason.Exited, ExitCode = 0, DurationMs = 1 },
                }, ProtocolJson.Default.ExecResult);
                break;
            case Ops.FileStat when Files.ContainsKey(path) || Files.Keys.Any(k => k.StartsWith(path.TrimEnd('/') + "/", StringComparison.Ordinal)):
            case Ops.FileMkdir:
                await WriteAsync(FrameType.Response, id, Info(path), ProtocolJson.Default.FileInfoBody);
                break;
            case Ops.FileRead when Files.TryGetValue(path, out var content):
                await WriteRawAsync(FrameType.Data, id, content);
                await WriteRawAsync(FrameType.DataEnd, id, []);
                await WriteAsync(FrameType.Response, id, Info(path), ProtocolJson.Default.FileInfoBody);
                break;
            case Ops.FileStat or Ops.FileRead:
                await WriteAsync(FrameType.Error, id, new ErrorBody { Code = ErrorCodes.NotFound, Message = "no such file" }, ProtocolJson.Default.ErrorBody);
                break;
            case Ops.FileList:
                string prefix = path.TrimEnd('/') + "/";
                await WriteAsync(FrameType.Response, id, new FileListBody
                {
                    Path = path,
                    Entries = [.. Files.Keys.Where(k => k.StartsWith(prefix, StringComparison.Ordinal)).Order().Select(Info)],
                }, ProtocolJson.Default.FileListBody);
                break;
            case Ops.FileRemove:
                Files.TryRemove(path, out _);
                await WriteAsync(FrameType.Response, id, new OkBody(), ProtocolJson.Default.OkBody);
                break;
            case Ops.ArtifactsList:
                await WriteAsync(FrameType.Response, id, new ArtifactListBody
                {
                    Artifacts = [.. Files.Where(f => f.Key.StartsWith("/tmp/outputs/", StringComparison.Ordinal)).OrderBy(f => f.Key, StringComparer.Ordinal)
                        .Select(f => new ArtifactInfo { Path = f.Key, Size = f.Value.Length, Sha256 = Convert.ToHexStringLower(SHA256.HashData(f.Value)) })],
                }, ProtocolJson.Default.ArtifactListBody);
                break;
            case Ops.EgressEnable:
                await WriteAsync(FrameType.Response, id, new EgressEnableReply { Listen = request.EgressEnable?.Listen ?? "" }, ProtocolJson.Default.EgressEnableReply);
                break;
            default:
                await WriteAsync(FrameType.Response, id, new OkBody(), ProtocolJson.Default.OkBody);
                break;
        }
    }

    private async Task WriteAsync<T>(FrameType type, uint id, T body, System.Text.Json.Serialization.Metadata.JsonTypeInfo<T> info) =>
        await WriteRawAsync(type, id, JsonSerializer.SerializeToUtf8Bytes(body, info));

    private async Task WriteRawAsync(FrameType type, uint id, byte[] payload)
    {
        await _writeLock.WaitAsync();
        try
        {
            await _writer.WriteAsync(type, id, payload);
        }
        finally
        {
            _writeLock.Release();
        }
    }

    public async ValueTask DisposeAsync()
    {
        _exited.TrySetResult();
        _toAgent.Dispose();
        _agentOut.Dispose();
        await Agent.DisposeAsync();
        _agentIn.Dispose();
        _fromAgent.Dispose();
        await _loop.WaitAsync(TimeSpan.FromSeconds(2)).ContinueWith(_ => { }, TaskScheduler.Default);
    }
}
