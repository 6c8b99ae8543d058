using System.Text.Json.Serialization;
using SandboxVM.Client.Internal;

namespace SandboxVM.Client;

/// <summary>A sandbox (session) as the server describes it: its template, state, lifetime and VM.</summary>
public sealed class SandboxInfo
{
    /// <summary>The sandbox's id, used in every call about it.</summary>
    public string Id { get; init => field = value ?? ""; } = "";

    /// <summary>Name of the template the sandbox runs.</summary>
    public string Template { get; init => field = value ?? ""; } = "";

    /// <summary>Whether the sandbox is running, paused (or on its way there or back) or has ended.</summary>
    public SandboxState State { get; init; }

    /// <summary>When the sandbox was created; null when the server did not say.</summary>
    public DateTimeOffset? CreatedAt { get; init; }

    /// <summary>When the server will end the sandbox unless it is kept alive (<see cref="Sandbox.KeepAliveAsync"/>).</summary>
    public DateTimeOffset? ExpiresAt { get; init; }

    /// <summary>Time of the last call that used the sandbox; the idle timeout counts from here.</summary>
    public DateTimeOffset? LastActivityAt { get; init; }

    /// <summary>Lifetime in seconds, counted from creation or from the last keep-alive.</summary>
    public double TimeoutS { get; init; }

    /// <summary>Seconds without any call after which the server ends the sandbox.</summary>
    public double IdleTimeoutS { get; init; }

    /// <summary>Metadata given at creation.</summary>
    public IReadOnlyDictionary<string, string> Metadata { get; init => field = value ?? new Dictionary<string, string>(); } =
        new Dictionary<string, string>();

    /// <summary>VM backend serving it: <c>firecracker</c>, <c>qemu</c> or <c>process</c>.</summary>
    public string Runtime { get; init => field = value ?? ""; } = "";

    /// <summary>How the VM was obtained.</summary>
    public VmSource VmSource { get; init; }

    /// <summary>Milliseconds it took to obtain and start the VM.</summary>
    public double StartupMs { get; init; }

    /// <summary>Created with <see cref="SandboxCreateOptions.KeepRunning"/>: never frozen between calls.</summary>
    public bool KeepRunning { get; init; }

    /// <summary>The VM is frozen now (no call for a while); the next call thaws it, state intact.</summary>
    public bool Frozen { get; init; }

    /// <summary>What the server does once the sandbox is idle: <c>kill</c> or <c>pause</c>.</summary>
    public string OnIdle { get; init => field = value ?? "kill"; } = "kill";

    /// <summary>Whether a call on the paused sandbox resumes it first.</summary>
    public bool AutoResume { get; init; } = true;

    /// <summary>When it was last paused; null when never.</summary>
    public DateTimeOffset? PausedAt { get; init; }

    /// <summary>While paused: when the server removes it unless resumed (its paused_ttl).</summary>
    public DateTimeOffset? PausedUntil { get; init; }

    /// <summary>Size on disk of the saved sandbox (while paused; afterwards, of the last pause).</summary>
    public long? PausedBytes { get; init; }

    /// <summary>How long the last pause took, in milliseconds.</summary>
    public double? LastPauseMs { get; init; }

    /// <summary>How long the last resume took, in milliseconds.</summary>
    public double? LastResumeMs { get; init; }

    /// <inheritdoc/>
    public override string ToString() => $"{Id} ({Template}, {State.ToString().ToLowerInvariant()}, expires {ExpiresAt:u})";
}

/// <summary>Whether a sandbox is still usable (<c>state</c> on the wire).</summary>
[JsonConverter(typeof(SandboxStateConverter))]
public enum SandboxState
{
    /// <summary>A state this version of the SDK does not know, or none was sent.</summary>
    Unknown = 0,

    /// <summary><c>running</c>: the VM is up and takes calls.</summary>
    Running,

    /// <summary><c>ended</c>: the VM is gone (killed, expired or idle too long).</summary>
    Ended,

    /// <summary><c>pausing</c>: being saved to disk.</summary>
    Pausing,

    /// <summary><c>paused</c>: saved to disk, no VM; a resume (or, with auto_resume, any call) brings it back.</summary>
    Paused,

    /// <summary><c>resuming</c>: its VM is being restored.</summary>
    Resuming,
}
