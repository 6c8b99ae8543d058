using System.Text;
using SandboxVM.Protocol;
using SandboxVM.Runtime.Agent;

namespace SandboxVM.Core.Runs;

/// <summary>
/// Gathers a run's stdout and stderr on the host, each capped at the template's output limit. The agent
/// enforces the same cap in the guest; if a guest ignores it and keeps sending, <see cref="Runaway"/>
/// fires so the host can kill the sandbox: the limit never depends on the guest behaving. The counters are
/// reset once, at the first <c>run_started</c> (compiler output is not the program's); a guest that sends
/// it again gets nothing reset, so what it can push is bounded by twice the cap plus the slack.
/// </summary>
internal sealed class OutputCollector : IExecObserver
{
    // What the host tolerates past the cap before it stops trusting the guest (frames already in flight).
    private const long RunawaySlack = 256 * 1024;

    private readonly long _limit;
    private readonly MemoryStream _stdout = new();
    private readonly MemoryStream _stderr = new();
    private readonly MemoryStream _combined = new();
    private readonly TaskCompletionSource _runaway = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private long _received;

    public OutputCollector(long limit) => _limit = limit;

    public Task Runaway => _runaway.Task;

    public bool Truncated { get; private set; }

    public Action<string, ReadOnlyMemory<byte>>? OnChunk { get; set; }

    public void OnStdout(ReadOnlySpan<byte> data) => Append(_stdout, data, "stdout");

    public void OnStderr(ReadOnlySpan<byte> data) => Append(_stderr, data, "stderr");

    /// <summary>Host clock when the guest said each step started (see <see cref="HostStepTimes"/>).</summary>
    private long? _compileStarted, _runStarted;

    /// <summary>
    /// Step durations as the host saw them, from the step's start event to now. The guest's own clock can
    /// run fast under emulation, so the guest's figures are capped by these.
    /// </summary>
    public (double? CompileMs, double? RunMs) HostStepTimes()
    {
        long now = System.Diagnostics.Stopwatch.GetTimestamp();
        double? compile = _compileStarted is long c ? System.Diagnostics.Stopwatch.GetElapsedTime(c, _runStarted ?? now).TotalMilliseconds : null;
        double? run = _runStarted is long r ? System.Diagnostics.Stopwatch.GetElapsedTime(r, now).TotalMilliseconds : null;
        return (compile, run);
    }

    /// <summary>The guest said or printed anything for this exec: a step started, or output came.</summary>
    public bool Heard { get; private set; }

    public void OnEvent(ExecEvent e)
    {
        Heard = true;
        if (e.Kind == "compile_started")
        {
            _compileStarted = System.Diagnostics.Stopwatch.GetTimestamp();
        }
        if (e.Kind == "run_started" && _runStarted is null)
        {
            _runStarted = System.Diagnostics.Stopwatch.GetTimestamp();
            // Compiler output of a successful build is not part of the program's output.
            _stdout.SetLength(0);
            _stderr.SetLength(0);
            _combined.SetLength(0);
            _received = 0;
        }
    }

    private void Append(MemoryStream target, ReadOnlySpan<byte> data, string stream)
    {
        Heard = true;
        _received += data.Length;
        if (_received > _limit + RunawaySlack)
        {
            _runaway.TrySetResult();
        }
        long room = _limit - _combined.Length;
        if (room <= 0)
        {
            Truncated = true;
            return;
        }
        var kept = data[..(int)Math.Min(room, data.Length)];
        if (kept.Length < data.Length)
        {
            Truncated = true;
        }
        target.Write(kept);
        _combined.Write(kept);
        OnChunk?.Invoke(stream, kept.ToArray());
    }

    public string Stdout => Decode(_stdout);
    public string Stderr => Decode(_stderr);
    public string Combined => Decode(_combined);

    // Decoded once at the end: a chunk boundary may split a multi-byte character.
    private static string Decode(MemoryStream s) => Encoding.UTF8.GetString(s.GetBuffer(), 0, (int)s.Length);
}
