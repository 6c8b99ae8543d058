using System.Buffers.Binary;
using System.Net;
using System.Net.Http.Json;
using System.Net.Sockets;
using System.Text;
using System.Text.Json;
using SandboxVM.Protocol;
using SandboxVM.Testing;

namespace SandboxVM.Server.Tests;

/// <summary>
/// The HTTP paths a hostile guest (or a slow client) could use to make the server buffer without bound:
/// the streaming run's event queue and the session file downloads. The server runs in this process, so
/// its heap is measured with <see cref="HeapWatch"/> (this assembly runs its tests one at a time).
/// </summary>
[Trait("tier", "unit")]
[Collection(nameof(ProcessWide))]
public sealed class HostileGuestEndpointTests
{
    private static CancellationToken Ct => TestContext.Current.CancellationToken;

    /// <summary>Peak heap growth allowed.</summary>
    private const long HeapBound = 32L << 20;

    private static async Task<JsonElement> JsonOf(HttpResponseMessage response)
    {
        using var doc = JsonDocument.Parse(await response.Content.ReadAsStringAsync(Ct));
        return doc.RootElement.Clone();
    }

    private static async Task AssertRunAnswersAsync(FakeRuntimeServer server)
    {
        using var response = await server.Http.PostAsJsonAsync("v1/run", new { template = FakeRuntimeServer.Template, code = "print(1)" }, Ct);
        var body = await JsonOf(response);
        Assert.True(response.StatusCode == HttpStatusCode.OK, $"another run answered {(int)response.StatusCode}: {body}");
        Assert.Equal("ok", body.GetProperty("status").GetString());
        Assert.Equal("hello\n", body.GetProperty("stdout").GetString());
    }

    private static async Task<string> CreateSandboxAsync(FakeRuntimeServer server)
    {
        using var response = await server.Http.PostAsJsonAsync("v1/sandboxes", new { template = FakeRuntimeServer.Template }, Ct);
        Assert.Equal(HttpStatusCode.Created, response.StatusCode);
        return (await JsonOf(response)).GetProperty("id").GetString()!;
    }

    [Fact]
    public async Task AStreamingRunWhoseClientDoesNotRead_IsEndedAtTheEventBound_AndTheServerHoldsLittle()
    {
        // 4 MiB of output in one-byte chunks alternating stdout and stderr: four million events that do not merge.
        const int Chunks = 4 << 20;
        await using var server = await FakeRuntimeServer.StartAsync(outputBytes: Chunks, noMinimumResponseRate: true);
        var execId = new TaskCompletionSource<uint>(TaskCreationOptions.RunContinuationsAsynchronously);
        server.Runtime.Configure = (n, agent) =>
        {
            if (n != 1)
            {
                return;
            }
            agent.Override(Ops.Exec, async op =>
            {
                execId.TrySetResult(op.Id);
                await op.EventAsync("run_started");
                // Written as one block of 4096 frames, again and again: the fake guest's own memory stays small.
                const int PerBlock = 4096;
                byte[] block = new byte[PerBlock * 10];
                for (int i = 0; i < PerBlock; i++)
                {
                    var frame = block.AsSpan(i * 10, 10);
                    BinaryPrimitives.WriteUInt32BigEndian(frame, 6);
                    frame[4] = (byte)(i % 2 == 0 ? FrameType.Stdout : FrameType.Stderr);
                    BinaryPrimitives.WriteUInt32BigEndian(frame[5..], op.Id);
                    frame[9] = (byte)'x';
                }
                for (int sent = 0; sent < Chunks; sent += PerBlock)
                {
                    await agent.RawStream.WriteAsync(block, agent.Stopping);
                }
                await op.RespondAsync(new ExecResult { Run = new StepResult { Reason = TerminationReason.Exited, ExitCode = 0 } }, ProtocolJson.Default.ExecResult);
            });
        };

        using var heap = new HeapWatch();
        using var client = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp) { ReceiveBufferSize = 4096 };
        await client.ConnectAsync(server.BaseUri.Host, server.BaseUri.Port, Ct);
        byte[] body = Encoding.UTF8.GetBytes($$"""{"template": "{{FakeRuntimeServer.Template}}", "code": "print(1)", "timeout_s": 50}""");
        await client.SendAsync(Encoding.ASCII.GetBytes(
            $"POST /v1/run HTTP/1.1\r\nHost: {server.BaseUri.Authority}\r\nAccept: text/event-stream\r\n" +
            $"Content-Type: application/json\r\nContent-Length: {body.Length}\r\n\r\n").Concat(body).ToArray(), Ct);

