using System.Buffers.Binary;
using System.Diagnostics;
using Microsoft.Extensions.Time.Testing;
using SandboxVM.Core.Runs;
using SandboxVM.Core.Sessions;
using SandboxVM.Protocol;
using SandboxVM.Testing;

namespace SandboxVM.Core.Tests.Runs;

/// <summary>Tests that measure this process's heap: they run alone, after the parallel ones.</summary>
[CollectionDefinition(nameof(HeapMeasuring), DisableParallelization = true)]
public sealed class HeapMeasuring;

/// <summary>
/// A hostile guest agent (scripted with <see cref="FakeAgent"/>) against the real host: runs, sessions,
/// the pool and the tracker. In each, the run or call answers within its deadline with a clear status,
/// the hostile sandbox's VM is killed when it broke the protocol, the host's heap stays under a stated
/// bound (measured with <see cref="HeapWatch"/>), and another sandbox keeps answering meanwhile.
/// </summary>
[Collection(nameof(HeapMeasuring))]
[Trait("tier", "unit")]
public sealed class HostileGuestTests
{
    /// <summary>What a guest pushes at the host in the flooding tests.</summary>
    private const long Flood = 256L << 20;

    /// <summary>
    /// Heap growth a hostile guest may cause: the per-operation queue (1 MiB), frames in flight, and
    /// garbage not yet collected (the sampler sees it). An eighth of <see cref="Flood"/>; the fixed host
    /// peaked at 0.1-5 MiB in these tests (the unfixed one held the whole 256 MiB).
    /// </summary>
    private const long HeapBound = 32L << 20;

    private static CancellationToken Ct => TestContext.Current.CancellationToken;

    private static readonly TimeSpan Patience = TimeSpan.FromSeconds(30);

    /// <summary>Sends <paramref name="total"/> bytes of zeros as Data on <paramref name="op"/>; stops early on Cancel only when <paramref name="honourCancel"/>.</summary>
    private static async Task StreamZerosAsync(FakeOperation op, long total, bool honourCancel)
    {
        byte[] chunk = new byte[Frame.ChunkSize];
        for (long sent = 0; sent < total; sent += chunk.Length)
        {
            if (honourCancel && op.Cancelled.IsCancellationRequested)
            {
                await op.FailAsync(ErrorCodes.Cancelled, "cancelled");
                return;
            }
            await op.SendAsync(FrameType.Data, chunk);
        }
    }

    /// <summary>
    /// <paramref name="path"/> is 10 bytes when listed or stat'ed, but reading it streams zeros on and on
    /// (a daemon swapped it for /dev/zero after it was hashed), and the agent ignores Cancel.
    /// </summary>
    private static void ServeEndlessFile(FakeAgent agent, string path, TaskCompletionSource<uint> reading)
    {
        agent.Files[path] = "0123456789"u8.ToArray();
        agent.Override(Ops.FileRead, async op =>
        {
            reading.TrySetResult(op.Id);
            await StreamZerosAsync(op, Flood, honourCancel: false);
            await Task.Delay(Timeout.Infinite, agent.Stopping);
        });
    }

    private static void AssertHeap(HeapWatch heap, string what)
    {
        long peak = heap.PeakGrowth;
        TestContext.Current.TestOutputHelper?.WriteLine($"{what}: heap peak growth {HeapWatch.Mib(peak)} (bound {HeapWatch.Mib(HeapBound)})");
        Assert.True(peak < HeapBound, $"{what}: the host's heap grew by {HeapWatch.Mib(peak)}, over the bound of {HeapWatch.Mib(HeapBound)}");
    }

    private static async Task AssertKilledAsync(FakeAgentVm vm)
    {
        await vm.Exited.WaitAsync(Patience, Ct);
        Assert.True(vm.Killed, "the host did not kill the hostile sandbox");
    }

    /// <summary>A sandbox whose VM was killed ends (its session learns of it from the VM's exit).</summary>
    private static Task AssertEndedAsync(SandboxSession session) =>
        Eventually.TrueAsync(() => session.State == SessionState.Ended, () => $"the sandbox is {session.State}, not ended");

    private static async Task AssertRunAnswersAsync(HostileHost host)
    {
        var result = await host.RunAsync(cancellationToken: Ct).WaitAsync(Patience, Ct);
        Assert.True(result.Status == RunStatus.Ok, $"another run answered {result.Status}: {result.Error}");
        Assert.Equal("hello\n", result.Stdout);
    }

