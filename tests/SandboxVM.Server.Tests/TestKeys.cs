using System.Security.Cryptography;
using System.Text;
using System.Text.Json;

namespace SandboxVM.Server.Tests;

/// <summary>A keys file written as an operator would (docs/API.md), hashed here, not by the server.</summary>
internal sealed class TestKeys : IDisposable
{
    public const string Alice = "svmk_alice_k3y_0123456789abcdefghijklmnopqrstuvw";
    public const string Bob = "svmk_bob_k3y_0123456789abcdefghijklmnopqrstuvwxyz";
    public const string Admin = "svmk_admin_k3y_0123456789abcdefghijklmnopqrstuvw";

    private readonly string _dir = System.IO.Path.Combine(System.IO.Path.GetTempPath(), "sandboxvm-keys-" + Guid.NewGuid().ToString("N"));

    public TestKeys()
    {
        Directory.CreateDirectory(_dir);
        Path = System.IO.Path.Combine(_dir, "keys.json");
    }

    public string Path { get; }

    /// <summary>The configuration argument that names the file.</summary>
    public string Arg => "--SandboxVM:ApiKeysFile=" + Path;

    public static string Hash(string key) => Convert.ToHexStringLower(SHA256.HashData(Encoding.UTF8.GetBytes(key)));

    public static object Entry(string name, string key, bool admin = false, object? limits = null) =>
        limits is null
            ? new Dictionary<string, object> { ["name"] = name, ["sha256"] = Hash(key), ["admin"] = admin }
            : new Dictionary<string, object> { ["name"] = name, ["sha256"] = Hash(key), ["admin"] = admin, ["limits"] = limits };

    /// <summary>Alice, Bob (no limits given: the server's defaults) and an admin.</summary>
    public TestKeys WithDefaults(object? aliceLimits = null) =>
        Write(Entry("alice", Alice, limits: aliceLimits), Entry("bob", Bob), Entry("ops", Admin, admin: true));

    /// <summary>Replaces the file atomically (a new file renamed over it), as an operator rotating keys should.</summary>
    public TestKeys Write(params object[] entries)
    {
        string temp = Path + ".tmp";
        File.WriteAllText(temp, JsonSerializer.Serialize(new { keys = entries }));
        File.Move(temp, Path, overwrite: true);
        return this;
    }

    public void WriteRaw(string text)
    {
        string temp = Path + ".tmp";
        File.WriteAllText(temp, text);
        File.Move(temp, Path, overwrite: true);
    }

    public void Dispose()
    {
        if (Directory.Exists(_dir))
        {
            Directory.Delete(_dir, recursive: true);
        }
    }
}
