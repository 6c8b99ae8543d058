using System.IO.Pipelines;
using System.Net.Sockets;
using Microsoft.Extensions.Time.Testing;
using SandboxVM.Protocol;
using SandboxVM.Runtime.Agent;
using SandboxVM.Testing;

namespace SandboxVM.Runtime.Tests;

/// <summary>
/// The host's AgentClient against a scripted agent (<see cref="FakeAgent"/>): reads capped and cancelled,
/// protocol violations closing the channel with the reason, and no false alarm for an honest agent's
/// late frames or bursts of refused requests.
/// </summary>
[Trait("tier", "unit")]
public sealed class AgentClientBoundsTests : IAsyncDisposable
{
    private static CancellationToken Ct => TestContext.Current.CancellationToken;

    private readonly Socket _host;
    private readonly NetworkStream _stream;
    private readonly FakeAgent _agent;
    private AgentClient _client = null!;

    public AgentClientBoundsTests()
    {
        (_host, var guest) = FakeAgent.SocketPair();
        _stream = new NetworkStream(_host);
        _agent = new FakeAgent(guest);
    }

    private async Task<AgentClient> StartAsync(AgentClientLimits? limits = null, TimeProvider? time = null)
    {
        _agent.Start();
        _client = new AgentClient(_stream, _stream, limits, time);
        await _client.HelloAsync(Ct);
        return _client;
    }

    /// <summary>Answers file_read with <paramref name="chunks"/> Data frames of 64 KiB, on Cancel stopping after <paramref name="lateChunks"/> more.</summary>
    private void ServeLongRead(int chunks, int lateChunks, TaskCompletionSource<uint>? opened = null) => _agent.Override(Ops.FileRead, async op =>
    {
        opened?.TrySetResult(op.Id);
        byte[] chunk = new byte[Frame.ChunkSize];
        for (int i = 0, late = 0; i < chunks && late <= lateChunks; i++)
        {
            await op.SendAsync(FrameType.Data, chunk);
            if (op.Cancelled.IsCancellationRequested)
            {
                late++;
            }
        }
        await op.FailAsync(ErrorCodes.Cancelled, "cancelled");
    });

    [Fact]
    public async Task AReadPastItsLimit_WritesExactlyTheLimit_CancelsTheRead_AndThrows()
    {
        var opened = new TaskCompletionSource<uint>();
        ServeLongRead(chunks: 1000, lateChunks: 0, opened);
        var client = await StartAsync();
        var destination = new MemoryStream();

        var e = await Assert.ThrowsAsync<AgentReadLimitException>(() => client.ReadFileAsync("/tmp/outputs/a.txt", destination, 100_000, Ct));

        Assert.Equal(100_000, destination.Length);
        Assert.Equal(100_000, e.Limit);
        Assert.True(await _agent.WasCancelledAsync(await opened.Task, TimeSpan.FromSeconds(10)), "the agent was not told to stop");
        await client.PingAsync(Ct);
        Assert.Null(client.FailureReason);
    }

    [Fact]
    public async Task LateFramesOfAnHonestAgentAfterACancel_AreDropped_AndTheChannelStaysOpen()
    {
        // An honest agent notices the Cancel a few frames late: 2 MiB that nobody reads any more.
        ServeLongRead(chunks: 1000, lateChunks: 32);
        var client = await StartAsync();

        for (int i = 0; i < 8; i++)
        {
            await Assert.ThrowsAsync<AgentReadLimitException>(() => client.ReadFileAsync("/x", Stream.Null, 10, Ct));
        }
        await client.PingAsync(Ct);

        Assert.Null(client.FailureReason);
    }

