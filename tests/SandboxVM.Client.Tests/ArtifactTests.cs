namespace SandboxVM.Client.Tests;

[Trait("tier", "unit")]
public sealed class ArtifactTests : IDisposable
{
    private readonly string _dir = Path.Combine(Path.GetTempPath(), "sandboxvm-client-tests-" + Guid.NewGuid().ToString("N"));

    public void Dispose()
    {
        if (Directory.Exists(_dir))
        {
            Directory.Delete(_dir, recursive: true);
        }
    }

    [Theory]
    [InlineData("../x")]
    [InlineData("a/../../x")]
    [InlineData("/etc/passwd")]
    [InlineData("/tmp/outputs/../../etc/passwd")]
    [InlineData("")]
    [InlineData(".")]
    public async Task SaveTo_WhenPathEscapesDirectory_RefusesAndWritesNothing(string path)
    {
        var artifact = new Artifact { Path = path, Content = [1, 2, 3] };

        await Assert.ThrowsAsync<UnauthorizedAccessException>(
            () => artifact.SaveToAsync(_dir, TestContext.Current.CancellationToken));

        Assert.False(Directory.Exists(_dir) && Directory.EnumerateFileSystemEntries(_dir).Any());
    }

    [Fact]
    public async Task SaveTo_WritesContentUnderRelativePathCreatingDirectories()
    {
        var artifact = new Artifact { Path = "plots/fig.png", Content = [1, 2, 3] };

        var written = await artifact.SaveToAsync(_dir, TestContext.Current.CancellationToken);

        Assert.Equal(Path.Combine(_dir, "plots", "fig.png"), written);
        Assert.Equal([1, 2, 3], await File.ReadAllBytesAsync(written, TestContext.Current.CancellationToken));
    }

    [Fact]
    public async Task SaveTo_WhenPathIsUnderGuestOutputsDir_SavesRelativeToIt()
    {
        var artifact = new Artifact { Path = "/tmp/outputs/fig.png", Content = [9] };

        var written = await artifact.SaveToAsync(_dir, TestContext.Current.CancellationToken);

        Assert.Equal(Path.Combine(_dir, "fig.png"), written);
    }

    [Fact]
    public async Task SaveTo_WhenContentWasNotSent_ThrowsInvalidOperation()
    {
        var artifact = new Artifact { Path = "fig.png" };

        var ex = await Assert.ThrowsAsync<InvalidOperationException>(
            () => artifact.SaveToAsync(_dir, TestContext.Current.CancellationToken));

        Assert.Contains("fig.png", ex.Message, StringComparison.Ordinal);
    }
}
