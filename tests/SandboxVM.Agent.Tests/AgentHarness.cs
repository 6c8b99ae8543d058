using System.Collections.Concurrent;
using System.Diagnostics;
using System.Reflection;
using System.Text;
using System.Text.Json;
using System.Text.Json.Serialization.Metadata;
using System.Threading.Channels;
using SandboxVM.Protocol;

namespace SandboxVM.Agent.Tests;

/// <summary>Every frame of one operation, up to and including its Response or Error.</summary>
internal sealed class OperationFrames(List<Frame> frames)
{
    public IReadOnlyList<Frame> Frames { get; } = frames;
    public Frame Terminal => Frames[^1];
    public bool Succeeded => Terminal.Type == FrameType.Response;

    public byte[] Stdout => Concat(FrameType.Stdout);
    public byte[] Stderr => Concat(FrameType.Stderr);
    public byte[] Data => Concat(FrameType.Data);
    public string StdoutText => Encoding.UTF8.GetString(Stdout);
    public string StderrText => Encoding.UTF8.GetString(Stderr);

    public IEnumerable<string> Events => Frames
        .Where(f => f.Type == FrameType.Event)
        .Select(f => JsonSerializer.Deserialize(f.Payload.Span, ProtocolJson.Default.ExecEvent)!.Kind);

    public T Response<T>(JsonTypeInfo<T> typeInfo)
    {
        Assert.True(Succeeded, $"expected a Response, got {Terminal.Type}: {Encoding.UTF8.GetString(Terminal.Payload.Span)}");
        return JsonSerializer.Deserialize(Terminal.Payload.Span, typeInfo)!;
    }

    public ErrorBody Error()
    {
        Assert.True(Terminal.Type == FrameType.Error, $"expected an Error, got {Terminal.Type}: {Encoding.UTF8.GetString(Terminal.Payload.Span)}");
        return JsonSerializer.Deserialize(Terminal.Payload.Span, ProtocolJson.Default.ErrorBody)!;
    }

    private byte[] Concat(FrameType type) => [.. Frames.Where(f => f.Type == type).SelectMany(f => f.Payload.ToArray())];
}

/// <summary>
/// Runs the real agent as a child process with a private home directory and speaks frames to it over
/// its stdio. Frames are sorted by id as they arrive so tests can run several operations at once.
/// Disposing kills the agent and everything under it, and deletes the home directory.
/// Set SANDBOXVM_AGENT_BINARY to run the suite against a published native binary instead of the dll.
/// </summary>
internal sealed class AgentHarness : IAsyncDisposable
{
    public static readonly TimeSpan DefaultTimeout = TimeSpan.FromSeconds(30);

    private readonly Process _process;
    private readonly FrameWriter _writer;
    private readonly ConcurrentDictionary<uint, Channel<Frame>> _inboxes = new();
    private readonly StringBuilder _stderr = new();
    private readonly Task _readLoop;
    private uint _nextId = 100;

    private AgentHarness(Process process, string root)
    {
        _process = process;
        Root = root;
        _writer = new FrameWriter(process.StandardInput.BaseStream);
        _readLoop = Task.Run(ReadLoopAsync);
    }

    /// <summary>Temporary directory holding home/ and outputs/.</summary>
    public string Root { get; }
    public string Home => Path.Combine(Root, "home");
    public string Outputs => Path.Combine(Root, "outputs");
    public int Pid => _process.Id;
    public Process Process => _process;

    public string AgentStderr
    {
        get
        {
            lock (_stderr)
            {
                return _stderr.ToString();
            }
        }
    }

    public static Task<AgentHarness> StartAsync(params string[] extraArgs) => StartAsync(null, null, extraArgs);