    [Fact]
    public async Task AnArtifactThatStreamsPastItsListedSize_IsCutThere_TheRunIsASandboxError_AndTheVmIsKilled()
    {
        await using var host = new HostileHost();
        var other = await host.CreateSessionAsync(Ct);
        var reading = new TaskCompletionSource<uint>(TaskCreationOptions.RunContinuationsAsynchronously);
        host.Hostile(2, agent => ServeEndlessFile(agent, "/tmp/outputs/a.txt", reading));

        using var heap = new HeapWatch();
        var clock = Stopwatch.StartNew();
        var run = host.RunAsync(timeoutS: 20, cancellationToken: Ct);
        uint readId = await reading.Task.WaitAsync(Patience, Ct);
        await host.AssertOtherSandboxAnswersAsync(other);
        var result = await run.WaitAsync(Patience, Ct);

        Assert.Equal(RunStatus.SandboxError, result.Status);
        Assert.Contains("a.txt", result.Error);
        Assert.Contains("10 bytes", result.Error);
        Assert.Equal("hello\n", result.Stdout);
        // The run's deadline: 20 s + 1 s margin + 2 s for artifacts.
        Assert.True(clock.Elapsed < TimeSpan.FromSeconds(23), $"answered after {clock.Elapsed.TotalSeconds:0.0} s, past the run's deadline of 23 s");
        Assert.Empty(result.Artifacts);
        Assert.True(await host.Vm(2).Guest.WasCancelledAsync(readId, TimeSpan.FromSeconds(10)), "the host never sent Cancel for the read");
        await AssertKilledAsync(host.Vm(2));
        AssertHeap(heap, "endless artifact");
        await host.AssertOtherSandboxAnswersAsync(other);
    }

    [Fact]
    public async Task AnArtifactReadThatNeverAnswers_EndsTheRunAtItsDeadline_AsASandboxError()
    {
        // A FIFO in place of the artifact: the agent's open blocks for good, Cancel or not.
        var time = new FakeTimeProvider();
        await using var host = new HostileHost(time: time);
        var other = await host.CreateSessionAsync(Ct);
        var reading = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        host.Hostile(2, agent =>
        {
            agent.Files["/tmp/outputs/fifo"] = "0123456789"u8.ToArray();
            agent.Override(Ops.FileRead, _ =>
            {
                reading.TrySetResult();
                return Task.Delay(Timeout.Infinite, agent.Stopping);
            });
        });

        var run = host.RunAsync(timeoutS: 1, cancellationToken: Ct);
        await reading.Task.WaitAsync(Patience, Ct);

        // Deadline, on the host's clock from the exec's start: run timeout 1 s + host margin 1 s + artifact time 2 s.
        time.Advance(TimeSpan.FromSeconds(3.9));
        Assert.False(run.IsCompleted, "answered before the deadline");
        time.Advance(TimeSpan.FromSeconds(0.2));
        var result = await run.WaitAsync(Patience, Ct);
        Assert.Equal(RunStatus.SandboxError, result.Status);
        Assert.Contains("artifacts", result.Error);
        Assert.Contains("4 s", result.Error);
        Assert.Equal("hello\n", result.Stdout);
        await AssertKilledAsync(host.Vm(2));
        await host.AssertOtherSandboxAnswersAsync(other);
    }

