using System.Security.Cryptography;
using System.Text;
using SandboxVM.Protocol;

namespace SandboxVM.Agent.Tests;

[Trait("tier", "integration")]
public class FileTests : AgentTestBase
{
    [Fact]
    public async Task FileWrite_ThenFileRead_RoundTripsSeveralMegabytesInChunks()
    {
        byte[] content = new byte[5 * 1024 * 1024 + 123];
        new Random(42).NextBytes(content);
        Directory.CreateDirectory(Path.Combine(Agent.Home, "data"));
        StepUser.Own(Path.Combine(Agent.Home, "data"));
        uint id = await Agent.StartAsync(new AgentRequest { Op = Ops.FileWrite, File = new FileRequest { Path = "data/blob.bin" } }, Ct);

        for (int offset = 0; offset < content.Length; offset += Frame.ChunkSize)
        {
            await Agent.SendAsync(FrameType.Data, id, content.AsMemory(offset, Math.Min(Frame.ChunkSize, content.Length - offset)), Ct);
        }
        await Agent.SendAsync(FrameType.DataEnd, id, ReadOnlyMemory<byte>.Empty, Ct);
        var written = (await Agent.CollectAsync(id, Ct)).Response(ProtocolJson.Default.FileInfoBody);
        var read = await Agent.FileAsync(Ops.FileRead, "data/blob.bin", Ct);

        Assert.Equal(Path.Combine(Agent.Home, "data", "blob.bin"), written.Path);
        Assert.Equal(content.Length, written.Size);
        Assert.Equal(FileKind.File, written.Kind);
        Assert.Equal(SHA256.HashData(content), SHA256.HashData(read.Data));
        Assert.All(read.Frames.Where(f => f.Type == FrameType.Data), f => Assert.True(f.Payload.Length <= Frame.ChunkSize));
        Assert.Equal(FrameType.DataEnd, read.Frames[^2].Type);
        Assert.Equal(content.Length, read.Response(ProtocolJson.Default.FileInfoBody).Size);
    }

    [Fact]
    public async Task FileWrite_ReusingTheIdAsSoonAsItsReplyArrives_IsServedEveryTime()
    {
        const uint id = 7;
        for (int i = 0; i < 30; i++)
        {
            await Agent.StartAsync(id, new AgentRequest { Op = Ops.FileWrite, File = new FileRequest { Path = $"f{i}.txt" } }, Ct);
            await Agent.SendAsync(FrameType.Data, id, Encoding.UTF8.GetBytes($"file {i}"), Ct);
            await Agent.SendAsync(FrameType.DataEnd, id, ReadOnlyMemory<byte>.Empty, Ct);

            var written = (await Agent.CollectAsync(id, Ct)).Response(ProtocolJson.Default.FileInfoBody);

            Assert.Equal($"file {i}".Length, written.Size);
        }
    }

    [Fact]
    public async Task FileWrite_WhenTheParentIsMissing_ReturnsNotFound_AndTheAgentKeepsServing()
    {
        uint id = await Agent.StartAsync(new AgentRequest { Op = Ops.FileWrite, File = new FileRequest { Path = "nope/file.txt" } }, Ct);
        await Agent.SendAsync(FrameType.Data, id, "ignored"u8.ToArray(), Ct);
        await Agent.SendAsync(FrameType.DataEnd, id, ReadOnlyMemory<byte>.Empty, Ct);

        var error = (await Agent.CollectAsync(id, Ct)).Error();

        Assert.Equal(ErrorCodes.NotFound, error.Code);
        Assert.Contains(Path.Combine(Agent.Home, "nope"), error.Message);
        Assert.True((await Agent.RequestAsync(new AgentRequest { Op = Ops.Ping }, Ct)).Succeeded);
    }