    /// <param name="prepareRoot">Runs on the temporary root before the agent starts.</param>
    /// <param name="launcher">Command the agent is started through (e.g. unshare), or null.</param>
    /// <param name="extraArgs">Agent arguments after --home, --outputs and --skel.</param>
    public static Task<AgentHarness> StartAsync(Action<string>? prepareRoot, IReadOnlyList<string>? launcher, params string[] extraArgs)
    {
        string root = Directory.CreateTempSubdirectory("sandboxvm-agent-test-").FullName;
        // The guest's /tmp, where outputs and fork server directories are: root's, sticky and open to
        // everyone. An agent run as root acts on them as the sandbox user (uid 1000), who must be able to
        // create and remove its own entries here, but not root's.
        if (OperatingSystem.IsLinux())
        {
            File.SetUnixFileMode(root, (UnixFileMode)0b1_111_111_111);
        }
        prepareRoot?.Invoke(root);
        var start = new ProcessStartInfo
        {
            RedirectStandardInput = true,
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
        };
        string? binary = Environment.GetEnvironmentVariable("SANDBOXVM_AGENT_BINARY");
        string[] command = string.IsNullOrEmpty(binary) ? ["dotnet", AgentDllPath()] : [binary];
        if (launcher is { Count: > 0 })
        {
            command = [.. launcher, .. command];
        }
        start.FileName = command[0];
        foreach (string arg in (string[])[.. command[1..], "--home", Path.Combine(root, "home"), "--outputs", Path.Combine(root, "outputs"),
                     "--skel", Path.Combine(root, "skel"), .. extraArgs])
        {
            start.ArgumentList.Add(arg);
        }
        // Fork server directories land under the test's root, which disposal deletes even after a kill.
        start.Environment["TMPDIR"] = root;
        var process = Process.Start(start) ?? throw new InvalidOperationException("agent did not start");
        var harness = new AgentHarness(process, root);
        process.ErrorDataReceived += (_, e) =>
        {
            if (e.Data is not null)
            {
                lock (harness._stderr)
                {
                    harness._stderr.AppendLine(e.Data);
                }
            }
        };
        process.BeginErrorReadLine();
        return Task.FromResult(harness);
    }

    private static string AgentDllPath()
    {
        string? path = typeof(AgentHarness).Assembly.GetCustomAttributes<AssemblyMetadataAttribute>()
            .FirstOrDefault(a => a.Key == "SandboxVM.AgentPath")?.Value;
        if (string.IsNullOrEmpty(path) || !File.Exists(path))
        {
            throw new InvalidOperationException($"agent dll not found at '{path}': build src/SandboxVM.Agent first");
        }
        return path;
    }

    public uint NextId() => Interlocked.Increment(ref _nextId);

    public async Task<HelloReply> HelloAsync(CancellationToken cancellationToken)
    {
        await _writer.WriteJsonAsync(FrameType.Hello, 0, new Hello(), ProtocolJson.Default.Hello, cancellationToken);
        var frame = await NextFrameAsync(0, cancellationToken);
        Assert.Equal(FrameType.HelloReply, frame.Type);
        return JsonSerializer.Deserialize(frame.Payload.Span, ProtocolJson.Default.HelloReply)!;
    }

    public ValueTask SendAsync(FrameType type, uint id, ReadOnlyMemory<byte> payload, CancellationToken cancellationToken) =>
        _writer.WriteAsync(type, id, payload, cancellationToken);

    /// <summary>Writes bytes straight to the agent's stdin (for frames FrameWriter refuses to build).</summary>
    public async Task SendRawAsync(byte[] bytes, CancellationToken cancellationToken)
    {
        var stdin = _process.StandardInput.BaseStream;
        await stdin.WriteAsync(bytes, cancellationToken);
        await stdin.FlushAsync(cancellationToken);
    }

    public async Task<uint> StartAsync(AgentRequest request, CancellationToken cancellationToken)
    {
        uint id = NextId();
        await StartAsync(id, request, cancellationToken);
        return id;
    }

    public ValueTask StartAsync(uint id, AgentRequest request, CancellationToken cancellationToken) =>
        _writer.WriteJsonAsync(FrameType.Request, id, request, ProtocolJson.Default.AgentRequest, cancellationToken);

    public async Task<OperationFrames> RequestAsync(AgentRequest request, CancellationToken cancellationToken)
    {
        uint id = await StartAsync(request, cancellationToken);
        return await CollectAsync(id, cancellationToken);
    }

