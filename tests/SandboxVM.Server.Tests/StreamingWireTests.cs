using System.Net;
using System.Text;
using System.Text.Json;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Time.Testing;
using SandboxVM.Protocol;
using SandboxVM.Testing;

namespace SandboxVM.Server.Tests;

/// <summary>
/// A streamed run as a client reads it off the wire: the event lines byte for byte, and output cut into
/// events the way a reader expects (a line with its newline, also when the program wrote them apart).
/// The server's clock is a fake one that moves only when a test says so.
/// </summary>
[Trait("tier", "unit")]
public sealed class StreamingWireTests
{
    private static CancellationToken Ct => TestContext.Current.CancellationToken;

    private static readonly string s_runBody = $$"""{"template": "{{FakeRuntimeServer.Template}}", "code": "print(1)"}""";

    private static HttpRequestMessage StreamRequest()
    {
        var request = new HttpRequestMessage(HttpMethod.Post, "v1/run") { Content = new StringContent(s_runBody, Encoding.UTF8, "application/json") };
        request.Headers.Accept.ParseAdd("text/event-stream");
        return request;
    }

    private static Task<FakeRuntimeServer> StartAsync(WatchedClock clock) =>
        FakeRuntimeServer.StartAsync(services: s => s.AddSingleton<TimeProvider>(clock));

    private static ValueTask ExitAsync(FakeOperation op) =>
        op.RespondAsync(new ExecResult { Run = new StepResult { Reason = TerminationReason.Exited, ExitCode = 0, DurationMs = 1 } }, ProtocolJson.Default.ExecResult);

    /// <summary>The events of a whole stream: (name, data) per event.</summary>
    private static List<(string Name, string Data)> Events(string body) =>
    [
        .. body.Split("\n\n", StringSplitOptions.RemoveEmptyEntries).Select(block =>
        {
            var lines = block.Split('\n');
            Assert.Equal(2, lines.Length);
            Assert.StartsWith("event: ", lines[0], StringComparison.Ordinal);
            Assert.StartsWith("data: ", lines[1], StringComparison.Ordinal);
            return (lines[0]["event: ".Length..], lines[1]["data: ".Length..]);
        }),
    ];

    private static string TextOf(string data) => JsonDocument.Parse(data).RootElement.GetProperty("text").GetString()!;

    [Fact]
    public async Task AStreamedRun_WritesOneEventAndDataLinePerEvent_ThenTheResult()
    {
        var clock = new WatchedClock();
        await using var server = await StartAsync(clock);
        server.Runtime.Configure = (_, agent) => agent.Override(Ops.Exec, async op =>
        {
            await op.EventAsync("run_started");
            await op.SendAsync(FrameType.Stdout, "line 1\n"u8.ToArray());
            await op.SendAsync(FrameType.Stderr, Encoding.UTF8.GetBytes("warning é\n"));
            await ExitAsync(op);
        });

        using var response = await server.Http.SendAsync(StreamRequest(), Ct);
        string body = await response.Content.ReadAsStringAsync(Ct);

        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        Assert.Equal("text/event-stream", response.Content.Headers.ContentType?.MediaType);
        Assert.Equal("no-cache", response.Headers.CacheControl?.ToString());
        Assert.True(body.StartsWith(
            "event: stdout\ndata: {\"text\":\"line 1\\n\"}\n\n" +
            "event: stderr\ndata: {\"text\":\"warning é\\n\"}\n\n" +
            "event: result\ndata: {\"stdout\":\"line 1\\n\",\"stderr\":\"warning é\\n\",", StringComparison.Ordinal), body);
        Assert.EndsWith("}\n\n", body, StringComparison.Ordinal);
        var events = Events(body);
        Assert.Equal(["stdout", "stderr", "result"], events.Select(e => e.Name));
        var result = JsonDocument.Parse(events[2].Data).RootElement;
        Assert.Equal("ok", result.GetProperty("status").GetString());
        Assert.Equal("line 1\nwarning é\n", result.GetProperty("output").GetString());
    }

