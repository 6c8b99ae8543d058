using System.Globalization;
using System.Net.Http.Json;
using System.Text.Json;
using SandboxVM.TestSupport;

namespace SandboxVM.Functional.Tests;

/// <summary>
/// What the process runtime's isolation refuses, tried from inside a sandbox and from the host: the
/// seccomp filter and a host uid per sandbox.
/// </summary>
[Collection(ProcessServer.Collection)]
[Trait("tier", "vm")]
public sealed class ProcessIsolationTests(ProcessServer server)
{
    private static CancellationToken Ct => TestContext.Current.CancellationToken;

    [Fact]
    public async Task Seccomp_SystemCallsASandboxNeverNeeds_FailWithEperm()
    {
        // x86-64 numbers, called through libc's syscall(); each one succeeds (or fails otherwise than
        // EPERM) for an unprivileged process without the filter.
        const string code = """
            import ctypes, errno, os, subprocess
            libc = ctypes.CDLL(None, use_errno=True)
            libc.syscall.restype = ctypes.c_long
            def call(nr, *args):
                r = libc.syscall(ctypes.c_long(nr), *[ctypes.c_long(a) for a in args])
                return "ok" if r >= 0 else errno.errorcode[ctypes.get_errno()]
            params, user, name, tmp = (ctypes.create_string_buffer(v) for v in (120, b"user", b"k", b"/tmp"))
            print("keyctl", call(250, 0, -3, 1))                      # KEYCTL_GET_KEYRING_ID, session keyring
            print("add_key", call(248, ctypes.addressof(user), ctypes.addressof(name), 0, 0, -3))
            print("userfaultfd", call(323, 1))                        # UFFD_USER_MODE_ONLY: allowed unprivileged
            print("io_uring_setup", call(425, 1, ctypes.addressof(params)))
            print("personality", call(135, 0x0040000))                # ADDR_NO_RANDOMIZE
            print("unshare", call(272, 0x10000000))                   # CLONE_NEWUSER
            r = libc.syscall(ctypes.c_long(56), ctypes.c_long(0x10000000 | 17), *[ctypes.c_long(0)] * 4)  # clone(CLONE_NEWUSER | SIGCHLD)
            if r == 0:
                os._exit(0)
            print("clone_newuser", "ok" if r > 0 else errno.errorcode[ctypes.get_errno()])
            print("mount", call(165, ctypes.addressof(tmp), ctypes.addressof(tmp), 0, 0x1000 | 0x4000, 0))  # bind /tmp on itself
            print("clone3", call(435, 0, 0))
            child = os.fork()
            if child == 0:
                import time; time.sleep(30); os._exit(0)
            print("ptrace", call(101, 16, child, 0, 0))               # PTRACE_ATTACH to its own child
            os.kill(child, 9)
            p = subprocess.run(["unshare", "-U", "true"], capture_output=True, text=True)
            print("unshare_cmd", p.returncode, p.stderr.strip())
            print("fork_works", subprocess.run(["true"]).returncode)
            """;
        var r = await server.RunAsync(new { template = "python-data-analysis", code }, Ct);

        Assert.True(r.Status == "ok", r.ToString());
        var seen = r.Stdout.Split('\n', StringSplitOptions.RemoveEmptyEntries).Select(l => l.Split(' ', 2)).ToDictionary(p => p[0], p => p[1]);
        foreach (string call in new[] { "keyctl", "add_key", "userfaultfd", "io_uring_setup", "personality", "unshare", "clone_newuser", "mount", "ptrace" })
        {
            Assert.True(seen[call] == "EPERM", $"{call}: {seen[call]}\n{r}");
        }
        // clone3 cannot be filtered by its flags: ENOSYS makes glibc fall back to clone.
        Assert.Equal("ENOSYS", seen["clone3"]);
        Assert.Contains("Operation not permitted", seen["unshare_cmd"], StringComparison.Ordinal);
        Assert.Equal("0", seen["fork_works"]);
    }

