using System.Net.Sockets;
using Microsoft.Extensions.Logging;
using SandboxVM.Runtime.Agent;
using SandboxVM.Runtime.Cgroups;

namespace SandboxVM.Runtime.Qemu;

/// <summary>
/// One QEMU process and the host's connections to it: QMP, the agent's virtio-serial socket and the
/// serial console (drained into a bounded tail for diagnostics). Disposing it quits QEMU (SIGKILL
/// when it does not quit promptly), removes its cgroup and run directory.
/// </summary>
public sealed class QemuVm : IVm
{
    private const int TailKeep = 16 * 1024;

    private readonly System.Diagnostics.Process _process;
    private readonly Cgroup? _cgroup;
    private readonly string _runDir;
    private readonly Action _release;
    private readonly TimeSpan _quitTimeout;
    private readonly ILogger _logger;
    private readonly TimeProvider _time;
    // Keep only the tails: a guest or a misbehaving QEMU must not grow host memory.
    private readonly TextTail _stderr = new(TailKeep);
    private readonly TextTail _console = new(TailKeep);
    private readonly List<Task> _pumps = [];
    private Socket? _agentSocket;
    private NetworkStream? _agentStream;
    private AgentClient? _agent;
    private Socket? _consoleSocket;
    private readonly FreezeSwitch _freeze;
    private int _disposed;

    internal QemuVm(string id, string templateName, VmSource source, System.Diagnostics.Process process, Cgroup? cgroup,
        string runDir, Action release, TimeSpan quitTimeout, ILogger logger, TimeProvider time)
    {
        _time = time;
        Id = id;
        TemplateName = templateName;
        Source = source;
        _process = process;
        _cgroup = cgroup;
        _runDir = runDir;
        _release = release;
        _quitTimeout = quitTimeout;
        _logger = logger;
        ProcessId = process.Id;
        // QMP stop/cont: the vCPUs stop and the guest's clocks with them (the caller sets the clock again).
        _freeze = new FreezeSwitch(ct => QmpOrThrow.ExecuteAsync("stop", null, ct), ct => QmpOrThrow.ExecuteAsync("cont", null, ct), time);
        Exited = process.WaitForExitAsync();
        _pumps.Add(_stderr.PumpAsync(process.StandardError.BaseStream));
        _pumps.Add(_stderr.PumpAsync(process.StandardOutput.BaseStream));
    }

    public string Id { get; }
    public string TemplateName { get; }
    public VmSource Source { get; }
    public AgentClient Agent => _agent ?? throw new InvalidOperationException($"VM {Id} has no agent connection yet");
    public TimeSpan StartupTime { get; internal set; }
    public Task Exited { get; }

    /// <summary>Host pid of QEMU.</summary>
    public int ProcessId { get; }

    /// <summary>The VM's private run directory (sockets, pid file).</summary>
    public string RunDirectory => _runDir;

    /// <summary>QMP connection (null until connected).</summary>
    public QmpClient? Qmp { get; private set; }

    private QmpClient QmpOrThrow => Qmp ?? throw new InvalidOperationException($"VM {Id} has no QMP connection");

    public bool IsFrozen => _freeze.IsFrozen;

    public Task FreezeAsync(CancellationToken cancellationToken) => _freeze.FreezeAsync(cancellationToken);

    public Task ThawAsync(CancellationToken cancellationToken) => _freeze.ThawAsync(cancellationToken);

    public VmUsage ReadUsage() => new(_cgroup?.OomKillCount() ?? 0, _cgroup?.PeakMemoryBytes());

    /// <summary>QEMU's stderr and the guest console, last bytes of each, for error reports.</summary>
    public string Diagnostics
    {
        get
        {
            string stderr = _stderr.ToString().Trim();
            string console = _console.ToString().Trim();
            return $"qemu: {(stderr.Length > 0 ? stderr : "(nothing)")}; console: {(console.Length > 0 ? console : "(nothing)")}";
        }
    }

    internal string SocketPath(string name) => Path.Combine(_runDir, QemuRuntime.SocketDirName, name);

