using System.Globalization;
using System.Text.Json;
using System.Text.Json.Nodes;

namespace SandboxVM.Runtime.Gvisor;

/// <summary>
/// The OCI runtime config (config.json) of one gVisor sandbox: the template's rootfs read-only at
/// <c>/</c>, size-capped tmpfs on <c>/tmp</c> and the home, fresh pid/ipc/uts/mount/network namespaces
/// (runsc's <c>--network=none</c> leaves only a loopback), the agent as init with a clean environment.
/// Pure: the same spec gives the same text, byte for byte (a restore must see the config its checkpoint saw,
/// and the snapshot key hashes it).
/// </summary>
public static class OciBundle
{
    public const string ConfigFileName = "config.json";

    /// <summary>
    /// What the agent needs as init and root inside the sandbox, and nothing more: switch to the sandbox
    /// user for every step (setpriv: SETUID, SETGID), give that user the files it creates (CHOWN, FOWNER),
    /// read, list and remove what user code wrote whatever its modes (DAC_OVERRIDE), and kill what steps
    /// leave behind (KILL). Steps lose all of them when setpriv drops to uid 1000 (and no_new_privs keeps
    /// set-uid binaries from giving them back).
    /// </summary>
    public static readonly IReadOnlyList<string> AgentCapabilities =
        ["CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FOWNER", "CAP_KILL", "CAP_SETGID", "CAP_SETUID"];

    /// <summary>Open files the agent and user code may have (the agent's pipes and streams count too).</summary>
    public const int OpenFilesLimit = 65536;

    /// <summary>config.json for <paramref name="spec"/>: indented JSON, stable for equal inputs.</summary>
    public static string Config(VmSpec spec, string agentPath, string home)
    {
        ArgumentException.ThrowIfNullOrEmpty(spec.RootfsDir);
        if (!Path.IsPathFullyQualified(spec.RootfsDir))
        {
            throw new ArgumentException($"rootfs of template {spec.TemplateName} must be an absolute path (got '{spec.RootfsDir}')", nameof(spec));
        }
        if (spec.WritableBytes <= 0)
        {
            throw new ArgumentException($"writable size of template {spec.TemplateName} must be positive (got {spec.WritableBytes})", nameof(spec));
        }
        string size = "size=" + spec.WritableBytes.ToString(CultureInfo.InvariantCulture);
        var config = new JsonObject
        {
            ["ociVersion"] = "1.0.2",
            ["process"] = new JsonObject
            {
                ["terminal"] = false,
                ["user"] = new JsonObject { ["uid"] = 0, ["gid"] = 0 },
                ["args"] = Array([agentPath, "--home", home]),
                // Exactly what the process runtime gives its agent; steps get their own env from the agent.
                ["env"] = Array(["PATH=/usr/local/bin:/usr/bin:/bin", "HOME=" + home]),
                ["cwd"] = "/",
                ["capabilities"] = new JsonObject
                {
                    ["bounding"] = Array(AgentCapabilities),
                    ["effective"] = Array(AgentCapabilities),
                    ["permitted"] = Array(AgentCapabilities),
                },
                ["rlimits"] = new JsonArray(new JsonObject
                {
                    ["type"] = "RLIMIT_NOFILE",
                    ["hard"] = OpenFilesLimit,
                    ["soft"] = OpenFilesLimit,
                }),
                ["noNewPrivileges"] = true,
            },
            ["root"] = new JsonObject { ["path"] = spec.RootfsDir, ["readonly"] = true },
            ["hostname"] = "sandbox",
            ["mounts"] = new JsonArray(
                Mount("/proc", "proc", "proc", []),
                Mount("/dev", "tmpfs", "tmpfs", ["nosuid", "strictatime", "mode=755", "size=65536k"]),
                Mount("/sys", "sysfs", "sysfs", ["nosuid", "noexec", "nodev", "ro"]),
                Mount("/tmp", "tmpfs", "tmpfs", ["nosuid", "nodev", "mode=1777", size]),
                Mount(home, "tmpfs", "tmpfs", ["nosuid", "nodev", "mode=755", size])),
            ["linux"] = new JsonObject
            {
                ["namespaces"] = new JsonArray(
                    Namespace("pid"), Namespace("network"), Namespace("ipc"), Namespace("uts"), Namespace("mount")),
                // Inside the sandbox only (the sentry's own view: /proc/meminfo, its cgroupfs); the host caps the
                // whole sandbox with a cgroup of its own (GvisorRuntime), never trusting the sentry to.
                ["resources"] = new JsonObject
                {
                    ["memory"] = new JsonObject { ["limit"] = (long)spec.MemoryMib << 20 },
                    ["pids"] = new JsonObject { ["limit"] = spec.MaxProcesses },
                    ["cpu"] = new JsonObject { ["quota"] = spec.Vcpus * 100_000L, ["period"] = 100_000L },
                },
            },
        };
        return config.ToJsonString(new JsonSerializerOptions { WriteIndented = true });
    }

    private static JsonArray Array(IEnumerable<string> values) => new([.. values.Select(v => (JsonNode)JsonValue.Create(v))]);

    private static JsonObject Mount(string destination, string type, string source, IReadOnlyList<string> options)
    {
        var mount = new JsonObject { ["destination"] = destination, ["type"] = type, ["source"] = source };
        if (options.Count > 0)
        {
            mount["options"] = Array(options);
        }
        return mount;
    }

    private static JsonObject Namespace(string type) => new() { ["type"] = type };
}
