using System.Runtime.Versioning;
using System.Text;
using SandboxVM.Protocol;

namespace SandboxVM.Agent.Tests;

/// <summary>
/// An agent that runs as root (as in a VM, where it is init) runs user work as the sandbox user
/// 1000:1000 without supplementary groups, and gives what it creates for that work to that user.
/// These tests need the test process to be root (the agent is started as the test's user).
/// </summary>
[SupportedOSPlatform("linux")]
[Trait("tier", "integration")]
public class SandboxUserTests : AgentTestBase
{
    private const string NeedsRoot = "needs root: the agent switches users only when it runs as root";

    private ExecRequest Python(string code, bool? persistent) => new()
    {
        Cwd = Agent.Home,
        OutputsDir = Agent.Outputs,
        Files = { ["main.py"] = code },
        Run = ["python3", "-u", "main.py"],
        KeepOutputs = persistent == true,
        ForkServer = persistent is { } p ? new ForkServerRequest { Persistent = p } : null,
    };

    [Fact]
    public async Task Steps_RunAsTheSandboxUser_WithoutGroupsOrNewPrivileges()
    {
        Assert.SkipUnless(StepUser.Switches, NeedsRoot);

        var frames = await Agent.ExecAsync(Shell("id -u; id -g; id -G; grep '^NoNewPrivs:' /proc/self/status"), Ct);

        Assert.Equal(0, frames.Response(ProtocolJson.Default.ExecResult).Run!.ExitCode);
        Assert.Equal("1000\n1000\n1000\nNoNewPrivs:\t1\n", frames.StdoutText);
    }

    [Theory]
    [InlineData(null)]
    [InlineData(false)]
    [InlineData(true)]
    public async Task PythonRuns_PlainForkedAndInTheKernel_RunAsTheSandboxUser(bool? persistent)
    {
        Assert.SkipUnless(StepUser.Switches, NeedsRoot);

        var frames = await Agent.ExecAsync(Python("import os\nprint(os.getuid(), os.getgid(), os.getgroups())\n", persistent), Ct);

        var run = frames.Response(ProtocolJson.Default.ExecResult).Run!;
        Assert.True(run.ExitCode == 0, frames.StderrText + Agent.AgentStderr);
        Assert.Equal(persistent is not null, run.Forked);
        Assert.Equal("1000 1000 []\n", frames.StdoutText);
    }

    [Fact]
    public async Task ProcessCap_BindsTheSandboxUser()
    {
        Assert.SkipUnless(StepUser.Switches, NeedsRoot);

        // One process allowed, and the shell is it: its fork for /bin/true fails. Root would ignore the cap.
        var frames = await Agent.ExecAsync(Shell("exec prlimit --nproc=1 -- sh -c '/bin/true && echo forked'"), Ct);

        Assert.NotEqual(0, frames.Response(ProtocolJson.Default.ExecResult).Run!.ExitCode);
        Assert.DoesNotContain("forked", frames.StdoutText);
    }

    [Fact]
    public async Task Steps_CannotSignalTheAgent()
    {
        Assert.SkipUnless(StepUser.Switches, NeedsRoot);
        var exec = Shell("kill -0 \"$AGENT\" 2>&1; echo \"exit $?\"");
        exec.Env["AGENT"] = Agent.Pid.ToString(System.Globalization.CultureInfo.InvariantCulture);

        var frames = await Agent.ExecAsync(exec, Ct);

        Assert.Contains("not permitted", frames.StdoutText);
        Assert.EndsWith("exit 1\n", frames.StdoutText);
        Assert.False(Agent.Process.HasExited);
    }

    [Fact]
    public async Task WhatTheAgentCreates_BelongsToTheSandboxUser_AndStepsCanChangeIt()
    {
        Assert.SkipUnless(StepUser.Switches, NeedsRoot);
        string work = Path.Combine(Agent.Home, "work", "deep");
        var upload = await WriteFileAsync("upload.txt", "from the host");
        var mkdir = await Agent.FileAsync(Ops.FileMkdir, "made/a/b", Ct, recursive: true);
        var exec = Shell("""
            cat ../../upload.txt && echo changed > ../../upload.txt
            echo step > ../../made/a/b/by-step.txt
            echo out > "$OUT/out.txt"
            cat sub/dir/given.txt
            """);
        exec.Cwd = work;
        exec.Files["sub/dir/given.txt"] = "given\n";
        exec.Env["OUT"] = Agent.Outputs;

        var frames = await Agent.ExecAsync(exec, Ct);

        Assert.True(upload.Succeeded && mkdir.Succeeded);
        Assert.True(frames.Response(ProtocolJson.Default.ExecResult).Run!.ExitCode == 0, frames.StderrText);
        Assert.Equal("from the hostgiven\n", frames.StdoutText);
        Assert.Equal("changed\n", await File.ReadAllTextAsync(Path.Combine(Agent.Home, "upload.txt"), Ct));
        string[] created =
        [
            Agent.Home, "upload.txt", "made", "made/a", "made/a/b", "work", "work/deep", "work/deep/sub", "work/deep/sub/dir",
            "work/deep/sub/dir/given.txt", Agent.Outputs,
        ];
        Assert.All(created, path => Assert.Equal("1000:1000", StepUser.OwnerOf(Path.Combine(Agent.Home, path))));
    }