    [Fact]
    public async Task FileWrite_WhenADataFrameIsTooLarge_FailsWithFrameTooLarge_AndTheAgentKeepsServing()
    {
        uint id = await Agent.StartAsync(new AgentRequest { Op = Ops.FileWrite, File = new FileRequest { Path = "big.bin" } }, Ct);
        byte[] header = new byte[4 + Frame.HeaderSize];
        System.Buffers.Binary.BinaryPrimitives.WriteUInt32BigEndian(header, (uint)(Frame.HeaderSize + Frame.MaxPayload + 1));
        header[4] = (byte)FrameType.Data;
        System.Buffers.Binary.BinaryPrimitives.WriteUInt32BigEndian(header.AsSpan(5), id);

        await Agent.SendRawAsync([.. header, .. new byte[Frame.MaxPayload + 1]], Ct);

        Assert.Equal(ErrorCodes.FrameTooLarge, (await Agent.CollectAsync(id, Ct)).Error().Code);
        Assert.True((await Agent.RequestAsync(new AgentRequest { Op = Ops.Ping }, Ct)).Succeeded);
    }

    [Fact]
    public async Task FileWrite_WhenCancelled_EndsWithCancelledError()
    {
        uint id = await Agent.StartAsync(new AgentRequest { Op = Ops.FileWrite, File = new FileRequest { Path = "partial.bin" } }, Ct);
        await Agent.SendAsync(FrameType.Data, id, new byte[1000], Ct);

        await Agent.SendAsync(FrameType.Cancel, id, ReadOnlyMemory<byte>.Empty, Ct);

        Assert.Equal("cancelled", (await Agent.CollectAsync(id, Ct)).Error().Code);
    }

    [Fact]
    public async Task FileRead_WhenMissing_ReturnsNotFoundNamingThePath()
    {
        var error = (await Agent.FileAsync(Ops.FileRead, "missing.txt", Ct)).Error();

        Assert.Equal(ErrorCodes.NotFound, error.Code);
        Assert.Contains(Path.Combine(Agent.Home, "missing.txt"), error.Message);
    }

    [Fact]
    public async Task FileList_ReturnsEntriesWithKindSizeAndMtime()
    {
        string dir = Path.Combine(Agent.Home, "listing");
        Directory.CreateDirectory(Path.Combine(dir, "sub"));
        await File.WriteAllTextAsync(Path.Combine(dir, "a.txt"), "12345", Ct);
        File.CreateSymbolicLink(Path.Combine(dir, "link"), "a.txt");

        var body = (await Agent.FileAsync(Ops.FileList, "listing", Ct)).Response(ProtocolJson.Default.FileListBody);

        Assert.Equal(dir, body.Path);
        Assert.Equal(["a.txt", "link", "sub"], body.Entries.Select(e => e.Name));
        Assert.Equal([FileKind.File, FileKind.Symlink, FileKind.Directory], body.Entries.Select(e => e.Kind));
        Assert.Equal(5, body.Entries[0].Size);
        long now = DateTimeOffset.UtcNow.ToUnixTimeMilliseconds();
        Assert.InRange(body.Entries[0].MtimeMs, now - 60_000, now + 60_000);
    }

    [Fact]
    public async Task FileStat_DescribesAFile_AndMissingIsNotFound()
    {
        await File.WriteAllTextAsync(Path.Combine(Agent.Home, "s.txt"), "abc", Ct);

        var info = (await Agent.FileAsync(Ops.FileStat, "s.txt", Ct)).Response(ProtocolJson.Default.FileInfoBody);
        var missing = (await Agent.FileAsync(Ops.FileStat, "nothing", Ct)).Error();

        Assert.Equal("s.txt", info.Name);
        Assert.Equal(3, info.Size);
        Assert.Equal(FileKind.File, info.Kind);
        Assert.Equal(ErrorCodes.NotFound, missing.Code);
    }