    [Fact]
    public async Task AFrameDeclaringFourGibibytes_EndsTheRunAtOnce_AsASandboxError()
    {
        await using var host = new HostileHost();
        var other = await host.CreateSessionAsync(Ct);
        host.Hostile(2, agent => agent.Override(Ops.Exec, async op =>
        {
            await op.EventAsync("run_started");
            byte[] header = new byte[9];
            BinaryPrimitives.WriteUInt32BigEndian(header, 0xFFFF_FFF0);
            header[4] = (byte)FrameType.Stdout;
            BinaryPrimitives.WriteUInt32BigEndian(header.AsSpan(5), op.Id);
            await agent.RawStream.WriteAsync(header);
            byte[] zeros = new byte[Frame.ChunkSize];
            for (long sent = 0; sent < Flood; sent += zeros.Length)
            {
                await agent.RawStream.WriteAsync(zeros);
            }
            await Task.Delay(Timeout.Infinite, agent.Stopping);
        }));

        using var heap = new HeapWatch();
        var clock = Stopwatch.StartNew();
        var result = await host.RunAsync(timeoutS: 20, cancellationToken: Ct).WaitAsync(TimeSpan.FromSeconds(40), Ct);

        Assert.Equal(RunStatus.SandboxError, result.Status);
        Assert.Contains("exceeds the limit", result.Error);
        Assert.True(clock.Elapsed < TimeSpan.FromSeconds(15), $"answered after {clock.Elapsed.TotalSeconds:0.0} s: the host read on instead of refusing the frame");
        await AssertKilledAsync(host.Vm(2));
        AssertHeap(heap, "4 GiB frame");
        await host.AssertOtherSandboxAnswersAsync(other);
    }

    [Fact]
    public async Task AGuestThatNeverReads_GetsItsRunEndedByTheWriteTimeout_AsASandboxError()
    {
        await using var host = new HostileHost();
        host.Runtime.Limits = host.Runtime.Limits with { WriteTimeout = TimeSpan.FromSeconds(1) };
        var other = await host.CreateSessionAsync(Ct);
        host.Hostile(2, agent => agent.NeverReadAfterHello = true);

        // The exec request (900 KB of code) is far more than the socket holds unread.
        string code = "#" + new string('x', 900_000);
        var clock = Stopwatch.StartNew();
        var result = await host.RunAsync(code, timeoutS: 20, cancellationToken: Ct).WaitAsync(TimeSpan.FromSeconds(40), Ct);

        Assert.Equal(RunStatus.SandboxError, result.Status);
        Assert.Contains("did not read", result.Error);
        Assert.True(clock.Elapsed < TimeSpan.FromSeconds(15), $"answered after {clock.Elapsed.TotalSeconds:0.0} s, not at the write timeout (1 s)");
        await AssertKilledAsync(host.Vm(2));
        await host.AssertOtherSandboxAnswersAsync(other);
    }

    [Fact]
    public async Task AnUploadToAGuestThatNeverReads_EndsTheSandbox_InsteadOfHanging()
    {
        await using var host = new HostileHost();
        host.Runtime.Limits = host.Runtime.Limits with { WriteTimeout = TimeSpan.FromSeconds(1) };
        host.Hostile(1, agent => agent.NeverReadAfterHello = true);
        var hostile = await host.CreateSessionAsync(Ct);

        var upload = host.Sessions.UseAsync(hostile.Id, "big.bin",
            (agent, p) => agent.WriteFileAsync(p, new MemoryStream(new byte[8 << 20]), Ct), mutates: true);

        var e = await Assert.ThrowsAsync<RunRequestException>(() => upload.WaitAsync(Patience, Ct));
        Assert.Equal(ProblemCodes.SandboxNotFound, e.Code);
        Assert.Contains("did not read", e.Message);
        await AssertKilledAsync(host.Vm(1));
        await AssertEndedAsync(hostile);
        await AssertRunAnswersAsync(host);
    }

    [Fact]
    public async Task AFloodOfAgentRequestsThatNeverReadsItsRefusals_IsCutOff_AndTheSandboxKilled()
    {
        await using var host = new HostileHost();
        host.Hostile(1, agent => agent.NeverReadAfterHello = true);
        var hostile = await host.CreateSessionAsync(Ct);
        var agent = host.Vm(1).Guest;

        using var heap = new HeapWatch();
        var flood = Task.Run(async () =>
        {
            var search = new AgentRequest { Op = Ops.Search, Search = new SearchRequest { Query = "q" } };
            for (uint i = 1; i <= 300_000; i++)
            {
                await agent.Writer.WriteJsonAsync(FrameType.Request, ProtocolInfo.AgentIdBit | i, search, ProtocolJson.Default.AgentRequest);
            }
        }, Ct);
        await Task.WhenAny(flood, host.Vm(1).Exited).WaitAsync(TimeSpan.FromSeconds(60), Ct);

        long retained = heap.RetainedGrowth();
        TestContext.Current.TestOutputHelper?.WriteLine($"request flood: retained {HeapWatch.Mib(retained)}");
        Assert.True(retained < HeapBound, $"the host holds {HeapWatch.Mib(retained)} for refusals it cannot send");
        await AssertKilledAsync(host.Vm(1));
        await AssertEndedAsync(hostile);
        AssertHeap(heap, "request flood");
        await AssertRunAnswersAsync(host);
    }

