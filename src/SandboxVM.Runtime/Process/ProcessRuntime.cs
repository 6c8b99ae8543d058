using System.Diagnostics;
using Microsoft.Extensions.Logging;
using SandboxVM.Runtime.Cgroups;

namespace SandboxVM.Runtime.Process;

/// <summary>
/// Runs each sandbox as the agent under bubblewrap on the template's unpacked rootfs: read-only root,
/// tmpfs for the writable paths, every namespace unshared (no network device but a dead loopback),
/// an unprivileged host uid, and a cgroup with memory, pids and cpu caps that every process of the
/// sandbox joins before it runs. Shares the host kernel: weaker isolation than a VM, and reported so.
/// </summary>
public sealed partial class ProcessRuntime : IVmRuntime
{
    private readonly ProcessRuntimeOptions _options;
    private readonly CgroupManager _cgroups;
    private readonly ILogger<ProcessRuntime> _logger;
    private readonly bool _useCgroups;

    public ProcessRuntime(ProcessRuntimeOptions options, CgroupManager cgroups, ILogger<ProcessRuntime> logger)
    {
        _options = options;
        _cgroups = cgroups;
        _logger = logger;
        _useCgroups = cgroups.IsUsable;
        if (!_useCgroups)
        {
            if (options.RequireCgroups)
            {
                throw new InvalidOperationException(
                    $"the process runtime needs writable cgroups (found {cgroups.Version}); run as root or set RequireCgroups=false for development");
            }
            LogNoCgroups(_logger);
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
            throw new DirectoryNotFoundException($"rootfs of template {spec.TemplateName} not found at {spec.RootfsDir}");
        }
        var started = Stopwatch.StartNew();
        string id = CgroupManager.OwnedName(CgroupPrefix, Guid.NewGuid().ToString("N")[..12]);
        Cgroup? cgroup = _useCgroups
            ? _cgroups.Create(id, new CgroupLimits((long)spec.MemoryMib << 20, spec.MaxProcesses + AgentPidHeadroom, spec.Vcpus))
            : null;
        System.Diagnostics.Process? process = null;
        try
        {
            process = System.Diagnostics.Process.Start(BuildStartInfo(spec, cgroup))
                ?? throw new InvalidOperationException("bwrap did not start");
            var vm = new ProcessVm(id, spec.TemplateName, process, cgroup, _logger);
            try
            {
                using var helloTimeout = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
                helloTimeout.CancelAfter(_options.HelloTimeout);
                await vm.Agent.HelloAsync(helloTimeout.Token);
            }
            catch (Exception e)
            {
                string stderr = await vm.StopAndGetDiagnosticsAsync();
                throw new SandboxStartException($"sandbox {id} for {spec.TemplateName} did not start: {e.Message}. agent stderr: {stderr}", e);
            }
            vm.StartupTime = started.Elapsed;
            LogStarted(_logger, id, spec.TemplateName, started.ElapsedMilliseconds);
            return vm;
        }
        catch (Exception) when (process is null && cgroup is not null)
        {
            await cgroup.DestroyAsync(CancellationToken.None);
            throw;
        }
    }

    private ProcessStartInfo BuildStartInfo(VmSpec spec, Cgroup? cgroup)
    {
        var psi = CgroupLauncher.StartInfo(cgroup);
        var a = psi.ArgumentList;
        if (Environment.UserName == "root" || Environment.GetEnvironmentVariable("USER") == "root" || IsRoot())
        {
            // Drop to an unprivileged host uid; bubblewrap then builds its namespaces without privilege.
            a.Add(_options.SetprivPath);
            a.Add($"--reuid={_options.HostUid}");
            a.Add($"--regid={_options.HostGid}");
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

    private static bool IsRoot() => File.ReadLines("/proc/self/status")
        .FirstOrDefault(l => l.StartsWith("Uid:", StringComparison.Ordinal))?.Split('\t', StringSplitOptions.RemoveEmptyEntries) is [_, "0", ..];

    internal IEnumerable<string> BwrapArguments(VmSpec spec)
    {
        string size = spec.WritableBytes.ToString();
        return
        [
            "--unshare-all", "--unshare-user", "--disable-userns",
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

    [LoggerMessage(Level = LogLevel.Debug, Message = "sandbox {Id} ({Template}) ready in {Ms} ms")]
    private static partial void LogStarted(ILogger logger, string id, string template, long ms);
}

/// <summary>A sandbox could not be started or its agent did not answer.</summary>
public sealed class SandboxStartException(string message, Exception? inner = null) : Exception(message, inner);