    [Fact]
    public async Task RequestsTheHostRefuses_FromAnAgentThatReadsItsAnswers_KeepTheChannelOpen()
    {
        var client = await StartAsync();
        var search = new AgentRequest { Op = Ops.Search, Search = new SearchRequest { Query = "q" } };

        // As the agent does: at most its 64 operations open, each batch sent at once.
        for (uint batch = 0; batch < 80; batch++)
        {
            for (uint i = 1; i <= ProtocolInfo.MaxAgentOperations; i++)
            {
                await _agent.Writer.WriteJsonAsync(FrameType.Request, ProtocolInfo.AgentIdBit | (batch * 100 + i), search, ProtocolJson.Default.AgentRequest, Ct);
            }
            await _agent.WaitForAnswersAsync(ProtocolInfo.MaxAgentOperations, TimeSpan.FromSeconds(30), Ct);
        }
        await client.PingAsync(Ct);

        Assert.Null(client.FailureReason);
    }

    [Fact]
    public async Task MoreExecEventsThanTheCap_CloseTheChannel_NamingWhy()
    {
        _agent.Handler = async op =>
        {
            for (int i = 0; i < 100; i++)
            {
                await op.EventAsync("compile_started");
            }
        };
        var client = await StartAsync(AgentClientLimits.Default with { MaxExecEvents = 10 });

        var e = await Assert.ThrowsAsync<AgentDisconnectedException>(() =>
            client.ExecAsync(new ExecRequest { Run = ["true"] }, new NullObserver(), Ct));

        Assert.Contains("more than 10 events", e.Message);
        Assert.Contains("more than 10 events", client.FailureReason);
        await client.Completion.WaitAsync(TimeSpan.FromSeconds(10), Ct);
        await Assert.ThrowsAsync<AgentDisconnectedException>(() => client.PingAsync(Ct));
    }

    [Fact]
    public async Task AFrameOfTheWrongKindForItsOperation_ClosesTheChannel()
    {
        _agent.Handler = op => op.SendAsync(FrameType.Stdout, new byte[] { 1 }).AsTask();
        var client = await StartAsync();

        var e = await Assert.ThrowsAsync<AgentDisconnectedException>(() => client.PingAsync(Ct));

        Assert.Contains("Stdout frame to ping", e.Message);
        Assert.NotNull(client.FailureReason);
    }

    [Fact]
    public async Task AnOperationWhoseReaderStalls_IsGivenUpAfterTheStallTimeoutOnTheClientsClock_AndTheChannelStaysOpen()
    {
        var time = new FakeTimeProvider();
        var opened = new TaskCompletionSource<uint>();
        ServeLongRead(chunks: 1000, lateChunks: 32, opened);
        // No write timeout: the only timer on the fake clock is the stall wait.
        var client = await StartAsync(new AgentClientLimits { OperationStallTimeout = TimeSpan.FromSeconds(30), WriteTimeout = Timeout.InfiniteTimeSpan }, time);
        // A consumer that stopped taking bytes: its first write waits until the pipe is read.
        var pipe = new Pipe(new PipeOptions(pauseWriterThreshold: 1, resumeWriterThreshold: 1));

        Task read = client.ReadFileAsync("/tmp/big", pipe.Writer.AsStream(), long.MaxValue, Ct);
        Task<bool> cancelled = _agent.WasCancelledAsync(await opened.Task, TimeSpan.FromSeconds(30));
        // The reader loop fills the operation's queue (1 MiB) and waits for room; the clock is stepped
        // because the test cannot see when that wait starts.
        await time.AdvanceUntilAsync(TimeSpan.FromSeconds(10), () => cancelled.IsCompleted, () => "the agent was not told to stop");
        Assert.True(await cancelled, "the agent was not told to stop");
        Task drain = pipe.Reader.AsStream().CopyToAsync(Stream.Null, Ct);

        var e = await Assert.ThrowsAsync<TimeoutException>(() => read);
        await pipe.Writer.CompleteAsync();
        await drain;
        Assert.Contains("for 30 s", e.Message);
        await client.PingAsync(Ct);
        Assert.Null(client.FailureReason);
    }

    private sealed class NullObserver : IExecObserver
    {
        public void OnStdout(ReadOnlySpan<byte> data) { }
        public void OnStderr(ReadOnlySpan<byte> data) { }
        public void OnEvent(ExecEvent e) { }
    }

    public async ValueTask DisposeAsync()
    {
        if (_client is not null)
        {
            await _client.DisposeAsync();
        }
        _host.Dispose();
        await _agent.DisposeAsync();
    }
}