    [Fact]
    public async Task AFloodOfFramesForOperationsThatAreNotOpen_EndsTheRun_AsASandboxError()
    {
        await using var host = new HostileHost();
        var other = await host.CreateSessionAsync(Ct);
        host.Hostile(2, agent => agent.Handler = async op =>
        {
            if (op.Request.Op == Ops.Exec)
            {
                byte[] chunk = new byte[Frame.ChunkSize];
                for (uint i = 0; i < Flood / chunk.Length / 2; i++)
                {
                    // Ids the host never opened, host-side and agent-side.
                    await agent.Writer.WriteAsync(FrameType.Stdout, 0x4000_0000 + i, chunk);
                    await agent.Writer.WriteAsync(FrameType.Data, ProtocolInfo.AgentIdBit | (0x1000_0000 + i), chunk);
                }
            }
            await agent.HonestAsync(op);
        });

        using var heap = new HeapWatch();
        var result = await host.RunAsync(timeoutS: 20, cancellationToken: Ct).WaitAsync(TimeSpan.FromSeconds(60), Ct);

        Assert.Equal(RunStatus.SandboxError, result.Status);
        Assert.Contains("not open", result.Error);
        await AssertKilledAsync(host.Vm(2));
        AssertHeap(heap, "unknown ids");
        await host.AssertOtherSandboxAnswersAsync(other);
    }

    /// <summary>The agent's timings are the guest's word: absurd ones do not reach the run's host parts (and /metrics) as they are.</summary>
    [Fact]
    public async Task AbsurdExecTimings_AreHeldWithinTheExecsRoundTrip()
    {
        await using var host = new HostileHost();
        host.Hostile(1, agent => agent.Override(Ops.Exec, async op =>
        {
            await op.EventAsync("run_started");
            await op.RespondAsync(new ExecResult
            {
                Run = new StepResult { Reason = TerminationReason.Exited, ExitCode = 0 },
                Timings = new ExecTimings { PrepareMs = 1e300, StepsMs = -1e300, EndProcessesMs = double.MaxValue, ListMs = -5, TotalMs = 1e300 },
            }, ProtocolJson.Default.ExecResult);
        }));

        var result = await host.RunAsync(cancellationToken: Ct).WaitAsync(Patience, Ct);

        Assert.Equal(RunStatus.Ok, result.Status);
        var phases = Assert.IsType<Dictionary<string, double>>(result.Metrics.HostPhases);
        Assert.All(phases, p => Assert.InRange(p.Value, 0, result.Metrics.TotalMs));
        Assert.Equal(0, phases[HostPhases.List]);
    }

    [Fact]
    public async Task RunStartedSentAgainAndAgain_DoesNotResetTheOutputCap()
    {
        await using var host = new HostileHost();
        var other = await host.CreateSessionAsync(Ct);
        host.Hostile(2, agent => agent.Override(Ops.Exec, async op =>
        {
            byte[] chunk = new byte[HostileHost.OutputLimit];
            Array.Fill(chunk, (byte)'x');
            for (int i = 0; i < 20; i++)
            {
                await op.EventAsync("run_started");
                await op.SendAsync(FrameType.Stdout, chunk);
            }
            await op.RespondAsync(new ExecResult { Run = new StepResult { Reason = TerminationReason.Exited, ExitCode = 0 } }, ProtocolJson.Default.ExecResult);
        }));

        var result = await host.RunAsync(cancellationToken: Ct).WaitAsync(Patience, Ct);

        Assert.Equal(RunStatus.OutputLimit, result.Status);
        Assert.True(result.Truncated);
        Assert.Equal(HostileHost.OutputLimit, result.Stdout.Length);
        await AssertKilledAsync(host.Vm(2));
        await host.AssertOtherSandboxAnswersAsync(other);
    }

