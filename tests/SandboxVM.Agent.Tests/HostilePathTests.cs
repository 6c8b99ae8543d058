using System.Diagnostics;
using System.Runtime.Versioning;
using System.Security.Cryptography;
using System.Text;
using SandboxVM.Protocol;

namespace SandboxVM.Agent.Tests;

/// <summary>What user code can leave where the agent (root) will write, read, list or remove next.</summary>
public enum Plant
{
    /// <summary>A symlink to a root-only file.</summary>
    Symlink,
    /// <summary>A FIFO (an open would block until someone opens the other end).</summary>
    Fifo,
    /// <summary>A character device node (1:3, like /dev/null), made by the test as root.</summary>
    Device,
    /// <summary>A hard link to a root-only file, made by the test as root.</summary>
    HardLink,
}

/// <summary>
/// The agent is root; the paths it acts on for the user are the user's to change. Every operation done
/// on the user's behalf (exec's source files, cwd, outputs and artifacts; file_write/read/list/stat/
/// remove/mkdir; artifacts_list) must act with the user's permissions and never follow, open or hash
/// something planted in its way: a symlink, FIFO, device or hard link to a root file is refused with a
/// clear error, the root file is untouched, and the agent is not hung. Needs the test to be root (the
/// agent then runs as root with the default sandbox user 1000:1000, as in a VM).
/// </summary>
[SupportedOSPlatform("linux")]
[Trait("tier", "integration")]
public class HostilePathTests : AgentTestBase
{
    private const string NeedsRoot = "needs root: the agent acts as the sandbox user only when it runs as root";
    private const string Secret = "root's secret\n";

    /// <summary>A root-only (0600) file outside the user's reach, created on first use.</summary>
    private string RootSecret
    {
        get
        {
            string path = Path.Combine(Agent.Root, "root-only.txt");
            if (!File.Exists(path))
            {
                File.WriteAllText(path, Secret);
                File.SetUnixFileMode(path, UnixFileMode.UserRead | UnixFileMode.UserWrite);
            }
            return path;
        }
    }

    /// <summary>A root-only (0700) directory holding the secret and a subdirectory.</summary>
    private string RootDir
    {
        get
        {
            string dir = Path.Combine(Agent.Root, "root-dir");
            if (!Directory.Exists(dir))
            {
                Directory.CreateDirectory(Path.Combine(dir, "inner"));
                File.WriteAllText(Path.Combine(dir, "secret.txt"), Secret);
                File.SetUnixFileMode(dir, UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute);
            }
            return dir;
        }
    }

    /// <summary>Plants at <paramref name="path"/>, whose directory must exist (and be the user's, given before: a chown -R after would follow the hard link).</summary>
    private void PlantAt(string path, Plant plant)
    {
        switch (plant)
        {
            case Plant.Symlink:
                File.CreateSymbolicLink(path, RootSecret);
                Run("chown", "-h", "1000:1000", path);
                break;
            case Plant.Fifo:
                Run("mkfifo", "-m", "0666", path);
                Run("chown", "1000:1000", path);
                break;
            case Plant.Device:
                Run("mknod", "-m", "0666", path, "c", "1", "3");
                break;
            case Plant.HardLink:
                Run("ln", RootSecret, path);
                break;
        }
    }

    /// <summary>The root file is as the test left it: content, mode and owner.</summary>
    private void AssertRootFilesUntouched()
    {
        string secret = Path.Combine(Agent.Root, "root-only.txt");
        if (File.Exists(secret))
        {
            Assert.Equal(Secret, File.ReadAllText(secret));
            Assert.Equal(UnixFileMode.UserRead | UnixFileMode.UserWrite, File.GetUnixFileMode(secret));
            Assert.Equal("0:0", StepUser.OwnerOf(secret));
        }
        string dir = Path.Combine(Agent.Root, "root-dir");
        if (Directory.Exists(dir))
        {
            Assert.Equal(Secret, File.ReadAllText(Path.Combine(dir, "secret.txt")));
            Assert.Equal(["inner", "secret.txt"], Directory.EnumerateFileSystemEntries(dir).Select(Path.GetFileName).Order(StringComparer.Ordinal));
            Assert.Equal("0:0", StepUser.OwnerOf(dir));
        }
    }

    private async Task AssertAgentServesAsync()
    {
        Assert.True((await Agent.RequestAsync(new AgentRequest { Op = Ops.Ping }, Ct)).Succeeded, Agent.AgentStderr);
    }

    /// <summary>Writes go through nothing: each kind is refused before it is opened (a FIFO would block, a device or link would be written).</summary>
    private static string WriteRefusal(Plant plant) => plant == Plant.HardLink ? ErrorCodes.HardLinked : ErrorCodes.NotRegularFile;

