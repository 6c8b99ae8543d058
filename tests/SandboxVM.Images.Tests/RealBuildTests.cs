using System.Diagnostics;

namespace SandboxVM.Images.Tests;

/// <summary>
/// The one real mmdebstrap build of the suite (network to the Debian mirror, root, one to four minutes):
/// every other image test seeds its base (<see cref="TestCache.SeedBase"/>) or builds one from a tiny
/// busybox OCI image (BuildStepIsolationTests).
/// </summary>
[Trait("Category", "Slow")]
[Trait("tier", "vm")]
public sealed class RealBuildTests
{
    [Fact]
    public async Task BuildRootfs_WithHelloPackage_MakesARunnableRootfsAndCachesIt()
    {
        Assert.SkipUnless(Environment.IsPrivilegedProcess, "needs root (mmdebstrap --mode=root)");
        Assert.SkipUnless(TestCache.HasTool("mmdebstrap"), "needs mmdebstrap");
        await using var cache = new TestCache();
        var spec = new ImageSpec("hello", "debian", "bookworm", ["hello"],
            [
                "echo step-one > /etc/sandboxvm-step",
                // The user exists before build steps run, and steps can chown to it.
                "id -u sandbox > /etc/sandboxvm-uid; touch /opt/sandboxvm/skel/.profile-test",
            ],
            cache.WriteAgent("real"));
        var progress = new List<string>();
        var builder = cache.Builder();

        var image = await builder.BuildRootfsAsync(spec, new Collect(progress), TestContext.Current.CancellationToken);

        Assert.False(image.WasCached);
        var tree = image.RootfsDir;
        Assert.Equal("Hello, world!\n", await TestCache.RunAsync("chroot", tree, "/usr/bin/hello"));
        var agent = Path.Combine(tree, ImageLayout.AgentPath.TrimStart('/'));
        Assert.Equal(File.ReadAllText(spec.AgentPath), File.ReadAllText(agent));
        Assert.Equal("-rwxr-xr-x 0 0", (await TestCache.RunAsync("stat", "-c", "%A %u %g", agent)).Trim());
        Assert.Contains("sandbox:x:1000:1000:", File.ReadAllText(Path.Combine(tree, "etc/passwd")), StringComparison.Ordinal);
        Assert.Contains("sandbox:x:1000:", File.ReadAllText(Path.Combine(tree, "etc/group")), StringComparison.Ordinal);
        Assert.Equal("step-one\n", File.ReadAllText(Path.Combine(tree, "etc/sandboxvm-step")));
        // Nothing of the build host's network identity.
        Assert.Equal("sandbox\n", File.ReadAllText(Path.Combine(tree, "etc/hostname")));
        Assert.DoesNotContain("nameserver", File.ReadAllText(Path.Combine(tree, "etc/resolv.conf")), StringComparison.Ordinal);
        Assert.Contains("localhost", File.ReadAllText(Path.Combine(tree, "etc/hosts")), StringComparison.Ordinal);
        Assert.Equal("1000\n", File.ReadAllText(Path.Combine(tree, "etc/sandboxvm-uid")));
        foreach (var dir in new[] { ImageLayout.HomeDir, ImageLayout.OutputsDir, ImageLayout.SkelDir, ImageLayout.SkelDir + "/.profile-test" })
            Assert.Equal("1000:1000", (await TestCache.RunAsync("stat", "-c", "%u:%g", Path.Combine(tree, dir.TrimStart('/')))).Trim());
        // dpkg filters keep docs out, licences in.
        Assert.False(Directory.Exists(Path.Combine(tree, "usr/share/man/man1")) && Directory.GetFiles(Path.Combine(tree, "usr/share/man/man1")).Length > 0);
        Assert.True(File.Exists(Path.Combine(tree, "usr/share/doc/hello/copyright")));
        Assert.Contains(progress, l => l.StartsWith("I: ", StringComparison.Ordinal));
        Assert.Contains(progress, l => l.Contains("build step 2/2", StringComparison.Ordinal));
        var baseDir = Path.Combine(cache.Root, "base", ImageKeys.Base(spec));
        Assert.True(File.Exists(Path.Combine(baseDir, "build.log")));
        Assert.True(File.Exists(Path.Combine(baseDir, "image.json")));
        Assert.Empty(Directory.GetFileSystemEntries(Path.Combine(cache.Root, "base"), "*.tmp-*"));

        var again = await cache.Builder().BuildRootfsAsync(spec, null, TestContext.Current.CancellationToken);

        Assert.True(again.WasCached);
        Assert.Equal(image.RootfsDir, again.RootfsDir);
    }

    private sealed class Collect(List<string> lines) : IProgress<string>
    {
        public void Report(string value)
        {
            lock (lines)
                lines.Add(value);
        }
    }
}
