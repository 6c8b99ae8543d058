using SandboxVM.Core.Catalog;
using SandboxVM.Runtime.Agent;
using SandboxVM.Runtime.Process;

namespace SandboxVM.Core.Runs;

/// <summary>
/// What a caller is told about a failure on the host (RunResult.error, problem details, a pool's or
/// singleton's last error): a clear sentence with no host detail. Messages of host exceptions name the
/// image cache, the snapshot store, run directories, the checkout and the output of host programs;
/// they go to the server log where the failure is caught, never to the caller. Only exceptions whose
/// text is known to be the caller's business pass through.
/// </summary>
public static class CallerErrors
{
    public static string Describe(Exception? e) => e switch
    {
        null => "unknown error",
        AggregateException { InnerExceptions: [var only] } => Describe(only),
        SandboxStartException s => s.Reason,
        TemplateImageException i => i.Reason,
        // What the guest did wrong is the caller's business (it is the caller's code's doing, or a broken agent).
        AgentDisconnectedException { GuestFault: { } fault } => "the host closed the agent channel: " + fault,
        AgentDisconnectedException => "its VM stopped",
        // The guest's own words about its own files and processes.
        AgentException a => $"the agent answered {a.Code}: {a.Message}",
        RunRequestException r => r.Message,
        TimeoutException => "it did not answer in time",
        _ => "an internal error on the host (the server log has the details)",
    };
}