    public Task<OperationFrames> ExecAsync(ExecRequest exec, CancellationToken cancellationToken) =>
        RequestAsync(new AgentRequest { Op = Ops.Exec, Exec = exec }, cancellationToken);

    public Task<OperationFrames> FileAsync(string op, string path, CancellationToken cancellationToken, bool recursive = false) =>
        RequestAsync(new AgentRequest { Op = op, File = new FileRequest { Path = path, Recursive = recursive } }, cancellationToken);

    /// <summary>Frames of operation <paramref name="id"/> up to its Response or Error.</summary>
    public async Task<OperationFrames> CollectAsync(uint id, CancellationToken cancellationToken, TimeSpan? timeout = null)
    {
        var frames = new List<Frame>();
        using var cts = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
        cts.CancelAfter(timeout ?? DefaultTimeout);
        while (true)
        {
            Frame frame;
            try
            {
                frame = await NextFrameAsync(id, cts.Token);
            }
            catch (OperationCanceledException) when (!cancellationToken.IsCancellationRequested)
            {
                throw new TimeoutException($"operation {id} did not end; got {frames.Count} frames. Agent stderr:\n{AgentStderr}");
            }
            frames.Add(frame);
            if (frame.Type is FrameType.Response or FrameType.Error)
            {
                return new OperationFrames(frames);
            }
        }
    }

    /// <summary>The next frame the agent sent with <paramref name="id"/>.</summary>
    public async Task<Frame> NextFrameAsync(uint id, CancellationToken cancellationToken)
    {
        using var cts = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
        cts.CancelAfter(DefaultTimeout);
        return await Inbox(id).Reader.ReadAsync(cts.Token);
    }

    /// <summary>Closes the agent's stdin: a clean end of stream.</summary>
    public void CloseInput() => _process.StandardInput.Close();

    public async Task<bool> WaitForExitAsync(TimeSpan timeout, CancellationToken cancellationToken)
    {
        using var cts = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
        cts.CancelAfter(timeout);
        try
        {
            await _process.WaitForExitAsync(cts.Token);
            return true;
        }
        catch (OperationCanceledException) when (!cancellationToken.IsCancellationRequested)
        {
            return false;
        }
    }

    public async ValueTask DisposeAsync()
    {
        try
        {
            if (!_process.HasExited)
            {
                _process.Kill(entireProcessTree: true);
            }
            await _process.WaitForExitAsync(CancellationToken.None).WaitAsync(TimeSpan.FromSeconds(10));
        }
        catch (Exception e) when (e is InvalidOperationException or TimeoutException or System.ComponentModel.Win32Exception)
        {
            // Already gone, or not killable: nothing more to do here.
        }
        try
        {
            await _readLoop.WaitAsync(TimeSpan.FromSeconds(5));
        }
        catch (TimeoutException)
        {
        }
        _process.Dispose();
        try
        {
            Directory.Delete(Root, recursive: true);
        }
        catch (IOException)
        {
        }
        catch (UnauthorizedAccessException)
        {
        }
    }

    /// <summary>
    /// The fake host's egress: host name to a loopback port. egress_open of a host listed here connects to
    /// 127.0.0.1:PORT (whatever port was asked) and relays; <c>CODE.refused.test</c> is refused with CODE;
    /// any other host is refused with private_address.
    /// </summary>
    public ConcurrentDictionary<string, int> EgressTargets { get; } = new(StringComparer.OrdinalIgnoreCase);

    /// <summary>Queries the fake host's search saw.</summary>
    public ConcurrentQueue<SearchRequest> Searches { get; } = new();

    /// <summary>egress_open requests the fake host saw.</summary>
    public ConcurrentQueue<EgressOpenRequest> EgressOpens { get; } = new();

    private readonly ConcurrentDictionary<uint, FrameStream> _streams = new();