    [Fact]
    public async Task FileRemove_RemovesFilesAndDirectories_RecursiveOnlyWhenAsked()
    {
        string dir = Path.Combine(Agent.Home, "tree");
        Directory.CreateDirectory(Path.Combine(dir, "deep"));
        await File.WriteAllTextAsync(Path.Combine(dir, "deep", "f"), "x", Ct);
        await File.WriteAllTextAsync(Path.Combine(Agent.Home, "single"), "x", Ct);
        StepUser.Own(dir);

        var file = await Agent.FileAsync(Ops.FileRemove, "single", Ct);
        var notEmpty = await Agent.FileAsync(Ops.FileRemove, "tree", Ct);
        var recursive = await Agent.FileAsync(Ops.FileRemove, "tree", Ct, recursive: true);
        var missing = await Agent.FileAsync(Ops.FileRemove, "tree", Ct);

        Assert.True(file.Succeeded);
        Assert.False(File.Exists(Path.Combine(Agent.Home, "single")));
        Assert.Equal(ErrorCodes.IoError, notEmpty.Error().Code);
        Assert.True(recursive.Succeeded);
        Assert.False(Directory.Exists(dir));
        Assert.Equal(ErrorCodes.NotFound, missing.Error().Code);
    }

    [Fact]
    public async Task FileMkdir_CreatesParentsOnlyWhenRecursive()
    {
        var flat = await Agent.FileAsync(Ops.FileMkdir, "a/b/c", Ct);
        var recursive = await Agent.FileAsync(Ops.FileMkdir, "a/b/c", Ct, recursive: true);
        var again = await Agent.FileAsync(Ops.FileMkdir, "a/b/c", Ct);

        Assert.Equal(ErrorCodes.NotFound, flat.Error().Code);
        Assert.Equal(FileKind.Directory, recursive.Response(ProtocolJson.Default.FileInfoBody).Kind);
        Assert.True(Directory.Exists(Path.Combine(Agent.Home, "a", "b", "c")));
        Assert.True(again.Succeeded);
    }

    [Fact]
    public async Task ArtifactsList_ListsTheOutputsDirectory()
    {
        Directory.CreateDirectory(Path.Combine(Agent.Outputs, "nested"));
        await File.WriteAllTextAsync(Path.Combine(Agent.Outputs, "nested", "r.csv"), "a,b\n", Ct);

        var body = (await Agent.RequestAsync(new AgentRequest { Op = Ops.ArtifactsList }, Ct)).Response(ProtocolJson.Default.ArtifactListBody);

        var artifact = Assert.Single(body.Artifacts);
        Assert.Equal(Path.Combine(Agent.Outputs, "nested", "r.csv"), artifact.Path);
        Assert.Equal(4, artifact.Size);
        Assert.Equal(Convert.ToHexStringLower(SHA256.HashData("a,b\n"u8)), artifact.Sha256);
    }

    [Fact]
    public async Task Reinit_WithEntropyAndSandboxId_ReturnsOk()
    {
        // unix_time_ms 0 leaves the clock alone: the test machine's clock is not ours to set.
        var request = new AgentRequest { Op = Ops.Reinit, Reinit = new ReinitRequest { Entropy = RandomNumberGenerator.GetBytes(64), SandboxId = "sbx-1" } };

        var result = await Agent.RequestAsync(request, Ct);

        Assert.True(result.Response(ProtocolJson.Default.OkBody).Ok);
    }
}

[Trait("tier", "integration")]
public class StartupTests
{
    [Fact]
    public async Task Start_WithASkeleton_SeedsHomeWithoutOverwritingExistingFiles()
    {
        var ct = TestContext.Current.CancellationToken;
        await using var agent = await AgentHarness.StartAsync(root =>
        {
            Directory.CreateDirectory(Path.Combine(root, "skel", ".cache", "fontconfig"));
            File.WriteAllText(Path.Combine(root, "skel", ".cache", "fontconfig", "cache"), "fonts");
            File.WriteAllText(Path.Combine(root, "skel", "keep.txt"), "from skel");
            Directory.CreateDirectory(Path.Combine(root, "home"));
            File.WriteAllText(Path.Combine(root, "home", "keep.txt"), "mine");
        }, launcher: null);
        await agent.HelloAsync(ct);

        var cache = await agent.FileAsync(Ops.FileRead, ".cache/fontconfig/cache", ct);
        var kept = await agent.FileAsync(Ops.FileRead, "keep.txt", ct);

        Assert.Equal("fonts", Encoding.UTF8.GetString(cache.Data));
        Assert.Equal("mine", Encoding.UTF8.GetString(kept.Data));
    }
}
