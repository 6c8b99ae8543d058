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

    /// <summary>Runs a tool to its end and returns its stdout; a failure fails the test with its stderr.</summary>
    public static Task<string> RunAsync(string file, params string[] args) => SandboxVM.TestSupport.HostTools.RunAsync(file, args);

    public static bool HasTool(string name) => SandboxVM.TestSupport.HostTools.HasTool(name);
}