    [Fact]
    public async Task Upload_IsWrittenAsTheUser_OverTheUsersFile_ButNotOverRoots()
    {
        Assert.SkipUnless(StepUser.Switches, NeedsRoot);
        await File.WriteAllTextAsync(Path.Combine(Agent.Home, "mine.txt"), "old", Ct);
        StepUser.Own(Path.Combine(Agent.Home, "mine.txt"));
        // A file of root's in the user's home: the user could remove it, but not write it.
        await File.WriteAllTextAsync(Path.Combine(Agent.Home, "roots.txt"), "root's", Ct);

        var overMine = await WriteFileAsync("mine.txt", "uploaded");
        var overRoots = await WriteFileAsync("roots.txt", "uploaded");

        Assert.True(overMine.Succeeded);
        Assert.Equal("uploaded", await File.ReadAllTextAsync(Path.Combine(Agent.Home, "mine.txt"), Ct));
        Assert.Equal("1000:1000", StepUser.OwnerOf(Path.Combine(Agent.Home, "mine.txt")));
        Assert.Equal(ErrorCodes.PermissionDenied, overRoots.Error().Code);
        Assert.Contains("permission denied", overRoots.Error().Message);
        Assert.Equal("root's", await File.ReadAllTextAsync(Path.Combine(Agent.Home, "roots.txt"), Ct));
    }

    [Fact]
    public async Task HomeSkeleton_CopiedAtStart_BelongsToTheSandboxUser()
    {
        Assert.SkipUnless(StepUser.Switches, NeedsRoot);
        await using var agent = await AgentHarness.StartAsync(root =>
        {
            Directory.CreateDirectory(Path.Combine(root, "skel", ".config", "matplotlib"));
            File.WriteAllText(Path.Combine(root, "skel", ".config", "matplotlib", "fontlist.json"), "{}");
            File.CreateSymbolicLink(Path.Combine(root, "skel", "link"), "/etc/passwd");
        }, null);
        await agent.HelloAsync(Ct);

        var frames = await agent.ExecAsync(new ExecRequest
        {
            Cwd = agent.Home,
            OutputsDir = agent.Outputs,
            Run = ["sh", "-c", "echo updated > .config/matplotlib/fontlist.json && cat .config/matplotlib/fontlist.json"],
        }, Ct);

        Assert.Equal("updated\n", frames.StdoutText);
        Assert.All([".config", ".config/matplotlib", ".config/matplotlib/fontlist.json", "link"],
            path => Assert.Equal("1000:1000", StepUser.OwnerOf(Path.Combine(agent.Home, path))));
        Assert.Equal("0:0", StepUser.OwnerOf("/etc/passwd"));
    }

    [Theory]
    [InlineData("4242:4343", "4242 4343")]
    [InlineData("self", "0 0")]
    public async Task UserOption_ChoosesWhoStepsRunAs(string option, string expected)
    {
        Assert.SkipUnless(StepUser.Switches, NeedsRoot);
        await using var agent = await AgentHarness.StartAsync("--user", option);
        await agent.HelloAsync(Ct);

        var frames = await agent.ExecAsync(new ExecRequest
        {
            Cwd = agent.Root,
            OutputsDir = agent.Outputs,
            Run = ["sh", "-c", "echo $(id -u) $(id -g)"],
        }, Ct);

        Assert.Equal(expected + "\n", frames.StdoutText);
    }

    private async Task<OperationFrames> WriteFileAsync(string path, string content)
    {
        uint id = await Agent.StartAsync(new AgentRequest { Op = Ops.FileWrite, File = new FileRequest { Path = path, Mode = 0b110_100_100 } }, Ct);
        await Agent.SendAsync(FrameType.Data, id, Encoding.UTF8.GetBytes(content), Ct);
        await Agent.SendAsync(FrameType.DataEnd, id, ReadOnlyMemory<byte>.Empty, Ct);
        return await Agent.CollectAsync(id, Ct);
    }
}