        uint exec = await execId.Task.WaitAsync(TimeSpan.FromSeconds(30), Ct);
        var vm = server.Runtime.Vms[0];
        await vm.Exited.WaitAsync(TimeSpan.FromSeconds(60), Ct);

        long peak = heap.PeakGrowth;
        TestContext.Current.TestOutputHelper?.WriteLine($"non-reading SSE client: heap peak growth {HeapWatch.Mib(peak)}, retained {HeapWatch.Mib(heap.RetainedGrowth())}");
        Assert.True(peak < HeapBound, $"the server's heap grew by {HeapWatch.Mib(peak)} for a client that does not read");
        Assert.True(await vm.Guest.WasCancelledAsync(exec, TimeSpan.FromSeconds(10)), "the run went on for a client that could not take its events");
        await AssertRunAnswersAsync(server);
    }

    [Fact]
    public async Task DownloadingAFileOverTheServersLimit_Is409FileTooLarge()
    {
        await using var server = await FakeRuntimeServer.StartAsync(configure: o => o.MaxDownloadBytes = 1 << 20);
        server.Runtime.Configure = (_, agent) => agent.Files["/home/sandbox/big.bin"] = new byte[(1 << 20) + 1];
        string id = await CreateSandboxAsync(server);

        using var response = await server.Http.GetAsync($"v1/sandboxes/{id}/files?path=big.bin", Ct);

        var problem = await JsonOf(response);
        Assert.Equal(HttpStatusCode.Conflict, response.StatusCode);
        Assert.Equal("file_too_large", problem.GetProperty("code").GetString());
        Assert.Contains("1048576", problem.GetProperty("detail").GetString());
    }

    [Fact]
    public async Task DownloadingAFileThatGrowsWithoutEnd_AnswersTheSizeItHadAtStat_AndTheSandboxLivesOn()
    {
        await using var server = await FakeRuntimeServer.StartAsync();
        var readId = new TaskCompletionSource<uint>(TaskCreationOptions.RunContinuationsAsynchronously);
        server.Runtime.Configure = (n, agent) =>
        {
            agent.Files["/home/sandbox/log.txt"] = "0123456789"u8.ToArray();
            agent.Override(Ops.FileRead, async op =>
            {
                // An honest agent reading a file that another process keeps appending to: it stops on Cancel.
                readId.TrySetResult(op.Id);
                byte[] chunk = new byte[Frame.ChunkSize];
                "0123456789"u8.CopyTo(chunk);
                while (!op.Cancelled.IsCancellationRequested)
                {
                    await op.SendAsync(FrameType.Data, chunk);
                }
                await op.FailAsync(ErrorCodes.Cancelled, "cancelled");
            });
        };
        string id = await CreateSandboxAsync(server);

        using var response = await server.Http.GetAsync($"v1/sandboxes/{id}/files?path=log.txt", Ct);

        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        Assert.Equal(10, response.Content.Headers.ContentLength);
        Assert.Equal("0123456789"u8.ToArray(), await response.Content.ReadAsByteArrayAsync(Ct));
        var vm = server.Runtime.Vms[0];
        Assert.True(await vm.Guest.WasCancelledAsync(await readId.Task.WaitAsync(TimeSpan.FromSeconds(5), Ct), TimeSpan.FromSeconds(10)));
        // It stopped when told: not hostile, the sandbox still answers.
        using var stat = await server.Http.GetAsync($"v1/sandboxes/{id}/files?path=.&list=true", Ct);
        Assert.Equal(HttpStatusCode.OK, stat.StatusCode);
        Assert.False(vm.Killed);
    }
}