    [Fact]
    public async Task ALineAndItsNewline_WrittenApart_AreOneEvent()
    {
        var clock = new WatchedClock();
        await using var server = await StartAsync(clock);
        var newline = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        server.Runtime.Configure = (_, agent) => agent.Override(Ops.Exec, async op =>
        {
            await op.EventAsync("run_started");
            // What `python3 -u` does for print("tick é"): the text, then the newline, two writes; and
            // the agent's reads may cut a character too.
            byte[] tick = Encoding.UTF8.GetBytes("tick é");
            await op.SendAsync(FrameType.Stdout, tick.AsMemory(0, tick.Length - 1));
            await op.SendAsync(FrameType.Stdout, tick.AsMemory(tick.Length - 1));
            await newline.Task.WaitAsync(agent.Stopping);
            await op.SendAsync(FrameType.Stdout, "\n"u8.ToArray());
            await ExitAsync(op);
        });

        var sending = server.Http.SendAsync(StreamRequest(), HttpCompletionOption.ResponseHeadersRead, Ct);
        // The server either holds the unfinished line (a timer for the rest of it) or has sent it already.
        await Task.WhenAny(sending, clock.PartialLineTimer).WaitAsync(TimeSpan.FromSeconds(30), Ct);
        newline.SetResult();
        using var response = await sending.WaitAsync(TimeSpan.FromSeconds(30), Ct);
        var events = Events(await response.Content.ReadAsStringAsync(Ct));

        Assert.Equal([("stdout", "tick é\n")], events.Where(e => e.Name != "result").Select(e => (e.Name, TextOf(e.Data))));
    }

    [Fact]
    public async Task AnUnfinishedLine_IsSentAfterTheWait_WhileTheRunGoesOn()
    {
        var clock = new WatchedClock();
        await using var server = await StartAsync(clock);
        var finish = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        server.Runtime.Configure = (_, agent) => agent.Override(Ops.Exec, async op =>
        {
            await op.EventAsync("run_started");
            await op.SendAsync(FrameType.Stdout, "name? "u8.ToArray());
            await finish.Task.WaitAsync(agent.Stopping);
            await ExitAsync(op);
        });

        var sending = server.Http.SendAsync(StreamRequest(), HttpCompletionOption.ResponseHeadersRead, Ct);
        await clock.PartialLineTimer.WaitAsync(TimeSpan.FromSeconds(30), Ct);
        clock.Advance(RunStreaming.PartialLineWait);
        using var response = await sending.WaitAsync(TimeSpan.FromSeconds(30), Ct);
        using var reader = new StreamReader(await response.Content.ReadAsStreamAsync(Ct));

        Assert.Equal("event: stdout", await reader.ReadLineAsync(Ct));
        Assert.Equal("data: {\"text\":\"name? \"}", await reader.ReadLineAsync(Ct));
        Assert.Equal("", await reader.ReadLineAsync(Ct));
        finish.SetResult();
        Assert.Equal("event: result", await reader.ReadLineAsync(Ct));
    }

    /// <summary>A fake clock that tells when the stream starts waiting for the rest of a line.</summary>
    private sealed class WatchedClock : TimeProvider
    {
        private readonly FakeTimeProvider _fake = new();
        private readonly TaskCompletionSource _partialLineTimer = new(TaskCreationOptions.RunContinuationsAsynchronously);

        public Task PartialLineTimer => _partialLineTimer.Task;

        public void Advance(TimeSpan by) => _fake.Advance(by);

        public override long TimestampFrequency => _fake.TimestampFrequency;

        public override long GetTimestamp() => _fake.GetTimestamp();

        public override DateTimeOffset GetUtcNow() => _fake.GetUtcNow();

        public override ITimer CreateTimer(TimerCallback callback, object? state, TimeSpan dueTime, TimeSpan period)
        {
            var timer = _fake.CreateTimer(callback, state, dueTime, period);
            if (period == Timeout.InfiniteTimeSpan && dueTime > TimeSpan.Zero && dueTime <= RunStreaming.PartialLineWait)
            {
                _partialLineTimer.TrySetResult();
            }
            return timer;
        }
    }
}
