using System.Diagnostics;

namespace SandboxVM.Agent.Tests;

/// <summary>
/// Who the agent under test runs its steps as. Tests start the agent as their own user: run as root
/// (as CI on a fresh machine does) the agent runs steps as the sandbox user 1000:1000, otherwise as
/// itself. Files a test puts where a step must write ("left by an earlier run") are given to that user.
/// </summary>
internal static class StepUser
{
    public const int SandboxId = 1000;

    /// <summary>True when the agent (started by this test process) is root and so switches to the sandbox user.</summary>
    public static bool Switches => Environment.IsPrivilegedProcess;

    /// <summary>Uid:gid steps run as.</summary>
    public static string Expected => Switches ? $"{SandboxId}:{SandboxId}" : Run("id", "-u") + ":" + Run("id", "-g");

    /// <summary>Gives <paramref name="path"/> and everything under it to the step user (nothing to do without a switch).</summary>
    public static void Own(string path)
    {
        if (Switches)
        {
            Run("chown", "-R", $"{SandboxId}:{SandboxId}", path);
        }
    }

    /// <summary>Owner of <paramref name="path"/> (not following a final symlink) as uid:gid.</summary>
    public static string OwnerOf(string path) => Run("stat", "-c", "%u:%g", path);

    private static string Run(string program, params string[] args)
    {
        var start = new ProcessStartInfo(program) { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        foreach (string arg in args)
        {
            start.ArgumentList.Add(arg);
        }
        using var process = Process.Start(start)!;
        string output = process.StandardOutput.ReadToEnd();
        string error = process.StandardError.ReadToEnd();
        process.WaitForExit();
        Assert.True(process.ExitCode == 0, $"{program} {string.Join(' ', args)} failed: {error}");
        return output.Trim();
    }
}
