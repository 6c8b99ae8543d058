using System.IO.Pipes;
using System.Text.Json;
using SandboxVM.Protocol;
using SandboxVM.Runtime.Agent;

namespace SandboxVM.Runtime.Tests;

/// <summary>Operations the agent opens (high-bit ids): refused without a handler, served with one.</summary>
[Trait("tier", "unit")]
public sealed class AgentClientIncomingTests : IAsyncDisposable
{
    private static CancellationToken Ct => TestContext.Current.CancellationToken;

    private readonly AnonymousPipeServerStream _agentOut = new(PipeDirection.Out);
    private readonly AnonymousPipeClientStream _hostIn;
    private readonly AnonymousPipeServerStream _hostOut = new(PipeDirection.Out);
    private readonly AnonymousPipeClientStream _agentIn;
    private readonly AgentClient _client;
    private readonly FrameWriter _agentWriter;
    private readonly FrameReader _agentReader;

    public AgentClientIncomingTests()
    {
        _hostIn = new AnonymousPipeClientStream(PipeDirection.In, _agentOut.ClientSafePipeHandle);
        _agentIn = new AnonymousPipeClientStream(PipeDirection.In, _hostOut.ClientSafePipeHandle);
        _client = new AgentClient(_hostIn, _hostOut);
        _agentWriter = new FrameWriter(_agentOut);
        _agentReader = new FrameReader(_agentIn);
    }

    private async Task<Frame> AskAsync(uint id, AgentRequest request)
    {
        await _agentWriter.WriteJsonAsync(FrameType.Request, id, request, ProtocolJson.Default.AgentRequest, Ct);
        var read = await _agentReader.ReadAsync(Ct).AsTask().WaitAsync(TimeSpan.FromSeconds(10), Ct);
        Assert.Equal(ReadOutcome.Frame, read.Outcome);
        Assert.Equal(id, read.Frame.Id);
        return read.Frame;
    }

    [Fact]
    public async Task EgressOpen_WithoutHandler_IsRefusedWithUnknownOp()
    {
        var reply = await AskAsync(ProtocolInfo.AgentIdBit | 1, new AgentRequest { Op = Ops.EgressOpen, EgressOpen = new EgressOpenRequest { Host = "127.0.0.1", Port = 80 } });
        Assert.Equal(FrameType.Error, reply.Type);
        Assert.Equal(ErrorCodes.UnknownOp, JsonSerializer.Deserialize(reply.Payload.Span, ProtocolJson.Default.ErrorBody)!.Code);
    }

    [Fact]
    public async Task Search_WithHandler_IsAnswered()
    {
        _client.RequestHandler = new SearchHandler();
        var reply = await AskAsync(ProtocolInfo.AgentIdBit | 7, new AgentRequest { Op = Ops.Search, Search = new SearchRequest { Query = "q", MaxResults = 1 } });
        Assert.Equal(FrameType.Response, reply.Type);
        var body = JsonSerializer.Deserialize(reply.Payload.Span, ProtocolJson.Default.SearchReply)!;
        Assert.Equal("q!", Assert.Single(body.Results).Title);
        // The operation is freed right after its reply is written.
        var deadline = DateTime.UtcNow + TimeSpan.FromSeconds(10);
        while (_client.IncomingCount > 0 && DateTime.UtcNow < deadline)
        {
            await Task.Delay(10, Ct);
        }
        Assert.Equal(0, _client.IncomingCount);
    }

    private sealed class SearchHandler : IAgentRequestHandler
    {
        public Task HandleAsync(AgentIncomingRequest request, CancellationToken cancellationToken) =>
            request.RespondAsync(new SearchReply { Results = [new SearchHit { Title = request.Request.Search!.Query + "!" }] }, ProtocolJson.Default.SearchReply);
    }

    public async ValueTask DisposeAsync()
    {
        await _client.DisposeAsync();
        _agentOut.Dispose();
        _hostOut.Dispose();
        _hostIn.Dispose();
        _agentIn.Dispose();
    }
}
