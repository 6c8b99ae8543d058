namespace SandboxVM.Host;

/// <summary>Where a host program is: the one PATH lookup of the host assemblies.</summary>
public static class HostPath
{
    // Searched after PATH: a server started with a bare PATH (systemd, sudo) still finds sbin tools.
    private static readonly string[] _standard = ["/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin", "/sbin", "/bin"];

    /// <summary>The first file named <paramref name="name"/> in PATH, then the standard directories; null when none exists.</summary>
    public static string? Find(string name) =>
        (Environment.GetEnvironmentVariable("PATH") ?? "").Split(':', StringSplitOptions.RemoveEmptyEntries)
            .Concat(_standard)
            .Select(d => Path.Combine(d, name))
            .FirstOrDefault(File.Exists);
}