    /// <summary>The fake host side of agent-initiated operations (runs on the read loop: never blocks).</summary>
    private void OnAgentInitiated(Frame frame)
    {
        if (frame.Type != FrameType.Request)
        {
            if (_streams.TryGetValue(frame.Id, out var stream))
            {
                stream.Deliver(frame);
            }
            return;
        }
        var request = JsonSerializer.Deserialize(frame.Payload.Span, ProtocolJson.Default.AgentRequest)!;
        uint id = frame.Id;
        if (request.Op == Ops.Search)
        {
            Searches.Enqueue(request.Search!);
            _ = request.Search!.Query == "unconfigured"
                ? _writer.WriteJsonAsync(FrameType.Error, id, new ErrorBody { Code = ErrorCodes.SearchNotConfigured, Message = "web search is not configured" }, ProtocolJson.Default.ErrorBody).AsTask()
                : _writer.WriteJsonAsync(FrameType.Response, id, new SearchReply
                {
                    Results = [.. Enumerable.Range(1, request.Search.MaxResults).Select(i => new SearchHit { Title = $"{request.Search.Query} {i}", Url = $"https://example.org/{i}", Snippet = "s" })],
                }, ProtocolJson.Default.SearchReply).AsTask();
            return;
        }
        if (request.Op != Ops.EgressOpen || request.EgressOpen is null)
        {
            _ = _writer.WriteJsonAsync(FrameType.Error, id, new ErrorBody { Code = ErrorCodes.UnknownOp, Message = request.Op }, ProtocolJson.Default.ErrorBody).AsTask();
            return;
        }
        EgressOpens.Enqueue(request.EgressOpen);
        if (!EgressTargets.TryGetValue(request.EgressOpen.Host, out int port))
        {
            const string refused = ".refused.test";
            string code = request.EgressOpen.Host.EndsWith(refused, StringComparison.Ordinal) ? request.EgressOpen.Host[..^refused.Length] : "private_address";
            _ = _writer.WriteJsonAsync(FrameType.Error, id, new ErrorBody { Code = code, Message = $"egress to {request.EgressOpen.Host} denied by the fake host" }, ProtocolJson.Default.ErrorBody).AsTask();
            return;
        }
        var frameStream = new FrameStream(_writer, id);
        _streams[id] = frameStream;
        _ = Task.Run(async () =>
        {
            try
            {
                using var client = new System.Net.Sockets.TcpClient();
                await client.ConnectAsync(System.Net.IPAddress.Loopback, port);
                await _writer.WriteJsonAsync(FrameType.Response, id, new OkBody(), ProtocolJson.Default.OkBody);
                await frameStream.RelayAsync(client.GetStream(), () => client.Client.Shutdown(System.Net.Sockets.SocketShutdown.Send), ReadOnlyMemory<byte>.Empty, CancellationToken.None);
            }
            catch (Exception e)
            {
                await _writer.WriteJsonAsync(FrameType.Error, id, new ErrorBody { Code = "connect_failed", Message = e.Message }, ProtocolJson.Default.ErrorBody);
            }
            finally
            {
                _streams.TryRemove(id, out _);
            }
        });
    }

    private Channel<Frame> Inbox(uint id) => _inboxes.GetOrAdd(id, _ => Channel.CreateUnbounded<Frame>());

    private async Task ReadLoopAsync()
    {
        var reader = new FrameReader(_process.StandardOutput.BaseStream);
        try
        {
            while (true)
            {
                var read = await reader.ReadAsync(CancellationToken.None);
                if (read.Outcome == ReadOutcome.EndOfStream)
                {
                    break;
                }
                if (read.Outcome == ReadOutcome.Frame && ProtocolInfo.IsAgentInitiated(read.Frame.Id))
                {
                    OnAgentInitiated(read.Frame);
                }
                else if (read.Outcome == ReadOutcome.Frame)
                {
                    await Inbox(read.Frame.Id).Writer.WriteAsync(read.Frame, CancellationToken.None);
                }
            }
        }
        catch (Exception e) when (e is IOException or EndOfStreamException or ObjectDisposedException)
        {
            // The agent died; tests notice through their timeouts and the stderr dump.
        }
        foreach (var inbox in _inboxes.Values)
        {
            inbox.Writer.TryComplete();
        }
    }
}
