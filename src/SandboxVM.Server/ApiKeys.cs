using System.Security.Cryptography;
using System.Text;
using System.Text.Json;
using System.Text.Json.Serialization;
using System.Text.RegularExpressions;
using SandboxVM.Core;

namespace SandboxVM.Server;

/// <summary>
/// The API keys file (docs/API.md): <c>{"keys": [{"name", "sha256", "admin"?, "limits"?: {...}}]}</c>. Only the
/// SHA-256 of each key is stored; keys are 256 random bits, so a plain hash cannot be reversed.
/// </summary>
public static partial class ApiKeys
{
    /// <summary>Prefix of the keys <see cref="NewKey"/> makes (so secret scanners can find leaked ones).</summary>
    public const string Prefix = "svmk_";

    /// <summary>Largest keys file read (a few thousand keys).</summary>
    public const int MaxFileBytes = 1 << 20;

    /// <summary>Names no keys file may use: the caller of a server without keys, and the single SANDBOXVM_API_KEY.</summary>
    public static readonly IReadOnlySet<string> ReservedNames = new HashSet<string>(StringComparer.Ordinal) { Caller.AnonymousName, Caller.SingleKeyName };

    private static readonly JsonSerializerOptions s_json = new()
    {
        PropertyNamingPolicy = JsonNamingPolicy.SnakeCaseLower,
        UnmappedMemberHandling = JsonUnmappedMemberHandling.Disallow,
        ReadCommentHandling = JsonCommentHandling.Skip,
        AllowTrailingCommas = true,
        DefaultIgnoreCondition = JsonIgnoreCondition.WhenWritingNull,
        WriteIndented = true,
    };

    /// <summary>A new key: the prefix and 256 random bits, base64url.</summary>
    public static string NewKey() => Prefix + Convert.ToBase64String(RandomNumberGenerator.GetBytes(32))
        .TrimEnd('=').Replace('+', '-').Replace('/', '_');

    /// <summary>Lower-case hex SHA-256 of the key's UTF-8 bytes: what the keys file stores.</summary>
    public static string Hash(string key) => Convert.ToHexStringLower(SHA256.HashData(Encoding.UTF8.GetBytes(key)));

    [GeneratedRegex("^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$")]
    private static partial Regex NameRule();

    [GeneratedRegex("^[0-9A-Fa-f]{64}$")]
    private static partial Regex HashRule();

    /// <summary>
    /// The callers a keys file names, by hash. Throws <see cref="FormatException"/> naming <paramref name="path"/>,
    /// the entry and the field; the message never quotes a hash.
    /// </summary>
    public static IReadOnlyDictionary<string, Caller> Parse(string text, string path, KeyLimitOptions defaults)
    {
        KeysFile? file;
        try
        {
            file = JsonSerializer.Deserialize<KeysFile>(text, s_json);
        }
        catch (JsonException e)
        {
            string at = string.IsNullOrEmpty(e.Path) ? "" : $" (at {e.Path})";
            throw new FormatException($"API keys file {path} is not valid JSON of the keys format{at}: {FirstSentence(e.Message)}");
        }
        if (file?.Keys is null)
        {
            throw new FormatException($"API keys file {path} has no \"keys\" list");
        }
        var byHash = new Dictionary<string, Caller>(StringComparer.Ordinal);
        var names = new HashSet<string>(StringComparer.Ordinal);
        for (int i = 0; i < file.Keys.Count; i++)
        {
            var entry = file.Keys[i] ?? throw new FormatException($"API keys file {path}: keys[{i}] is null");
            string where = $"API keys file {path}: keys[{i}]";
            if (entry.Name is null || !NameRule().IsMatch(entry.Name))
            {
                throw new FormatException($"{where}: name must be 1 to 64 letters, digits, '.', '_', '@' or '-', starting with a letter or digit");
            }
            where += $" ('{entry.Name}')";
            if (ReservedNames.Contains(entry.Name))
            {
                throw new FormatException($"{where}: the name '{entry.Name}' is reserved");
            }
            if (!names.Add(entry.Name))
            {
                throw new FormatException($"{where}: the name is used twice");
            }
            if (entry.Sha256 is null || !HashRule().IsMatch(entry.Sha256))
            {
                throw new FormatException($"{where}: sha256 must be the 64 hexadecimal digits of the key's SHA-256 (sandboxvm keys new makes it)");
            }
            var limits = entry.Limits ?? new LimitsEntry();
            var caller = new Caller(entry.Name, entry.Admin ?? false, new CallerLimits(
                Limit(limits.Sandboxes, defaults.Sandboxes, where, "sandboxes"),
                Limit(limits.RunsPerMinute, defaults.RunsPerMinute, where, "runs_per_minute"),
                Limit(limits.ConcurrentRuns, defaults.ConcurrentRuns, where, "concurrent_runs"),
                Limit(limits.SearchesPerMinute, defaults.SearchesPerMinute, where, "searches_per_minute")));
            if (!byHash.TryAdd(entry.Sha256.ToLowerInvariant(), caller))
            {
                throw new FormatException($"{where}: the same key as another entry");
            }
        }
        return byHash;
    }

