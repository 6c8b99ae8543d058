using Microsoft.Extensions.DependencyInjection;
using SandboxVM.Client;
using SandboxVM.Testing;

namespace SandboxVM.Server.Tests;

/// <summary>
/// The C# SDK (and so the CLI, which uses it) against the real server with keys: every kind of call
/// still passes the content-type, Host and key checks, and the SDK sees the server's refusals.
/// </summary>
[Trait("tier", "unit")]
public class SdkTests
{
    private static CancellationToken Ct => TestContext.Current.CancellationToken;

    [Fact]
    public async Task EveryCallOfTheSdk_PassesTheServersChecks()
    {
        using var keys = new TestKeys().WithDefaults();
        var runtime = new FakeAgentRuntime();
        runtime.InitialFiles["/tmp/outputs/plot.png"] = [0x89, (byte)'P', (byte)'N', (byte)'G'];
        var tools = new FakeToolRunner();
        await using var server = await ApiServer.StartAsync([keys.Arg], runtime: runtime, services: s => s.AddSingleton<IToolRunner>(tools));
        using var client = new SandboxClient(new SandboxClientOptions { BaseUrl = server.BaseUrl, ApiKey = TestKeys.Alice });

        var once = await client.RunAsync(new SandboxVM.Client.RunRequest { Template = ApiServer.Template, Code = "print(1)" }, Ct);
        Assert.Equal("hello\n", once.Stdout);
        await using var sb = await client.CreateSandboxAsync(ApiServer.Template, cancellationToken: Ct);
        Assert.Equal("hello\n", (await sb.RunAsync("print(1)", cancellationToken: Ct)).Stdout);
        await foreach (var _ in sb.RunStreamAsync("print(1)", cancellationToken: Ct))
        {
        }
        await sb.KeepAliveAsync(120, Ct);
        await sb.KeepAliveAsync(cancellationToken: Ct);
        await sb.Files.WriteAsync("data/in.txt", "hello", Ct);
        Assert.Equal("hello", await sb.Files.ReadTextAsync("data/in.txt", Ct));
        await sb.Files.MakeDirAsync("more", Ct);
        Assert.NotEmpty(await sb.Files.ListAsync("data", Ct));
        await sb.Files.RemoveAsync("data/in.txt", cancellationToken: Ct);
        Assert.Single(await sb.ListArtifactsAsync(Ct));
        Assert.Equal("image/png", (await sb.ReadArtifactAsync("plot.png", Ct)).ContentType);
        Assert.Single(await client.ListSandboxesAsync(Ct));
        await client.Tools.SearchAsync("q", cancellationToken: Ct);

        // Another key's client cannot even see it.
        using var bob = new SandboxClient(new SandboxClientOptions { BaseUrl = server.BaseUrl, ApiKey = TestKeys.Bob });
        await Assert.ThrowsAsync<SandboxNotFoundException>(() => bob.GetSandboxAsync(sb.Id, Ct));
        Assert.Empty(await bob.ListSandboxesAsync(Ct));
        using var nobody = new SandboxClient(new SandboxClientOptions { BaseUrl = server.BaseUrl });
        await Assert.ThrowsAsync<SandboxAuthException>(() => nobody.ListSandboxesAsync(Ct));
    }
}
