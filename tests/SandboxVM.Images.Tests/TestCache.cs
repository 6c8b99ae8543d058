using System.Diagnostics;
using Microsoft.Extensions.Logging.Abstractions;

namespace SandboxVM.Images.Tests;

/// <summary>A throwaway cache root plus helpers shared by the builder tests.</summary>
internal sealed class TestCache : IAsyncDisposable
{
    public string Root { get; } = Directory.CreateTempSubdirectory("sbvm-cache-").FullName;

    public ImageBuilder Builder() => new(new ImageBuilderOptions { CacheRoot = Root }, NullLogger<ImageBuilder>.Instance);

    public string WriteAgent(string content)
    {
        var path = Path.Combine(Root, "agent-" + Guid.NewGuid().ToString("N"));
        File.WriteAllText(path, "#!/bin/sh\n# " + content + "\n");
        return path;
    }

    /// <summary>Puts a fake, complete base phase into the cache so tests of later phases need no mmdebstrap.</summary>
    public string SeedBase(ImageSpec spec, Action<string> fill)
    {
        var tree = Path.Combine(Root, "base", ImageKeys.Base(spec), "rootfs");
        Directory.CreateDirectory(Path.Combine(tree, "opt/sandboxvm/bin"));
        fill(tree);
        return tree;
    }

    public async ValueTask DisposeAsync()
    {
        // rm copes with read-only trees and files owned by other uids.
        using var rm = Process.Start("rm", ["-rf", "--one-file-system", "--", Root]);
        await rm.WaitForExitAsync(CancellationToken.None);
    }

    public static async Task<string> RunAsync(string file, params string[] args)
    {
        var psi = new ProcessStartInfo(file) { RedirectStandardOutput = true, RedirectStandardError = true };
        foreach (var a in args)
            psi.ArgumentList.Add(a);
        using var p = Process.Start(psi)!;
        var stdout = p.StandardOutput.ReadToEndAsync(TestContext.Current.CancellationToken);
        var stderr = p.StandardError.ReadToEndAsync(TestContext.Current.CancellationToken);
        await p.WaitForExitAsync(TestContext.Current.CancellationToken);
        Assert.True(p.ExitCode == 0, $"{file} {string.Join(' ', args)} failed: {await stderr}");
        return await stdout;
    }

    public static bool HasTool(string name) =>
        (Environment.GetEnvironmentVariable("PATH") ?? "").Split(':').Any(d => d.Length > 0 && File.Exists(Path.Combine(d, name)));
}
