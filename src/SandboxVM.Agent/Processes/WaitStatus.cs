namespace SandboxVM.Agent.Processes;

/// <summary>
/// A raw waitpid(2) status, decoded. The agent reaps its children itself because
/// System.Diagnostics.Process reports a signalled child as exit code 128+n, which cannot be told
/// apart from a program that called exit(128+n).
/// </summary>
internal readonly record struct WaitStatus(int Raw)
{
    /// <summary>Stands for a child whose status was taken by someone else (should not happen).</summary>
    public static WaitStatus Unknown { get; } = new(-1);

    public bool IsUnknown => Raw == -1;

    public bool Exited => !IsUnknown && (Raw & 0x7f) == 0;

    public int ExitCode => Exited ? (Raw >> 8) & 0xff : -1;

    public bool Signaled => !IsUnknown && (Raw & 0x7f) != 0 && (Raw & 0x7f) != 0x7f;

    public int? Signal => Signaled ? Raw & 0x7f : null;
}
