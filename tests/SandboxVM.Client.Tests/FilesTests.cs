using System.Net;
using System.Net.Http.Headers;
using System.Text;

namespace SandboxVM.Client.Tests;

[Trait("tier", "unit")]
public class FilesTests
{
    private static CancellationToken Ct => TestContext.Current.CancellationToken;

    private static async Task<(Sandbox Sandbox, FakeSandboxServer Server)> CreateAsync()
    {
        var server = new FakeSandboxServer();
        var sb = await Sandbox.CreateAsync("python-data-analysis", server.Options(), Ct);
        return (sb, server);
    }

    [Fact]
    public async Task Write_PutsRawBytesWithThePathEscapedInTheQuery()
    {
        var (sb, server) = await CreateAsync();
        await using var _ = sb;

        var info = await sb.Files.WriteAsync("my data/a b+c&d=e%.csv", "x,y\n1,2\n", Ct);

        Assert.Equal(HttpMethod.Put, server.Last.Method);
        Assert.Equal("/v1/sandboxes/sb-1/files?path=my%20data%2Fa%20b%2Bc%26d%3De%25.csv", server.Last.PathAndQuery);
        Assert.Equal("application/octet-stream", server.Last.Content!.Headers.ContentType!.MediaType);
        Assert.Equal("x,y\n1,2\n"u8.ToArray(), server.Last.Body);
        Assert.True(server.Files.ContainsKey("my data/a b+c&d=e%.csv"));
        Assert.Equal("/home/sandbox/my data/a b+c&d=e%.csv", info.Path);
        Assert.Equal(SandboxFileKind.File, info.Kind);
        Assert.Equal(8, info.Size);
    }

    [Fact]
    public async Task Write_FromANonSeekableStream_StreamsTheBodyChunked_AndLeavesTheStreamOpen()
    {
        var (sb, server) = await CreateAsync();
        await using var _ = sb;
        var source = new ScriptedStream("part one,", "part two");
        var readBeforeSend = -1;
        server.BeforeBody = _ => readBeforeSend = source.ReadCalls;

        await sb.Files.WriteAsync("big.bin", source, Ct);

        Assert.Equal(0, readBeforeSend);
        Assert.IsNotType<ByteArrayContent>(server.Last.Content);
        Assert.Null(server.Last.ContentLength);
        Assert.Equal("part one,part two"u8.ToArray(), server.Last.Body);
        Assert.False(source.Disposed);
    }

    [Fact]
    public async Task Write_FromASeekableStream_SendsFromItsPositionWithALength()
    {
        var (sb, server) = await CreateAsync();
        await using var _ = sb;
        using var source = new MemoryStream("skip:payload"u8.ToArray());
        source.Position = 5;

        await sb.Files.WriteAsync("p.txt", source, Ct);

        Assert.Equal(7, server.Last.ContentLength);
        Assert.Equal("payload"u8.ToArray(), server.Last.Body);
        Assert.True(source.CanRead, "the caller's stream must not be disposed");
    }

    [Fact]
    public async Task Files_RoundTripEveryByteValueThroughWriteReadReadToAndOpenRead()
    {
        var (sb, _) = await CreateAsync();
        await using var __ = sb;
        var bytes = Enumerable.Range(0, 256).Select(i => (byte)i).Concat(Encoding.UTF8.GetBytes("é✓")).ToArray();

        await sb.Files.WriteAsync("/tmp/all bytes.bin", bytes, Ct);

        Assert.Equal(bytes, await sb.Files.ReadAsync("/tmp/all bytes.bin", Ct));
        using var copy = new MemoryStream();
        await sb.Files.ReadToAsync("/tmp/all bytes.bin", copy, Ct);
        Assert.Equal(bytes, copy.ToArray());
        await using (var stream = await sb.Files.OpenReadAsync("/tmp/all bytes.bin", Ct))
        {
            using var read = new MemoryStream();
            await stream.CopyToAsync(read, Ct);
            Assert.Equal(bytes, read.ToArray());
        }

        await sb.Files.WriteAsync("note.txt", "héllo ✓", Ct);
        Assert.Equal("héllo ✓", await sb.Files.ReadTextAsync("note.txt", Ct));
    }

    [Fact]
    public async Task Read_AsksForOctetsWithTheEscapedPath()
    {
        var (sb, server) = await CreateAsync();
        await using var _ = sb;
        await sb.Files.WriteAsync("dir/a b.txt", "x", Ct);

        await sb.Files.ReadAsync("dir/a b.txt", Ct);

        Assert.Equal(HttpMethod.Get, server.Last.Method);
        Assert.Equal("/v1/sandboxes/sb-1/files?path=dir%2Fa%20b.txt", server.Last.PathAndQuery);
        Assert.Equal("application/octet-stream", server.Last.Request.Headers.Accept.First().MediaType);
    }