    [Fact]
    public async Task ADownloadWhoseReaderStalls_HoldsAtMostTheOperationQueue_AndFreesTheChannel()
    {
        // A client that stopped reading its download: the agent (honest) would stream 256 MiB.
        await using var host = new HostileHost();
        host.Runtime.Limits = host.Runtime.Limits with { OperationStallTimeout = TimeSpan.FromSeconds(1) };
        var streamed = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        host.Hostile(1, agent => agent.Handler = async op =>
        {
            switch (op.Request.Op)
            {
                case Ops.FileStat:
                    await op.RespondAsync(new FileInfoBody { Path = "/home/sandbox/big.bin", Name = "big.bin", Kind = FileKind.File, Size = Flood },
                        ProtocolJson.Default.FileInfoBody);
                    break;
                case Ops.FileRead:
                    await StreamZerosAsync(op, Flood, honourCancel: true);
                    streamed.TrySetResult();
                    break;
                default:
                    await agent.HonestAsync(op);
                    break;
            }
        });
        var session = await host.CreateSessionAsync(Ct);

        using var heap = new HeapWatch();
        using var client = CancellationTokenSource.CreateLinkedTokenSource(Ct);
        var stalled = new StalledStream();
        var download = host.Sessions.DownloadAsync(session.Id, "big.bin", _ => stalled, client.Token);
        await streamed.Task.WaitAsync(Patience, Ct);

        long retained = heap.RetainedGrowth();
        TestContext.Current.TestOutputHelper?.WriteLine($"stalled download: retained {HeapWatch.Mib(retained)}");
        Assert.True(retained < HeapBound, $"the host buffered {HeapWatch.Mib(retained)} for a reader that does not read");
        // The channel is free again: the same sandbox still runs code.
        await host.AssertOtherSandboxAnswersAsync(session);
        await client.CancelAsync();
        await Assert.ThrowsAnyAsync<Exception>(() => download.WaitAsync(Patience, Ct));
        AssertHeap(heap, "stalled download");
    }

    [Fact]
    public async Task ADownloadOfAFileThatGrowsWithoutEnd_GetsItsStatSize_AndAGuestThatIgnoresCancelIsKilled()
    {
        await using var host = new HostileHost();
        var reading = new TaskCompletionSource<uint>(TaskCreationOptions.RunContinuationsAsynchronously);
        host.Hostile(1, agent => ServeEndlessFile(agent, "/home/sandbox/log.txt", reading));
        var session = await host.CreateSessionAsync(Ct);

        using var heap = new HeapWatch();
        var body = new MemoryStream();
        long? declared = null;
        var download = host.Sessions.DownloadAsync(session.Id, "log.txt", info =>
        {
            declared = info.Size;
            return body;
        }, Ct);
        uint readId = await reading.Task.WaitAsync(Patience, Ct);
        await download.WaitAsync(Patience, Ct);

        Assert.Equal(10, declared);
        Assert.Equal("0123456789"u8.ToArray().Length, body.Length);
        Assert.True(await host.Vm(1).Guest.WasCancelledAsync(readId, TimeSpan.FromSeconds(10)), "the host never sent Cancel for the read");
        // The guest streamed on after the Cancel: past the allowance for late frames it is hostile.
        await AssertKilledAsync(host.Vm(1));
        AssertHeap(heap, "growing download");
        await AssertRunAnswersAsync(host);
    }

    /// <summary>A response body whose client stopped reading: a write never completes until cancelled.</summary>
    private sealed class StalledStream : Stream
    {
        public override async ValueTask WriteAsync(ReadOnlyMemory<byte> buffer, CancellationToken cancellationToken = default) =>
            await Task.Delay(Timeout.Infinite, cancellationToken);

        public override Task WriteAsync(byte[] buffer, int offset, int count, CancellationToken cancellationToken) =>
            WriteAsync(buffer.AsMemory(offset, count), cancellationToken).AsTask();

        public override void Write(byte[] buffer, int offset, int count) => throw new NotSupportedException();
        public override bool CanRead => false;
        public override bool CanSeek => false;
        public override bool CanWrite => true;
        public override long Length => throw new NotSupportedException();
        public override long Position { get => 0; set => throw new NotSupportedException(); }
        public override void Flush() { }
        public override int Read(byte[] buffer, int offset, int count) => throw new NotSupportedException();
        public override long Seek(long offset, SeekOrigin origin) => throw new NotSupportedException();
        public override void SetLength(long value) => throw new NotSupportedException();
    }
}
