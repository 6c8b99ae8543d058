using System.Diagnostics;

namespace SandboxVM.Functional.Tests;

/// <summary>
/// A 1 MiB tmpfs mounted over a directory of the server's (a full disk, as far as what is written there is
/// concerned), unmounted on dispose. Mounting needs root: without it the test is skipped, saying so.
/// </summary>
internal sealed class TinyFileSystem : IAsyncDisposable
{
    private readonly string _path;

    private TinyFileSystem(string path) => _path = path;

    public static async Task<TinyFileSystem> MountAsync(string path)
    {
        Directory.CreateDirectory(path);
        var (code, output) = await RunAsync("mount", "-t", "tmpfs", "-o", "size=1m,mode=0700", "tmpfs", path);
        Assert.SkipWhen(code != 0, $"a 1 MiB tmpfs could not be mounted on {path} (needs root): {output}");
        return new TinyFileSystem(path);
    }

    public async ValueTask DisposeAsync()
    {
        var (code, output) = await RunAsync("umount", _path);
        if (code != 0)
        {
            // Something still holds a file there: detach it anyway, and say so.
            await RunAsync("umount", "-l", _path);
            Assert.Fail($"umount {_path}: {output}");
        }
    }

    private static async Task<(int Code, string Output)> RunAsync(string file, params string[] args)
    {
        var start = new ProcessStartInfo(file) { RedirectStandardOutput = true, RedirectStandardError = true };
        foreach (string a in args)
        {
            start.ArgumentList.Add(a);
        }
        using var process = Process.Start(start)!;
        var stdout = process.StandardOutput.ReadToEndAsync();
        var stderr = process.StandardError.ReadToEndAsync();
        await process.WaitForExitAsync();
        return (process.ExitCode, (await stdout + await stderr).Trim());
    }
}