    [Fact]
    public async Task Issue10_Run1PlantsMainPyAsASymlink_Run2sSourceDoesNotOverwriteTheRootFile()
    {
        Assert.SkipUnless(StepUser.Switches, NeedsRoot);
        string target = RootSecret;

        var run1 = await Agent.ExecAsync(Shell($"ln -sf '{target}' main.py && echo planted"), Ct);
        var run2 = await Agent.ExecAsync(new ExecRequest
        {
            Cwd = Agent.Home,
            OutputsDir = Agent.Outputs,
            Files = { ["main.py"] = "print('run 2')\n" },
            Run = ["cat", "main.py"],
        }, Ct);

        Assert.Equal("planted\n", run1.StdoutText);
        var error = run2.Error();
        Assert.Equal(ErrorCodes.NotRegularFile, error.Code);
        Assert.Contains(Path.Combine(Agent.Home, "main.py"), error.Message);
        Assert.Contains("symlink", error.Message);
        AssertRootFilesUntouched();
        await AssertAgentServesAsync();
    }

    /// <summary>Every kind of plant user code can leave where the agent is about to write or read.</summary>
    public static TheoryData<Plant> Plants => [Plant.Symlink, Plant.Fifo, Plant.Device, Plant.HardLink];

    /// <summary>The write over <paramref name="plant"/> at <paramref name="path"/> was refused, naming it, and changed nothing.</summary>
    private async Task AssertWriteRefusedAsync(OperationFrames frames, Plant plant, string path)
    {
        var error = frames.Error();
        Assert.Equal(WriteRefusal(plant), error.Code);
        Assert.Contains(path, error.Message);
        AssertRootFilesUntouched();
        await AssertAgentServesAsync();
    }

    [Theory]
    [MemberData(nameof(Plants))]
    public async Task ExecSourceFile_OverAPlant_IsRefused(Plant plant)
    {
        Assert.SkipUnless(StepUser.Switches, NeedsRoot);
        string path = Path.Combine(Agent.Home, "src", "main.sh");
        Directory.CreateDirectory(Path.GetDirectoryName(path)!);
        StepUser.Own(Path.GetDirectoryName(path)!);
        PlantAt(path, plant);
        var exec = Shell("cat src/main.sh");
        exec.Files["src/main.sh"] = "echo overwritten\n";

        var frames = await Agent.ExecAsync(exec, Ct);

        await AssertWriteRefusedAsync(frames, plant, path);
    }

    [Theory]
    [MemberData(nameof(Plants))]
    public async Task FileWrite_OverAPlant_IsRefused(Plant plant)
    {
        Assert.SkipUnless(StepUser.Switches, NeedsRoot);
        string path = Path.Combine(Agent.Home, "upload.bin");
        PlantAt(path, plant);

        var frames = await WriteFileAsync("upload.bin", "overwritten");

        await AssertWriteRefusedAsync(frames, plant, path);
    }

    [Theory]
    [InlineData(Plant.Symlink, "not_regular_file")]
    [InlineData(Plant.Fifo, "not_regular_file")]
    [InlineData(Plant.Device, "not_regular_file")]
    // Reading a hard link is no worse than reading the file: the kernel decides, as for the user.
    [InlineData(Plant.HardLink, "permission_denied")]
    public async Task FileRead_OfAPlant_IsRefused_AndNothingIsSent(Plant plant, string code)
    {
        Assert.SkipUnless(StepUser.Switches, NeedsRoot);
        string path = Path.Combine(Agent.Home, "download.bin");
        PlantAt(path, plant);

        var frames = await Agent.FileAsync(Ops.FileRead, "download.bin", Ct);

        var error = frames.Error();
        Assert.Equal(code, error.Code);
        Assert.Contains(path, error.Message);
        Assert.Empty(frames.Data);
        AssertRootFilesUntouched();
        await AssertAgentServesAsync();
    }

    [Theory]
    [MemberData(nameof(Plants))]
    public async Task ArtifactsList_SkipsAPlant_AndHashesOnlyTheUsersFiles(Plant plant)
    {
        Assert.SkipUnless(StepUser.Switches, NeedsRoot);
        Directory.CreateDirectory(Path.Combine(Agent.Outputs, "sub"));
        await File.WriteAllTextAsync(Path.Combine(Agent.Outputs, "sub", "real.txt"), "mine\n", Ct);
        StepUser.Own(Agent.Outputs);
        PlantAt(Path.Combine(Agent.Outputs, "sub", "planted"), plant);

        var body = (await Agent.RequestAsync(new AgentRequest { Op = Ops.ArtifactsList }, Ct)).Response(ProtocolJson.Default.ArtifactListBody);

        var only = Assert.Single(body.Artifacts);
        Assert.Equal(Path.Combine(Agent.Outputs, "sub", "real.txt"), only.Path);
        Assert.Equal(Convert.ToHexStringLower(SHA256.HashData("mine\n"u8)), only.Sha256);
        AssertRootFilesUntouched();
        await AssertAgentServesAsync();
    }

