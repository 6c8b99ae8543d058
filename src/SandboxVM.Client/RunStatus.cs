using System.Text.Json.Serialization;
using SandboxVM.Client.Internal;

namespace SandboxVM.Client;

/// <summary>How a run ended (<c>status</c> on the wire).</summary>
[JsonConverter(typeof(RunStatusConverter))]
public enum RunStatus
{
    /// <summary>A status this version of the SDK does not know (the server is newer).</summary>
    Unknown = 0,

    /// <summary><c>ok</c>: the program ran and exited with code 0.</summary>
    Ok,

    /// <summary><c>error</c>: the program ran and failed (non-zero exit code or a signal).</summary>
    Error,

    /// <summary><c>compile_error</c>: compilation failed, nothing ran; see <see cref="RunResult.Stderr"/>.</summary>
    CompileError,

    /// <summary><c>timeout</c>: compile or run exceeded its time limit and was killed.</summary>
    Timeout,

    /// <summary><c>oom</c>: the program ran out of memory and was killed.</summary>
    Oom,

    /// <summary><c>output_limit</c>: the program printed more than the template allows and was stopped.</summary>
    OutputLimit,

    /// <summary><c>sandbox_error</c>: the sandbox itself failed; the code may not have run.</summary>
    SandboxError,
}

/// <summary>How the server obtained the VM for a run (<c>metrics.vm_source</c> on the wire).</summary>
[JsonConverter(typeof(VmSourceConverter))]
public enum VmSource
{
    /// <summary>A value this version of the SDK does not know, or none was sent.</summary>
    Unknown = 0,

    /// <summary><c>pool</c>: a pre-warmed VM taken from the template's pool.</summary>
    Pool,

    /// <summary><c>restore</c>: a VM restored from the template's snapshot on demand.</summary>
    Restore,

    /// <summary><c>boot</c>: a VM cold-booted for this run.</summary>
    Boot,

    /// <summary><c>singleton</c>: the template's single long-lived VM.</summary>
    Singleton,

    /// <summary><c>process</c>: a process sandbox sharing the host kernel (weaker isolation).</summary>
    Process,
}
