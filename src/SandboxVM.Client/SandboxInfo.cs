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

    /// <summary>Whether the sandbox is running or has ended.</summary>
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
}