    [Fact]
    public async Task OpenRead_ReturnsBeforeTheWholeFileHasArrived()
    {
        var gate = new TaskCompletionSource();
        var body = new ScriptedStream("first ", gate, "second");
        var handler = new FakeHandler(_ => new HttpResponseMessage(HttpStatusCode.OK) { Content = new StreamContent(body) });
        using var client = new SandboxClient(new SandboxClientOptions { HttpMessageHandler = handler });
        var files = new SandboxFiles(client, "sb-1");

        await using var stream = await files.OpenReadAsync("big.bin", Ct).WaitAsync(TimeSpan.FromSeconds(10), Ct);
        var buffer = new byte[6];
        await stream.ReadExactlyAsync(buffer, Ct);
        Assert.Equal("first "u8.ToArray(), buffer);
        Assert.Equal(0, body.GatesPassed);

        gate.SetResult();
        using var rest = new MemoryStream();
        await stream.CopyToAsync(rest, Ct);
        Assert.Equal("second"u8.ToArray(), rest.ToArray());
        await stream.DisposeAsync();
        Assert.True(body.Disposed);
    }

    [Fact]
    public async Task ReadTo_WhenTheConnectionBreaksMidway_ThrowsConnectionException()
    {
        var body = new ScriptedStream("partial", new HttpIOException(HttpRequestError.ResponseEnded, "response ended early"));
        var handler = new FakeHandler(_ => new HttpResponseMessage(HttpStatusCode.OK) { Content = new StreamContent(body) });
        using var client = new SandboxClient(new SandboxClientOptions { HttpMessageHandler = handler, BaseUrl = "http://files.test" });
        var files = new SandboxFiles(client, "sb-1");

        var ex = await Assert.ThrowsAsync<SandboxConnectionException>(() => files.ReadToAsync("a", new MemoryStream(), Ct));

        Assert.Contains("http://files.test", ex.Message, StringComparison.Ordinal);
        Assert.IsType<HttpIOException>(ex.InnerException);
    }

    [Fact]
    public async Task List_ReadsEntries()
    {
        var (sb, server) = await CreateAsync();
        await using var _ = sb;
        await sb.Files.WriteAsync("data/a.csv", "1", Ct);
        await sb.Files.WriteAsync("data/b.csv", "22", Ct);
        await sb.Files.WriteAsync("other.txt", "x", Ct);

        var entries = await sb.Files.ListAsync("data", Ct);

        Assert.Equal("/v1/sandboxes/sb-1/files?path=data&list=true", server.Last.PathAndQuery);
        Assert.Equal(["a.csv", "b.csv"], entries.Select(e => e.Name).Order());
        Assert.All(entries, e => Assert.Equal(SandboxFileKind.File, e.Kind));
        Assert.Equal(new DateTimeOffset(2026, 11, 28, 21, 30, 0, TimeSpan.Zero), entries[0].Mtime);
        Assert.Equal(2, entries.Single(e => e.Name == "b.csv").Size);
    }

    [Fact]
    public async Task List_WithoutAPath_ListsTheWorkingDirectory()
    {
        var (sb, server) = await CreateAsync();
        await using var _ = sb;
        await sb.Files.WriteAsync("top.txt", "1", Ct);

        var entries = await sb.Files.ListAsync(cancellationToken: Ct);

        Assert.Equal("/v1/sandboxes/sb-1/files?path=.&list=true", server.Last.PathAndQuery);
        Assert.Equal("top.txt", Assert.Single(entries).Name);
    }

    [Fact]
    public async Task Remove_SendsDelete_WithRecursiveOnlyWhenAsked()
    {
        var (sb, server) = await CreateAsync();
        await using var _ = sb;
        await sb.Files.WriteAsync("a b", "1", Ct);
        await sb.Files.WriteAsync("dir", "1", Ct);

        await sb.Files.RemoveAsync("a b", cancellationToken: Ct);
        Assert.Equal("/v1/sandboxes/sb-1/files?path=a%20b", server.Last.PathAndQuery);
        await sb.Files.RemoveAsync("dir", recursive: true, Ct);
        Assert.Equal("/v1/sandboxes/sb-1/files?path=dir&recursive=true", server.Last.PathAndQuery);

        Assert.Equal(HttpMethod.Delete, server.Last.Method);
        Assert.Empty(server.Files);
    }

    [Fact]
    public async Task MakeDir_PostsToMkdirWithThePath()
    {
        var (sb, server) = await CreateAsync();
        await using var _ = sb;

        var dir = await sb.Files.MakeDirAsync("out/plots 2", Ct);

        Assert.Equal(HttpMethod.Post, server.Last.Method);
        Assert.Equal("/v1/sandboxes/sb-1/files/mkdir?path=out%2Fplots%202", server.Last.PathAndQuery);
        Assert.True(dir.IsDirectory);
        Assert.Equal("plots 2", dir.Name);
    }

