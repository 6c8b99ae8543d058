using SandboxVM.Core.Catalog;
using SandboxVM.Core.Runs;
using SandboxVM.Core.Sessions;
using SandboxVM.Runtime.Agent;
using SandboxVM.Runtime.Process;

namespace SandboxVM.Core.Tests.Runs;

[Trait("tier", "unit")]
public sealed class CallerErrorsTests
{
    private const string HostPath = "/var/cache/sandboxvm/rootfs/0123abcd";

    public static TheoryData<Exception, string> Failures => new()
    {
        { new SandboxStartException($"rootfs of template t not found at {HostPath}"), "the runtime could not start it" },
        { new SandboxStartException("its agent did not answer within 20 s", $"sandbox x did not start; agent stderr: {HostPath}"), "its agent did not answer within 20 s" },
        { new SandboxStartException($"qemu did not start: {HostPath}", new TimeoutException(HostPath)), "it did not answer in time" },
        { new SandboxStartException($"qemu did not start: {HostPath}", new AgentDisconnectedException(HostPath)), "it exited while starting" },
        { new TemplateImageException("t", new IOException($"`mmdebstrap ... {HostPath}` failed")), "the image of template t could not be built" },
        { new AgentDisconnectedException($"read failed on {HostPath}"), "its VM stopped" },
        { new AggregateException(new AgentDisconnectedException(HostPath)), "its VM stopped" },
        { new DirectoryNotFoundException($"Could not find a part of the path '{HostPath}'"), "an internal error on the host" },
        { new InvalidOperationException($"the guest agent binary was not found at '{HostPath}'"), "an internal error on the host" },
    };

    [Theory]
    [MemberData(nameof(Failures))]
    public void Describe_SaysWhatKindOfFailure_WithoutTheHostDetail(Exception e, string expected)
    {
        string told = CallerErrors.Describe(e);

        Assert.StartsWith(expected, told, StringComparison.Ordinal);
        Assert.DoesNotContain(HostPath, told, StringComparison.Ordinal);
    }

    [Fact]
    public void Describe_PassesTheAgentsOwnWordsAboutItsFiles() =>
        Assert.Equal("the agent answered not_found: /tmp/x: no such file or directory",
            CallerErrors.Describe(new AgentException("not_found", "/tmp/x: no such file or directory")));
}

[Trait("tier", "unit")]
public sealed class FileProblemTests
{
    [Theory]
    [InlineData("not_found", RefusalKind.NotFound, "file_not_found")]
    [InlineData("permission_denied", RefusalKind.Forbidden, "permission_denied")]
    [InlineData("not_regular_file", RefusalKind.Invalid, "not_regular_file")]
    [InlineData("bad_request", RefusalKind.Invalid, "invalid_path")]
    [InlineData("file_too_large", RefusalKind.TooLarge, "file_too_large")]
    [InlineData("io_error", RefusalKind.Conflict, "file_error")]
    [InlineData("something_new", RefusalKind.SandboxFailed, "agent_error")]
    [InlineData("internal", RefusalKind.SandboxFailed, "agent_error")]
    public void EveryAgentErrorCode_MapsToARefusal_OrToTheSandboxsFailure(string code, RefusalKind kind, string problem)
    {
        var e = SessionManager.FileProblem(new AgentException(code, "/proc/1/mem: what the agent said"), "/proc/1/mem");

        Assert.Equal(kind, e.Kind);
        Assert.Equal(problem, e.Code);
        Assert.Equal("path", e.Field);
        Assert.Contains("/proc/1/mem", e.Message, StringComparison.Ordinal);
    }
}