    [Fact]
    public async Task ExecArtifacts_WhatTheRunPlantsInOutputs_IsNeitherFollowedNorHashed()
    {
        Assert.SkipUnless(StepUser.Switches, NeedsRoot);
        var exec = Shell($"""
            ln -s '{RootSecret}' "$OUT/link.txt"
            mkfifo "$OUT/fifo"
            mkdir "$OUT/dir" && ln -s '{Agent.Root}' "$OUT/dir/up"
            echo result > "$OUT/result.txt"
            """);
        exec.Env["OUT"] = Agent.Outputs;

        var frames = await Agent.ExecAsync(exec, Ct);

        var result = frames.Response(ProtocolJson.Default.ExecResult);
        Assert.True(result.Run!.ExitCode == 0, frames.StderrText);
        var only = Assert.Single(result.Artifacts);
        Assert.Equal(Path.Combine(Agent.Outputs, "result.txt"), only.Path);
        AssertRootFilesUntouched();
        await AssertAgentServesAsync();
    }

    [Theory]
    [MemberData(nameof(Plants))]
    public async Task FileRemove_Recursive_RemovesPlantsAsTheUser_AndCannotRemoveWhatIsRoots(Plant plant)
    {
        Assert.SkipUnless(StepUser.Switches, NeedsRoot);
        string tree = Path.Combine(Agent.Home, "tree");
        Directory.CreateDirectory(Path.Combine(tree, "deep"));
        await File.WriteAllTextAsync(Path.Combine(tree, "deep", "mine.txt"), "x", Ct);
        StepUser.Own(tree);
        PlantAt(Path.Combine(tree, "deep", "planted"), plant);
        // Something of root's inside the user's tree (as a swap during the walk could make it): the
        // user cannot remove it, so neither may the agent on the user's behalf.
        string rootsOwn = Path.Combine(tree, "roots");
        Directory.CreateDirectory(rootsOwn);
        await File.WriteAllTextAsync(Path.Combine(rootsOwn, "keep.txt"), "root's", Ct);

        var frames = await Agent.FileAsync(Ops.FileRemove, "tree", Ct, recursive: true);

        var error = frames.Error();
        Assert.Equal(ErrorCodes.PermissionDenied, error.Code);
        Assert.Contains("permission denied", error.Message);
        Assert.Equal("root's", await File.ReadAllTextAsync(Path.Combine(rootsOwn, "keep.txt"), Ct));
        AssertRootFilesUntouched();
        await AssertAgentServesAsync();
    }

    [Fact]
    public async Task FileOps_ThroughASymlinkToARootOnlyDirectory_HaveOnlyTheUsersPermissions()
    {
        Assert.SkipUnless(StepUser.Switches, NeedsRoot);
        File.CreateSymbolicLink(Path.Combine(Agent.Home, "peek"), RootDir);

        var stat = await Agent.FileAsync(Ops.FileStat, "peek/secret.txt", Ct);
        var list = await Agent.FileAsync(Ops.FileList, "peek/inner", Ct);
        var read = await Agent.FileAsync(Ops.FileRead, "peek/secret.txt", Ct);
        var mkdir = await Agent.FileAsync(Ops.FileMkdir, "peek/new", Ct);
        var remove = await Agent.FileAsync(Ops.FileRemove, "peek/secret.txt", Ct);
        var write = await WriteFileAsync("peek/new.txt", "x");
        var artifacts = await Agent.RequestAsync(new AgentRequest { Op = Ops.ArtifactsList, File = new FileRequest { Path = "peek" } }, Ct);

        Assert.All([stat, list, read, mkdir, remove, write], frames =>
        {
            var error = frames.Error();
            Assert.Equal(ErrorCodes.PermissionDenied, error.Code);
            Assert.Contains("permission denied", error.Message);
        });
        Assert.Empty(read.Data);
        // A directory the user cannot read has no artifacts for the user.
        Assert.Empty(artifacts.Response(ProtocolJson.Default.ArtifactListBody).Artifacts);
        AssertRootFilesUntouched();
        await AssertAgentServesAsync();
    }

