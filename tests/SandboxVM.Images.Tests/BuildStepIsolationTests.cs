using SandboxVM.TestSupport;

namespace SandboxVM.Images.Tests;

/// <summary>
/// A template's build steps are code from the template's author, run at build time: they get root over
/// the tree they build and nothing over the host.
/// </summary>
[System.Runtime.Versioning.UnsupportedOSPlatform("windows")]
[Trait("tier", "integration")]
public sealed class BuildStepIsolationTests
{
    private static CancellationToken Ct => TestContext.Current.CancellationToken;

    // Each line of /etc/step-report says what one attempt got. Creating a device node needs host root
    // (CAP_MKNOD in the initial user namespace). A fresh procfs mounted by the step is not covered by
    // bubblewrap's read-only /proc/sys; writing a host sysctl through it (core_pattern, with the value it
    // has: a host-root code path, were it changed) needs host root too.
    private const string HostileStep = """
        r=/etc/step-report
        if mknod /tmp/null-device c 1 3 2>/dev/null; then echo mknod=allowed; else echo mknod=refused; fi >> $r
        mkdir /tmp/p
        if mount -t proc proc /tmp/p 2>/dev/null && cat /tmp/p/sys/kernel/core_pattern > /tmp/p/sys/kernel/core_pattern 2>/dev/null; then
          echo host-sysctl=written; else echo host-sysctl=refused; fi >> $r
        umount /tmp/p 2>/dev/null || true
        if [ -e /proc/self/fd/4 ]; then echo info-fd=open; else echo info-fd=closed; fi >> $r
        echo uid=$(id -u) >> $r
        echo "uid_map=$(cat /proc/self/uid_map | tr -s ' ' | sed 's/^ //')" >> $r
        echo made-by-a-step > /etc/made-by-a-step
        touch /etc/owned-by-42 && chown 42:43 /etc/owned-by-42
        cp /bin/busybox /bin/setuid-copy && chmod 4755 /bin/setuid-copy
        """;

    [Fact]
    public async Task BuildStep_RunsAsRootOfItsTree_ButCannotActAsHostRoot()
    {
        SkipUnlessPossible();
        await using var cache = new TestCache();
        var spec = await BusyboxSpecAsync(cache, "step-test", [HostileStep, "echo second-step-sees-the-first > /etc/second"]);

        var image = await cache.Builder().BuildRootfsAsync(spec, null, Ct);

        var root = image.RootfsDir;
        var report = File.ReadAllLines(Path.Combine(root, "etc/step-report")).Select(l => l.Split('=', 2)).ToDictionary(p => p[0], p => p[1]);
        Assert.Equal("refused", report["mknod"]);
        Assert.Equal("refused", report["host-sysctl"]);
        Assert.Equal("closed", report["info-fd"]);
        Assert.Equal("0", report["uid"]);
        // Root inside maps to an unprivileged host id (a range of 65536 ids, never host root).
        var map = report["uid_map"].Split(' ');
        Assert.Equal("0", map[0]);
        Assert.NotEqual("0", map[1]);
        Assert.Equal("65536", map[2]);
        // Owners come back as the step set them: the image is root's, as before.
        Assert.Equal("0:0", await OwnerAsync(root, "etc/made-by-a-step"));
        Assert.Equal("42:43", await OwnerAsync(root, "etc/owned-by-42"));
        Assert.Equal("0:0", await OwnerAsync(root, "etc/passwd"));
        Assert.Equal("0:0", await OwnerAsync(root, "bin/busybox"));
        Assert.Equal("1000:1000", await OwnerAsync(root, "home/sandbox"));
        Assert.Equal("0:0 4755", (await TestCache.RunAsync("stat", "-c", "%u:%g %a", Path.Combine(root, "bin/setuid-copy"))).Trim());
        Assert.Equal("second-step-sees-the-first\n", File.ReadAllText(Path.Combine(root, "etc/second")));
    }

    [Fact]
    public async Task BuildStep_ThatFails_ThrowsWithItsOutput_AndKeepsNothing()
    {
        SkipUnlessPossible();
        await using var cache = new TestCache();
        var spec = await BusyboxSpecAsync(cache, "broken", ["echo about to fail >&2; exit 7"]);

        var e = await Assert.ThrowsAsync<ExternalCommandException>(() => cache.Builder().BuildRootfsAsync(spec, null, Ct));

        Assert.Equal(7, e.ExitCode);
        Assert.Contains("about to fail", e.Message, StringComparison.Ordinal);
        Assert.Contains("exit 7", e.Command, StringComparison.Ordinal);
        Assert.Empty(Directory.GetFileSystemEntries(Path.Combine(cache.Root, "base")));
    }

    private static void SkipUnlessPossible()
    {
        Assert.SkipUnless(Environment.IsPrivilegedProcess, "needs root (image builds keep file owners)");
        Assert.SkipUnless(TestCache.HasTool("umoci") && TestCache.HasTool("bwrap"), "needs umoci and bubblewrap (scripts/install-deps.sh)");
        Assert.SkipUnless(OciTestImage.CanCreate, "needs busybox-static, util-linux and glibc on the host to make the test image");
    }

    /// <summary>A template of a tiny busybox image (an OCI layout the test makes) with <paramref name="steps"/>: a base without mmdebstrap.</summary>
    private static async Task<ImageSpec> BusyboxSpecAsync(TestCache cache, string name, List<string> steps)
    {
        var tree = Path.Combine(cache.Root, "src");
        await OciTestImage.CreateTreeAsync(tree);
        var layout = Path.Combine(cache.Root, "layout");
        await OciTestImage.WriteLayoutAsync(tree, layout, "v1");
        return new ImageSpec(name, "oci-layout", "bookworm", [], steps, cache.WriteAgent(name), Oci: new OciSource(null, layout, "v1"));
    }

    private static async Task<string> OwnerAsync(string root, string relative) =>
        (await TestCache.RunAsync("stat", "-c", "%u:%g", Path.Combine(root, relative))).Trim();
}
