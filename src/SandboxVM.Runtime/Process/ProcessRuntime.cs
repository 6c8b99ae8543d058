using System.Diagnostics;
using Microsoft.Extensions.Logging;
using Microsoft.Win32.SafeHandles;
using SandboxVM.Runtime.Cgroups;

namespace SandboxVM.Runtime.Process;

/// <summary>
/// Runs each sandbox as the agent under bubblewrap on the template's unpacked rootfs: read-only root,
/// tmpfs for the writable paths, every namespace unshared (no network device but a dead loopback),
/// an unprivileged host uid of its own, a seccomp filter (<see cref="SeccompFilter"/>), and a cgroup
/// with memory, pids and cpu caps that every process of the sandbox joins before it runs. Shares the
/// host kernel: weaker isolation than a VM, and reported so.
/// </summary>
public sealed partial class ProcessRuntime : IVmRuntime, IDisposable
{
    private readonly ProcessRuntimeOptions _options;
    private readonly CgroupManager _cgroups;
    private readonly ILogger<ProcessRuntime> _logger;
    private readonly bool _useCgroups;
    private readonly bool _dropPrivileges;
    private readonly SafeFileHandle? _seccomp;
    private readonly string? _seccompPath;

    public ProcessRuntime(ProcessRuntimeOptions options, CgroupManager cgroups, ILogger<ProcessRuntime> logger)
    {
        _options = options;
        _cgroups = cgroups;
        _logger = logger;
        _useCgroups = cgroups.UsableFor("process", options.RequireCgroups);
        if (!_useCgroups)
        {
            LogNoCgroups(_logger);
        }
        _dropPrivileges = Environment.IsPrivilegedProcess;
        if (options.Seccomp)
        {
            try
            {
                _seccomp = SeccompFilter.Compile(out var unknown);
                if (unknown.Count > 0)
                {
                    LogSeccompUnknown(_logger, string.Join(", ", unknown));
                }
            }
            catch (DllNotFoundException e)
            {
                throw new InvalidOperationException("the process runtime's seccomp filter needs libseccomp (apt-get install libseccomp2)", e);
            }
            // Each launch opens the sealed memfd afresh through this path (it is never inherited).
            _seccompPath = $"/proc/{Environment.ProcessId}/fd/{_seccomp.DangerousGetHandle()}";
        }
        else
        {
            LogNoSeccomp(_logger);
        }
    }

    /// <summary>
    /// Pids the cgroup allows beyond the template's process limit (which applies to the code itself,
    /// via RLIMIT_NPROC): bubblewrap and the agent's threads must still run when the code hits its cap.
    /// </summary>
    private const int AgentPidHeadroom = 64;

    private const string CgroupPrefix = "sbx";

    public string Name => "process";

    public RuntimeCapabilities Capabilities { get; } = new(IsolationLevel.SharedKernel, Snapshots: false, Networking: false, OwnKernel: false);

    public string? Accel => null;

    public static bool IsAvailable(ProcessRuntimeOptions options) => File.Exists(options.BwrapPath);

    public Task<int> CleanupLeftoversAsync(CancellationToken cancellationToken) =>
        _useCgroups ? _cgroups.SweepAsync(CgroupPrefix, cancellationToken) : Task.FromResult(0);

    public async Task<IVm> StartAsync(VmSpec spec, CancellationToken cancellationToken)
    {
        if (!Directory.Exists(spec.RootfsDir))
        {
            throw new SandboxStartException("the template's image is missing (build it again: sandboxvm templates build)",
                $"rootfs of template {spec.TemplateName} not found at {spec.RootfsDir}");
        }
        var started = Stopwatch.StartNew();
        string id = CgroupManager.OwnedName(CgroupPrefix, Guid.NewGuid().ToString("N")[..12]);
        int? uid = _dropPrivileges ? HostUidPool.Allocate(_options.UidBase, _options.UidCount) : null;
        Cgroup? cgroup = null;
        System.Diagnostics.Process? process = null;
        try
        {
            cgroup = _useCgroups
                ? _cgroups.Create(id, new CgroupLimits((long)spec.MemoryMib << 20, spec.MaxProcesses + AgentPidHeadroom, spec.Vcpus))
                : null;
            // bubblewrap dies with its parent (--die-with-parent), which must be the server, not a pool thread.
            process = HostProcess.Start(BuildStartInfo(spec, cgroup, uid));
        }
        catch (Exception)
        {
            process?.Dispose();
            if (cgroup is not null)
            {
                await cgroup.DestroyAsync(CancellationToken.None);
            }
            if (uid is { } u)
            {
                HostUidPool.Release(u);
            }
            throw;
        }
        // From here the VM owns the cgroup and the uid: its disposal gives both back once bubblewrap is gone.
        var vm = new ProcessVm(id, spec.TemplateName, process, cgroup, uid is { } held ? () => HostUidPool.Release(held) : null, _logger);
        try
        {
            using var helloTimeout = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
            helloTimeout.CancelAfter(_options.HelloTimeout);
            await vm.Agent.HelloAsync(helloTimeout.Token);
        }
        catch (Exception e)
        {
            string stderr = await vm.StopAndGetDiagnosticsAsync();
            if (e is OperationCanceledException && cancellationToken.IsCancellationRequested)
            {
                throw;
            }
            string reason = e is OperationCanceledException
                ? $"its agent did not answer within {_options.HelloTimeout.TotalSeconds:0} s"
                : "it exited before its agent answered";
            throw new SandboxStartException(reason,
                $"sandbox {id} for {spec.TemplateName} did not start: {e.Message}. agent stderr: {stderr}", e);
        }
        vm.StartupTime = started.Elapsed;
        LogStarted(_logger, id, spec.TemplateName, uid ?? -1, started.ElapsedMilliseconds);
        return vm;
    }