    /// <summary>Connects QMP once QEMU has created its socket (or fails when QEMU exits first).</summary>
    internal async Task ConnectQmpAsync(TimeSpan timeout, CancellationToken cancellationToken)
    {
        string path = SocketPath(QemuRuntime.QmpSocketName);
        long start = _time.GetTimestamp();
        while (true)
        {
            cancellationToken.ThrowIfCancellationRequested();
            if (Exited.IsCompleted)
            {
                throw new InvalidOperationException($"qemu exited with code {ExitCodeOrNull()} before QMP was up");
            }
            if (File.Exists(path))
            {
                try
                {
                    Qmp = await QmpClient.ConnectAsync(path, cancellationToken, _time);
                    return;
                }
                catch (SocketException) when (_time.GetElapsedTime(start) < timeout)
                {
                    // The socket file exists before QEMU listens on it.
                }
            }
            if (_time.GetElapsedTime(start) > timeout)
            {
                throw new TimeoutException($"qemu did not open its QMP socket within {timeout.TotalSeconds:0.#} s");
            }
            // QEMU creates the socket within milliseconds of starting; nothing announces it.
            await Task.Delay(TimeSpan.FromMilliseconds(3), _time, cancellationToken);
        }
    }

    /// <summary>
    /// Connects to the agent's port. QEMU creates every chardev socket before the QMP one, so once QMP
    /// answers this cannot race. Bytes sent before the guest opens the port wait in the socket.
    /// </summary>
    internal async Task ConnectAgentAsync(CancellationToken cancellationToken)
    {
        _agentSocket = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
        await _agentSocket.ConnectAsync(new UnixDomainSocketEndPoint(SocketPath(QemuRuntime.AgentSocketName)), cancellationToken);
        _agentStream = new NetworkStream(_agentSocket, ownsSocket: false);
        _agent = new AgentClient(_agentStream, _agentStream);
    }

    /// <summary>Drains the serial console into the diagnostics tail; best effort.</summary>
    internal async Task ConnectConsoleAsync(CancellationToken cancellationToken)
    {
        var socket = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
        try
        {
            await socket.ConnectAsync(new UnixDomainSocketEndPoint(SocketPath(QemuRuntime.ConsoleSocketName)), cancellationToken);
        }
        catch (SocketException)
        {
            socket.Dispose();
            return;
        }
        _consoleSocket = socket;
        _pumps.Add(_console.PumpAsync(new NetworkStream(socket, ownsSocket: false)));
    }

    private int? ExitCodeOrNull()
    {
        try
        {
            return _process.HasExited ? _process.ExitCode : null;
        }
        catch (InvalidOperationException)
        {
            return null;
        }
    }

    /// <summary>SIGKILL now, without QMP quit or closing any connection first, and wait for the exit.</summary>
    internal async Task KillAsync()
    {
        HostNative.Kill(ProcessId, HostNative.SIGKILL);
        try
        {
            await Exited.WaitAsync(TimeSpan.FromSeconds(10), _time);
        }
        catch (TimeoutException)
        {
            QemuLog.KillFailed(_logger, Id, "qemu did not exit 10 s after SIGKILL");
        }
    }

    public async ValueTask DisposeAsync()
    {
        if (Interlocked.Exchange(ref _disposed, 1) != 0)
        {
            return;
        }
        if (!Exited.IsCompleted && Qmp is not null)
        {
            try
            {
                using var quit = new CancellationTokenSource(_quitTimeout, _time);
                // quit closes the connection, sometimes before its answer arrives: either way is fine.
                await Qmp.ExecuteAsync("quit", null, quit.Token).ContinueWith(_ => { }, TaskScheduler.Default);
                await Exited.WaitAsync(quit.Token);
            }
            catch (OperationCanceledException)
            {
            }
        }
        if (!Exited.IsCompleted)
        {
            await KillAsync();
        }
        if (_agent is not null)
        {
            await _agent.DisposeAsync();
        }
        _agentSocket?.Dispose();
        if (_agentStream is not null)
        {
            await _agentStream.DisposeAsync();
        }
        _consoleSocket?.Dispose();
        if (Qmp is not null)
        {
            await Qmp.DisposeAsync();
        }
        if (_cgroup is not null)
        {
            await _cgroup.DestroyAsync(CancellationToken.None);
        }
        await Task.WhenAll(_pumps).WaitAsync(TimeSpan.FromSeconds(1), _time).ContinueWith(_ => { }, TaskScheduler.Default);
        try
        {
            // A later server's leftover sweep may have removed it already.
            if (Directory.Exists(_runDir))
            {
                Directory.Delete(_runDir, recursive: true);
            }
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            QemuLog.CleanupFailed(_logger, _runDir, e.Message);
        }
        _process.Dispose();
        _release();
    }
}