    private static int Limit(int? value, int fallback, string where, string field) =>
        (value ?? fallback) >= 1 ? value ?? fallback : throw new FormatException($"{where}: limits.{field} must be at least 1");

    /// <summary>
    /// Writes a new entry for <paramref name="name"/> into the keys file at <paramref name="path"/> (created when
    /// missing), replacing an entry of the same name: that is a rotation, the caller keeps its sandboxes.
    /// The file is replaced atomically, so a running server never reads half of it.
    /// </summary>
    public static void WriteEntry(string path, string name, string sha256, bool admin, LimitsEntry? limits)
    {
        KeysFile file = File.Exists(path)
            ? JsonSerializer.Deserialize<KeysFile>(File.ReadAllText(path), s_json) ?? new KeysFile()
            : new KeysFile();
        file.Keys ??= [];
        var entry = new KeyEntry { Name = name, Sha256 = sha256, Admin = admin, Limits = limits };
        int at = file.Keys.FindIndex(k => k?.Name == name);
        if (at >= 0)
        {
            file.Keys[at] = entry;
        }
        else
        {
            file.Keys.Add(entry);
        }
        // Validated as the server will read it, before anything is written.
        Parse(JsonSerializer.Serialize(file, s_json), path, new KeyLimitOptions());
        string temp = path + ".tmp-" + Environment.ProcessId;
        File.WriteAllText(temp, JsonSerializer.Serialize(file, s_json) + "\n");
        if (!OperatingSystem.IsWindows())
        {
            File.SetUnixFileMode(temp, UnixFileMode.UserRead | UnixFileMode.UserWrite);
        }
        File.Move(temp, path, overwrite: true);
    }

    /// <summary>One entry as JSON on one line, for pasting into a keys file.</summary>
    public static string EntryJson(string name, string sha256, bool admin, LimitsEntry? limits) =>
        JsonSerializer.Serialize(new KeyEntry { Name = name, Sha256 = sha256, Admin = admin, Limits = limits },
            new JsonSerializerOptions(s_json) { WriteIndented = false });

    private static string FirstSentence(string message)
    {
        int end = message.IndexOf(". ", StringComparison.Ordinal);
        return end > 0 ? message[..end] : message;
    }

    /// <summary>The file's root object.</summary>
    public sealed class KeysFile
    {
        public List<KeyEntry?>? Keys { get; set; }
    }

    public sealed class KeyEntry
    {
        public string? Name { get; set; }
        public string? Sha256 { get; set; }
        public bool? Admin { get; set; }
        public LimitsEntry? Limits { get; set; }
    }

    /// <summary>A key's own limits; an absent one is the server's default (SandboxVM:KeyLimits).</summary>
    public sealed class LimitsEntry
    {
        public int? Sandboxes { get; set; }
        public int? RunsPerMinute { get; set; }
        public int? ConcurrentRuns { get; set; }
        public int? SearchesPerMinute { get; set; }
    }
}