    [Fact]
    public async Task Read_OfAMissingFile_ThrowsFileNotFound_NotSandboxNotFound()
    {
        var (sb, _) = await CreateAsync();
        await using var __ = sb;

        var ex = await Assert.ThrowsAsync<SandboxFileNotFoundException>(() => sb.Files.ReadAsync("missing.txt", Ct));

        Assert.Equal(HttpStatusCode.NotFound, ex.StatusCode);
        Assert.Equal("file_not_found", ex.Code);
        Assert.Contains("missing.txt", ex.Message, StringComparison.Ordinal);
        await Assert.ThrowsAsync<SandboxFileNotFoundException>(() => sb.Files.OpenReadAsync("missing.txt", Ct));
        await Assert.ThrowsAsync<SandboxFileNotFoundException>(() => sb.Files.RemoveAsync("missing.txt", cancellationToken: Ct));
    }

    [Fact]
    public async Task Write_OverTheLimit_ThrowsFileTooLarge()
    {
        var (sb, server) = await CreateAsync();
        await using var _ = sb;
        server.MaxUploadBytes = 10;

        var ex = await Assert.ThrowsAsync<FileTooLargeException>(() => sb.Files.WriteAsync("big", new byte[11], Ct));

        Assert.Equal(HttpStatusCode.RequestEntityTooLarge, ex.StatusCode);
        Assert.IsAssignableFrom<SandboxBadRequestException>(ex);
    }

    [Fact]
    public async Task Write_ToARefusedPath_ThrowsInvalidPath()
    {
        var (sb, _) = await CreateAsync();
        await using var __ = sb;

        var ex = await Assert.ThrowsAsync<SandboxInvalidPathException>(() => sb.Files.WriteAsync("/proc/x", "1", Ct));

        Assert.Equal("path", ex.Field);
    }

    [Theory]
    [InlineData("")]
    [InlineData(null)]
    public async Task Files_WithoutAPath_ThrowBeforeSending(string? path)
    {
        var (sb, server) = await CreateAsync();
        await using var _ = sb;
        var before = server.Requests.Count;

        await Assert.ThrowsAnyAsync<ArgumentException>(() => sb.Files.ReadAsync(path!, Ct));
        await Assert.ThrowsAnyAsync<ArgumentException>(() => sb.Files.WriteAsync(path!, "x", Ct));

        Assert.Equal(before, server.Requests.Count);
    }

    [Fact]
    public async Task Artifacts_ListAndReadWithContentType()
    {
        var (sb, server) = await CreateAsync();
        await using var _ = sb;
        byte[] png = [0x89, 0x50, 0x4E, 0x47];
        server.Artifacts["figure-1.png"] = ("image/png", png);
        server.Artifacts["plots/a b.svg"] = ("image/svg+xml", "<svg/>"u8.ToArray());

        var list = await sb.ListArtifactsAsync(Ct);
        Assert.Equal("/v1/sandboxes/sb-1/artifacts", server.Last.PathAndQuery);
        Assert.Equal(["figure-1.png", "plots/a b.svg"], list.Select(a => a.Path));
        Assert.Equal("image/png", list[0].Mime);
        Assert.Equal(4, list[0].Size);
        Assert.Null(list[0].Content);

        var figure = await sb.ReadArtifactAsync("figure-1.png", Ct);
        Assert.Equal("/v1/sandboxes/sb-1/artifacts/figure-1.png", server.Last.PathAndQuery);
        Assert.Equal(png, figure.Content);
        Assert.Equal("image/png", figure.ContentType);

        var svg = await sb.ReadArtifactAsync("/tmp/outputs/plots/a b.svg", Ct);
        Assert.Equal("/v1/sandboxes/sb-1/artifacts/plots/a%20b.svg", server.Last.PathAndQuery);
        Assert.Equal("plots/a b.svg", svg.Path);
        Assert.Equal("image/svg+xml", svg.ContentType);

        await Assert.ThrowsAsync<SandboxFileNotFoundException>(() => sb.ReadArtifactAsync("nope.png", Ct));
    }

    [Theory]
    [InlineData("../secret")]
    [InlineData("a/../../b")]
    [InlineData("./a")]
    [InlineData("/etc/passwd")]
    [InlineData("a//b")]
    [InlineData("/tmp/outputs/")]
    public async Task ReadArtifact_WithAPathThatCouldNameAnotherUrl_ThrowsBeforeSending(string path)
    {
        var (sb, server) = await CreateAsync();
        await using var _ = sb;
        var before = server.Requests.Count;

        await Assert.ThrowsAsync<ArgumentException>(() => sb.ReadArtifactAsync(path, Ct));

        Assert.Equal(before, server.Requests.Count);
    }

    [Fact]
    public async Task Write_SendsTheApiKey()
    {
        var server = new FakeSandboxServer();
        using var client = server.Client(apiKey: "s3cret");
        await using var sb = await client.CreateSandboxAsync(cancellationToken: Ct);

        await sb.Files.WriteAsync("a", "1", Ct);

        Assert.Equal(new AuthenticationHeaderValue("Bearer", "s3cret"), server.Last.Request.Headers.Authorization);
    }
}