    [Fact]
    public async Task ExecCwd_ASymlinkToARootOnlyDirectory_IsRefused()
    {
        Assert.SkipUnless(StepUser.Switches, NeedsRoot);
        File.CreateSymbolicLink(Path.Combine(Agent.Home, "work"), RootDir);
        var exec = Shell("ls; echo ran");
        exec.Cwd = Path.Combine(Agent.Home, "work");

        var frames = await Agent.ExecAsync(exec, Ct);

        // Not followed: a working directory is made or entered as the user, and this one is a symlink.
        var error = frames.Error();
        Assert.Equal(ErrorCodes.IoError, error.Code);
        Assert.Contains(exec.Cwd, error.Message);
        Assert.Empty(frames.Stdout);
        AssertRootFilesUntouched();
    }

    [Fact]
    public async Task ExecCwd_UnderARootOnlyDirectoryThroughASymlink_IsRefused()
    {
        Assert.SkipUnless(StepUser.Switches, NeedsRoot);
        File.CreateSymbolicLink(Path.Combine(Agent.Home, "up"), RootDir);
        var exec = Shell("ls; echo ran");
        exec.Cwd = Path.Combine(Agent.Home, "up", "inner");

        var frames = await Agent.ExecAsync(exec, Ct);

        var error = frames.Error();
        Assert.Equal(ErrorCodes.PermissionDenied, error.Code);
        Assert.Contains("permission denied", error.Message);
        Assert.Empty(frames.Stdout);
        AssertRootFilesUntouched();
    }

    [Fact]
    public async Task ExecOutputsReset_RemovesAsTheUser_AndCannotRemoveWhatIsRoots()
    {
        Assert.SkipUnless(StepUser.Switches, NeedsRoot);
        Directory.CreateDirectory(Agent.Outputs);
        StepUser.Own(Agent.Outputs);
        string rootsOwn = Path.Combine(Agent.Outputs, "roots");
        Directory.CreateDirectory(rootsOwn);
        await File.WriteAllTextAsync(Path.Combine(rootsOwn, "keep.txt"), "root's", Ct);

        var frames = await Agent.ExecAsync(Shell("echo ran"), Ct);

        var error = frames.Error();
        Assert.Equal(ErrorCodes.PermissionDenied, error.Code);
        Assert.Contains("permission denied", error.Message);
        Assert.Equal("root's", await File.ReadAllTextAsync(Path.Combine(rootsOwn, "keep.txt"), Ct));
        Assert.Empty(frames.Stdout);
    }

    [Fact]
    public async Task Artifact_GrowingWhileHashed_IsHashedUpToItsSizeWhenOpened()
    {
        Assert.SkipUnless(StepUser.Switches, NeedsRoot);
        // A writer that left the step's group keeps appending (up to 48 MiB) while the agent hashes.
        var exec = Shell("""
            printf start > "$OUT/grow.bin"
            setsid sh -c 'i=0; while [ $i -lt 768 ]; do head -c 65536 /dev/zero >> "$OUT/grow.bin"; i=$((i+1)); done' </dev/null >/dev/null 2>&1 &
            while [ $(stat -c %s "$OUT/grow.bin") -lt 1048576 ]; do :; done
            """);
        exec.Env["OUT"] = Agent.Outputs;
        exec.KeepOutputs = true;

        var frames = await Agent.ExecAsync(exec, Ct);

        var artifact = Assert.Single(frames.Response(ProtocolJson.Default.ExecResult).Artifacts);
        byte[] prefix = new byte[artifact.Size];
        await using (var file = File.OpenRead(artifact.Path))
        {
            await file.ReadExactlyAsync(prefix, Ct);
        }
        Assert.Equal(Convert.ToHexStringLower(SHA256.HashData(prefix)), artifact.Sha256);
    }

    private async Task<OperationFrames> WriteFileAsync(string path, string content)
    {
        uint id = await Agent.StartAsync(new AgentRequest { Op = Ops.FileWrite, File = new FileRequest { Path = path, Mode = 0b110_100_100 } }, Ct);
        await Agent.SendAsync(FrameType.Data, id, Encoding.UTF8.GetBytes(content), Ct);
        await Agent.SendAsync(FrameType.DataEnd, id, ReadOnlyMemory<byte>.Empty, Ct);
        return await Agent.CollectAsync(id, Ct);
    }

    private static void Run(string program, params string[] args)
    {
        var start = new ProcessStartInfo(program) { RedirectStandardError = true, UseShellExecute = false };
        foreach (string arg in args)
        {
            start.ArgumentList.Add(arg);
        }
        using var process = Process.Start(start)!;
        string error = process.StandardError.ReadToEnd();
        process.WaitForExit();
        Assert.True(process.ExitCode == 0, $"{program} {string.Join(' ', args)} failed: {error}");
    }
}