    [Fact]
    public async Task Seccomp_TheX32SystemCallAbi_KillsTheProcess()
    {
        // getpid through the x32 ABI (syscall number | 0x40000000): without the filter the kernel answers
        // ENOSYS (-38) or the pid; with it the process dies of SIGSYS.
        const string code = """
            import ctypes, mmap
            m = mmap.mmap(-1, 4096, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
            m.write(bytes([0xb8, 0x27, 0, 0, 0x40, 0x0f, 0x05, 0xc3]))  # mov eax, 0x40000027; syscall; ret
            f = ctypes.CFUNCTYPE(ctypes.c_long)(ctypes.addressof(ctypes.c_char.from_buffer(m)))
            print("returned", f(), flush=True)
            """;
        var r = await server.RunAsync(new { template = "python-data-analysis", code }, Ct);

        Assert.DoesNotContain("returned", r.Stdout, StringComparison.Ordinal);
        Assert.True(r.ExitCode == 128 + 31, r.ToString());  // SIGSYS
    }

    [Fact]
    public async Task TwoSandboxes_RunAsDifferentHostUids_AndCannotSignalOrReadEachOther()
    {
        Assert.SkipUnless(Environment.IsPrivilegedProcess && HostTools.HasTool("setpriv"), "needs root and setpriv to act as one sandbox's host uid");
        string a = await server.CreateSandboxAsync("python-data-analysis", Ct);
        try
        {
            string b = await server.CreateSandboxAsync("python-data-analysis", Ct);
            try
            {
                var (pidA, uidA) = await HostProcessOfAsync(a);
                var (pidB, uidB) = await HostProcessOfAsync(b);

                Assert.NotEqual(uidA, uidB);
                Assert.NotEqual(0, uidA);
                Assert.NotEqual(0, uidB);
                // As sandbox A's host uid (what a process that left A's namespaces would be): B is out of reach.
                string probe = $"kill -0 {pidB} && echo signal=sent || echo signal=refused; cat /proc/{pidB}/environ >/dev/null && echo environ=read || echo environ=refused";
                string asA = await HostTools.RunAsync("setpriv", $"--reuid={uidA}", $"--regid={uidA}", "--clear-groups", "--", "/bin/sh", "-c", probe);
                Assert.Contains("signal=refused", asA, StringComparison.Ordinal);
                Assert.Contains("environ=refused", asA, StringComparison.Ordinal);
                // ...while its own processes are its own (the probe itself is sound).
                string own = await HostTools.RunAsync("setpriv", $"--reuid={uidA}", $"--regid={uidA}", "--clear-groups", "--", "/bin/sh", "-c", $"kill -0 {pidA} && echo signal=sent");
                Assert.Contains("signal=sent", own, StringComparison.Ordinal);
            }
            finally
            {
                await server.DeleteSandboxAsync(b);
            }
        }
        finally
        {
            await server.DeleteSandboxAsync(a);
        }
    }


    /// <summary>A host pid of a sandbox's processes (found by its pid namespace) and the host uid it runs as.</summary>
    private async Task<(int Pid, int Uid)> HostProcessOfAsync(string id)
    {
        using var response = await server.Http.PostAsJsonAsync($"/v1/sandboxes/{id}/run",
            new { code = "import os\nprint(os.readlink('/proc/self/ns/pid'))\n" }, ServerFixture.Json, Ct);
        string text = await response.Content.ReadAsStringAsync(Ct);
        var r = JsonSerializer.Deserialize<RunResultDto>(text, ServerFixture.Json)!;
        Assert.True(r.Status == "ok", text);
        string ns = r.Stdout.Trim();
        foreach (string dir in Directory.EnumerateDirectories("/proc"))
        {
            if (!int.TryParse(Path.GetFileName(dir), NumberStyles.None, CultureInfo.InvariantCulture, out int pid))
            {
                continue;
            }
            try
            {
                if (new FileInfo(Path.Combine(dir, "ns", "pid")).LinkTarget == ns)
                {
                    string status = await File.ReadAllTextAsync(Path.Combine(dir, "status"), Ct);
                    string uid = status.Split('\n').First(l => l.StartsWith("Uid:", StringComparison.Ordinal)).Split('\t', StringSplitOptions.RemoveEmptyEntries)[1];
                    return (pid, int.Parse(uid, CultureInfo.InvariantCulture));
                }
            }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException)
            {
                // Gone meanwhile, or not ours to look at.
            }
        }
        throw new InvalidOperationException($"no host process in pid namespace {ns}");
    }
}
