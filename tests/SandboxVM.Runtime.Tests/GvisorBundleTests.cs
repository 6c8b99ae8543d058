using System.Text.Json;
using SandboxVM.Runtime.Gvisor;

namespace SandboxVM.Runtime.Tests;

/// <summary>The OCI config of a gVisor sandbox and the runsc command lines: what the sandbox may and may not do.</summary>
[Trait("tier", "unit")]
public sealed class GvisorBundleTests
{
    private static VmSpec Spec(string rootfs = "/var/cache/sandboxvm/rootfs/abc/rootfs") => new()
    {
        TemplateName = "python-data-analysis",
        RootfsDir = rootfs,
        MemoryMib = 768,
        Vcpus = 2,
        MaxProcesses = 96,
        WritableBytes = 300L << 20,
    };

    private static JsonElement Config(VmSpec? spec = null) =>
        JsonDocument.Parse(OciBundle.Config(spec ?? Spec(), "/opt/sandboxvm/bin/sandboxvm-agent", "/home/sandbox")).RootElement;

    private static List<string> Strings(JsonElement array) => [.. array.EnumerateArray().Select(e => e.GetString()!)];

    private static JsonElement MountAt(JsonElement config, string destination) =>
        config.GetProperty("mounts").EnumerateArray().Single(m => m.GetProperty("destination").GetString() == destination);

    [Fact]
    public void Root_is_the_templates_rootfs_read_only()
    {
        var root = Config().GetProperty("root");
        Assert.Equal("/var/cache/sandboxvm/rootfs/abc/rootfs", root.GetProperty("path").GetString());
        Assert.True(root.GetProperty("readonly").GetBoolean());
    }

    [Fact]
    public void Tmp_and_home_are_tmpfs_capped_at_the_writable_size()
    {
        var config = Config();
        foreach (string path in new[] { "/tmp", "/home/sandbox" })
        {
            var mount = MountAt(config, path);
            Assert.Equal("tmpfs", mount.GetProperty("type").GetString());
            Assert.Contains($"size={300L << 20}", Strings(mount.GetProperty("options")));
            Assert.Contains("nosuid", Strings(mount.GetProperty("options")));
        }
        // Nothing else is writable: no bind mount of any host path.
        Assert.DoesNotContain(config.GetProperty("mounts").EnumerateArray(), m => m.GetProperty("type").GetString() == "bind");
    }

    [Fact]
    public void The_agent_is_init_as_root_with_a_clean_environment()
    {
        var process = Config().GetProperty("process");
        Assert.Equal(["/opt/sandboxvm/bin/sandboxvm-agent", "--home", "/home/sandbox"], Strings(process.GetProperty("args")));
        Assert.Equal(["PATH=/usr/local/bin:/usr/bin:/bin", "HOME=/home/sandbox"], Strings(process.GetProperty("env")));
        Assert.Equal(0, process.GetProperty("user").GetProperty("uid").GetInt32());
        Assert.False(process.GetProperty("terminal").GetBoolean());
        Assert.True(process.GetProperty("noNewPrivileges").GetBoolean());
    }

    [Fact]
    public void Capabilities_are_only_those_the_agent_needs_and_none_is_inheritable()
    {
        var caps = Config().GetProperty("process").GetProperty("capabilities");
        string[] expected = ["CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FOWNER", "CAP_KILL", "CAP_SETGID", "CAP_SETUID"];
        foreach (string set in new[] { "bounding", "effective", "permitted" })
        {
            Assert.Equal(expected, Strings(caps.GetProperty(set)).Order());
        }
        Assert.False(caps.TryGetProperty("inheritable", out _));
        Assert.False(caps.TryGetProperty("ambient", out _));
    }

    [Fact]
    public void Namespaces_include_a_network_namespace_of_its_own()
    {
        var types = Config().GetProperty("linux").GetProperty("namespaces").EnumerateArray().Select(n => n.GetProperty("type").GetString()).ToList();
        Assert.Equal(["ipc", "mount", "network", "pid", "uts"], types.Order());
        // No path: a new namespace, never the host's or another sandbox's.
        Assert.All(Config().GetProperty("linux").GetProperty("namespaces").EnumerateArray(), n => Assert.False(n.TryGetProperty("path", out _)));
    }

    [Fact]
    public void Resources_carry_the_templates_limits()
    {
        var resources = Config().GetProperty("linux").GetProperty("resources");
        Assert.Equal(768L << 20, resources.GetProperty("memory").GetProperty("limit").GetInt64());
        Assert.Equal(96, resources.GetProperty("pids").GetProperty("limit").GetInt32());
        Assert.Equal(200_000, resources.GetProperty("cpu").GetProperty("quota").GetInt64());
    }

    [Fact]
    public void Equal_specs_give_identical_text()
    {
        // A restore must see the config its checkpoint saw, and the snapshot key hashes it.
        Assert.Equal(OciBundle.Config(Spec(), "/a", "/home/sandbox"), OciBundle.Config(Spec(), "/a", "/home/sandbox"));
        Assert.NotEqual(OciBundle.Config(Spec(), "/a", "/home/sandbox"), OciBundle.Config(Spec() with { MemoryMib = 512 }, "/a", "/home/sandbox"));
    }

    [Theory]
    [InlineData("relative/rootfs")]
    [InlineData("")]
    public void A_rootfs_that_is_not_an_absolute_path_is_refused(string rootfs) =>
        Assert.ThrowsAny<ArgumentException>(() => OciBundle.Config(Spec(rootfs), "/a", "/home/sandbox"));

    [Fact]
    public void A_writable_size_of_zero_is_refused() =>
        Assert.Throws<ArgumentException>(() => OciBundle.Config(Spec() with { WritableBytes = 0 }, "/a", "/home/sandbox"));

    [Fact]
    public void Every_runsc_command_uses_the_servers_state_dir_no_network_no_overlay_and_the_platform()
    {
        var runsc = new Runsc("/usr/bin/runsc", "/run/sandboxvm/gvisor/1-ab/state", "systrap", rootless: false);
        IReadOnlyList<string>[] commands =
        [
            runsc.RunArguments("/b", "gvisor-1-x"),
            runsc.RestoreArguments("/b", "/img", "gvisor-1-x"),
            runsc.CheckpointArguments("/img", "gvisor-1-x"),
            runsc.DeleteArguments("gvisor-1-x"),
        ];
        foreach (var args in commands)
        {
            Assert.Equal(["--root", "/run/sandboxvm/gvisor/1-ab/state", "--platform", "systrap", "--network=none", "--overlay2=none", "--ignore-cgroups"],
                args.Take(7));
            Assert.DoesNotContain("--rootless", args);
            Assert.Equal("gvisor-1-x", args[^1]);
        }
        Assert.Equal(["run", "--bundle", "/b", "gvisor-1-x"], commands[0].Skip(7));
        Assert.Equal(["restore", "--image-path", "/img", "--bundle", "/b", "gvisor-1-x"], commands[1].Skip(7));
        Assert.Equal(["checkpoint", "--image-path", "/img", "--compression=none", "--exclude-committed-zero-pages", "gvisor-1-x"], commands[2].Skip(7));
        Assert.Equal(["delete", "--force", "gvisor-1-x"], commands[3].Skip(7));
    }

    [Fact]
    public void Without_root_runsc_runs_rootless() =>
        Assert.Contains("--rootless", new Runsc("/usr/bin/runsc", "/s", "systrap", rootless: true).RunArguments("/b", "x"));
}