    private ProcessStartInfo BuildStartInfo(VmSpec spec, Cgroup? cgroup, int? uid)
    {
        var psi = CgroupLauncher.StartInfo(cgroup);
        var a = psi.ArgumentList;
        if (_seccompPath is not null)
        {
            // The filter reaches bubblewrap as fd 3, opened here (as the server) before the uid drop.
            a.Add("/bin/sh");
            a.Add("-c");
            a.Add("exec \"$@\" 3<\"$0\"");
            a.Add(_seccompPath);
        }
        if (uid is { } u)
        {
            // Its own unprivileged host uid and group; bubblewrap then builds its namespaces without privilege.
            a.Add(_options.SetprivPath);
            a.Add($"--reuid={u}");
            a.Add($"--regid={u}");
            a.Add("--clear-groups");
            a.Add("--");
        }
        a.Add(_options.BwrapPath);
        foreach (string arg in BwrapArguments(spec))
        {
            a.Add(arg);
        }
        return psi;
    }

    internal IEnumerable<string> BwrapArguments(VmSpec spec)
    {
        string size = spec.WritableBytes.ToString();
        return
        [
            "--unshare-all", "--unshare-user", "--disable-userns",
            .. _seccompPath is null ? Array.Empty<string>() : ["--seccomp", "3"],
            "--die-with-parent", "--new-session",
            "--uid", "1000", "--gid", "1000",
            "--hostname", "sandbox",
            "--ro-bind", spec.RootfsDir, "/",
            "--dev", "/dev",
            "--proc", "/proc",
            "--size", size, "--tmpfs", "/tmp",
            "--size", size, "--tmpfs", _options.Home,
            "--chdir", _options.Home,
            "--clearenv",
            "--setenv", "PATH", "/usr/local/bin:/usr/bin:/bin",
            "--setenv", "HOME", _options.Home,
            "--",
            _options.AgentPath, "--home", _options.Home,
        ];
    }

    [LoggerMessage(Level = LogLevel.Warning, Message = "cgroups are not usable: process sandboxes run without memory and pids limits")]
    private static partial void LogNoCgroups(ILogger logger);

    [LoggerMessage(Level = LogLevel.Debug, Message = "sandbox {Id} ({Template}) ready in {Ms} ms as host uid {Uid}")]
    private static partial void LogStarted(ILogger logger, string id, string template, int uid, long ms);

    [LoggerMessage(Level = LogLevel.Warning, Message = "libseccomp does not know these system calls; the filter leaves them out: {Names}")]
    private static partial void LogSeccompUnknown(ILogger logger, string names);

    [LoggerMessage(Level = LogLevel.Warning, Message = "process sandboxes run without their seccomp filter (Seccomp=false)")]
    private static partial void LogNoSeccomp(ILogger logger);

    public void Dispose() => _seccomp?.Dispose();
}

/// <summary>
/// A sandbox could not be started or its agent did not answer. <see cref="Exception.Message"/> has the
/// whole story for the server's log (host paths, the agent's or QEMU's output); <see cref="Reason"/> is
/// what a caller is told, with no host detail.
/// </summary>
public sealed class SandboxStartException : Exception
{
    public SandboxStartException(string message, Exception? inner = null)
        : this(null, message, inner)
    {
    }

    public SandboxStartException(string? reason, string message, Exception? inner = null)
        : base(message, inner)
    {
        Reason = reason ?? inner switch
        {
            TimeoutException or OperationCanceledException => "it did not answer in time",
            SandboxVM.Runtime.Agent.AgentDisconnectedException or EndOfStreamException => "it exited while starting",
            _ => "the runtime could not start it",
        };
    }

    /// <summary>Why, for the caller: no host paths, no host program output.</summary>
    public string Reason { get; }
}
