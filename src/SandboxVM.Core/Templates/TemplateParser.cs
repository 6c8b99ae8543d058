using System.Globalization;
using System.Net;
using System.Text.RegularExpressions;
using YamlDotNet.Core;
using YamlDotNet.Core.Events;
using YamlDotNet.RepresentationModel;

namespace SandboxVM.Core.Templates;

/// <summary>
/// Reads one template file. Works on YamlDotNet's node tree rather than a deserializer so every error
/// can name the exact key path and line, and so unknown keys are rejected instead of ignored.
/// </summary>
internal sealed partial class TemplateParser
{
    private static readonly string[] _topKeys =
        ["name", "description", "source", "build", "files", "language", "vcpus", "memory_mib", "disk_mib", "limits", "output", "network", "warmup"];

    private static readonly string[] _sourceKeys = ["type", "suite", "packages", "reference", "tls_verify", "path", "tag"];
    private static readonly string[] _languageKeys = ["name", "source_file", "compile", "run", "env", "fork_server"];
    private static readonly string[] _forkServerKeys = ["preload"];
    private static readonly string[] _limitKeys =
        ["compile_timeout_s", "run_timeout_s", "max_timeout_s", "output_bytes", "processes", "file_bytes"];

    private static readonly string[] _networkKeys = ["mode", "allow", "deny", "ports"];
    private static readonly string[] _warmupKeys = ["strategy", "pool_size", "pool_min", "pool_max", "refill_concurrency", "script"];

    /// <summary>Largest template file read, in characters (the built-in ones are under 3 KiB).</summary>
    public const int MaxChars = 1024 * 1024;

    /// <summary>Deepest nesting of lists and mappings (a template uses 4).</summary>
    public const int MaxDepth = 64;

    private readonly string _file;

    private TemplateParser(string file) => _file = file;

    /// <summary>Parses <paramref name="yaml"/>; <paramref name="filePath"/> is used in errors and,
    /// when it is not empty, its name without <c>.yaml</c> must equal the template name.</summary>
    public static TemplateDefinition Parse(string yaml, string filePath) => new TemplateParser(filePath).ParseDocument(yaml);

    [GeneratedRegex("^[a-z0-9][a-z0-9-]{0,62}$")]
    private static partial Regex NameRegex();

    [GeneratedRegex("^[a-z0-9][a-z0-9+.-]+(:[a-z0-9-]+)?$")]
    private static partial Regex PackageRegex();

    [GeneratedRegex("^[a-z][a-z0-9.-]*$")]
    private static partial Regex SuiteRegex();

    [GeneratedRegex("^[A-Za-z0-9_][A-Za-z0-9_.+-]*$")]
    private static partial Regex SourceFileRegex();

    [GeneratedRegex("^[A-Za-z_][A-Za-z0-9_]*$")]
    private static partial Regex EnvNameRegex();

    [GeneratedRegex(@"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")]
    private static partial Regex ModuleNameRegex();

    [GeneratedRegex(@"^(\*\.)?([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)*[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")]
    private static partial Regex HostPatternRegex();

    private TemplateDefinition ParseDocument(string yaml)
    {
        if (yaml.Length > MaxChars)
            throw Error("", null, $"the file is larger than {MaxChars / 1024} KiB");
        var stream = new YamlStream();
        try
        {
            CheckShape(yaml);
            stream.Load(new StringReader(yaml));
        }
        catch (YamlException e)
        {
            var reason = StripMark(e.Message);
            // YamlDotNet rejects duplicate keys itself, before we could name the full path.
            reason = reason.StartsWith("Duplicate key ", StringComparison.Ordinal)
                ? $"duplicate key '{reason["Duplicate key ".Length..]}'"
                : "invalid YAML: " + reason;
            throw new TemplateLoadException(_file, "", ToLine(e.Start), reason, e);
        }
        catch (Exception e) when (e is ArgumentException or InvalidOperationException)
        {
            // YamlDotNet 16 throws InvalidOperationException ("The scanner should contain no more tokens")
            // for some broken flow collections, e.g. ": [\nW", instead of a YamlException.
            throw new TemplateLoadException(_file, "", null, "invalid YAML: " + e.Message, e);
        }

        if (stream.Documents.Count == 0 || IsNull(stream.Documents[0].RootNode))
            throw Error("", null, "the file is empty");
        if (stream.Documents.Count > 1)
            throw Error("", stream.Documents[1].RootNode, "the file holds more than one YAML document");

        var top = Map(stream.Documents[0].RootNode, "", _topKeys);

        var name = top.RequiredString("name");
        if (!NameRegex().IsMatch(name))
            throw Error("name", top.Node("name"), $"'{name}' is not a valid name: use 1-63 lowercase letters, digits and '-', starting with a letter or digit");
        if (_file.Length > 0)
        {
            var stem = Path.GetFileNameWithoutExtension(_file);
            if (!string.Equals(stem, name, StringComparison.Ordinal))
                throw Error("name", top.Node("name"), $"'{name}' does not match the file name '{Path.GetFileName(_file)}' (expected name: {stem})");
        }

        return new TemplateDefinition
        {
            Name = name,
            Description = top.OptionalString("description") ?? "",
            FilePath = _file,
            Source = ParseSource(top.RequiredMap("source", _sourceKeys)),
            BuildSteps = ParseBuildSteps(top),
            Language = ParseLanguage(top.RequiredMap("language", _languageKeys)),
            Vcpus = top.Int("vcpus", 1, 1, 32),
            MemoryMib = top.Int("memory_mib", 512, 64, 65536),
            DiskMib = top.Int("disk_mib", 2048, 64, 1024 * 1024),
            Limits = ParseLimits(top.OptionalMap("limits", _limitKeys)),
            Output = top.Enum("output", OutputMode.Text, ("text", OutputMode.Text), ("text+images", OutputMode.TextAndImages)),
            Network = ParseNetwork(top.OptionalMap("network", _networkKeys)),
            Warmup = ParseWarmup(top.OptionalMap("warmup", _warmupKeys)),
            FilesDir = ParseFiles(top),
        };
    }

    /// <summary><c>files</c>: a directory relative to the YAML file (absolute paths allowed), which must exist.</summary>
    private string? ParseFiles(MapReader top)
    {
        var text = top.OptionalString("files");
        if (text is null)
            return null;
        if (text.Trim().Length == 0)
            throw Error("files", top.Node("files"), "must name a directory");
        var baseDir = _file.Length > 0 ? Path.GetDirectoryName(Path.GetFullPath(_file))! : Directory.GetCurrentDirectory();
        var dir = Path.GetFullPath(text, baseDir);
        if (!Directory.Exists(dir))
            throw Error("files", top.Node("files"), $"directory '{dir}' does not exist");
        try
        {
            _ = SandboxVM.Images.ImageKeys.TreeFiles(dir);
        }
        catch (Exception e) when (e is InvalidDataException or IOException or UnauthorizedAccessException)
        {
            throw Error("files", top.Node("files"), e.Message);
        }
        return dir;
    }

    private TemplateSource ParseSource(MapReader m)
    {
        var type = m.RequiredString("type");
        string[] allowed = type switch
        {
            TemplateSource.DebianType => ["type", "suite", "packages"],
            TemplateSource.OciType => ["type", "reference", "tls_verify"],
            TemplateSource.OciLayoutType => ["type", "path", "tag"],
            _ => throw Error(m.Path("type"), m.Node("type"),
                $"unknown source type '{type}'; expected one of: {TemplateSource.DebianType}, {TemplateSource.OciType}, {TemplateSource.OciLayoutType}"),
        };
        foreach (var key in m.Keys)
        {
            if (!allowed.Contains(key))
                throw Error(m.Path(key), m.Node(key), $"not allowed for source type '{type}' (allowed: {string.Join(", ", allowed)})");
        }

        switch (type)
        {
            case TemplateSource.DebianType:
                var suite = m.OptionalString("suite") ?? "bookworm";
                if (!SuiteRegex().IsMatch(suite))
                    throw Error(m.Path("suite"), m.Node("suite"), $"'{suite}' is not a Debian suite name");
                var packages = m.StringList("packages");
                for (var i = 0; i < packages.Count; i++)
                {
                    if (!PackageRegex().IsMatch(packages[i]))
                        throw Error($"{m.Path("packages")}[{i}]", m.Node("packages"), $"'{packages[i]}' is not a Debian package name");
                }

                return new TemplateSource { Type = type, Suite = suite, Packages = packages };
            case TemplateSource.OciType:
                var reference = m.RequiredString("reference");
                if (reference.Any(char.IsWhiteSpace) || reference.StartsWith('-') || reference.Contains("://", StringComparison.Ordinal))
                    throw Error(m.Path("reference"), m.Node("reference"), $"'{reference}' is not an image reference (HOST[:PORT]/REPOSITORY[:TAG] or ...@sha256:DIGEST, no scheme)");
                var tlsVerify = m.OptionalString("tls_verify") ?? "true";
                if (tlsVerify is not ("true" or "false"))
                    throw Error(m.Path("tls_verify"), m.Node("tls_verify"), $"expected true or false, got '{tlsVerify}'");
                return new TemplateSource { Type = type, Reference = reference, TlsVerify = tlsVerify == "true" };
            default:
                var path = m.RequiredString("path");
                var tag = m.OptionalString("tag");
                if (tag is not null && !SandboxVM.Images.OciLayout.IsValidTag(tag))
                    throw Error(m.Path("tag"), m.Node("tag"), $"'{tag}' is not an image tag (letters, digits, '_', '.', '-'; at most 128)");
                // Relative layout paths are relative to the template file, not the server's working directory.
                var baseDir = _file.Length > 0 ? Path.GetDirectoryName(Path.GetFullPath(_file)) : null;
                return new TemplateSource { Type = type, Path = baseDir is null ? Path.GetFullPath(path) : Path.GetFullPath(path, baseDir), Tag = tag };
        }
    }

    private List<string> ParseBuildSteps(MapReader top)
    {
        var steps = top.StringList("build");
        for (var i = 0; i < steps.Count; i++)
        {
            if (string.IsNullOrWhiteSpace(steps[i]))
                throw Error($"build[{i}]", top.Node("build"), "a build step must not be empty");
        }

        return steps;
    }

    private LanguageRecipe ParseLanguage(MapReader m)
    {
        var sourceFile = m.RequiredString("source_file");
        if (!SourceFileRegex().IsMatch(sourceFile) || sourceFile is "." or "..")
            throw Error(m.Path("source_file"), m.Node("source_file"), $"'{sourceFile}' must be a plain file name (letters, digits, '_', '.', '+', '-'; no directories)");

        List<string>? compile = null;
        if (m.Has("compile"))
        {
            compile = m.StringList("compile");
            if (compile.Count == 0)
                throw Error(m.Path("compile"), m.Node("compile"), "must hold at least the program to run (or be left out for interpreted languages)");
        }

        if (!m.Has("run"))
            throw Error(m.Path("run"), m.MapNode, "is required (the argv that runs the program, e.g. [./main])");
        var run = m.StringList("run");
        if (run.Count == 0)
            throw Error(m.Path("run"), m.Node("run"), "must hold at least the program to run");

        var env = m.StringMap("env");
        foreach (var key in env.Keys)
        {
            if (!EnvNameRegex().IsMatch(key))
                throw Error($"{m.Path("env")}.{key}", m.Node("env"), $"'{key}' is not a valid environment variable name");
        }

        return new LanguageRecipe
        {
            Name = m.RequiredString("name"),
            SourceFile = sourceFile,
            Compile = compile,
            Run = run,
            Env = env,
            ForkServer = ParseForkServer(m, sourceFile, compile, run),
        };
    }

    private ForkServerRecipe? ParseForkServer(MapReader language, string sourceFile, List<string>? compile, List<string> run)
    {
        var m = language.OptionalMap("fork_server", _forkServerKeys);
        if (m is null)
            return null;
        if (compile is not null)
            throw Error(language.Path("fork_server"), language.Node("fork_server"), "only applies to interpreted Python (there is a compile step)");
        // The agent starts the server with what precedes the source file in run, and runs the file in its children.
        if (run.LastIndexOf(sourceFile) < 1)
            throw Error(language.Path("fork_server"), language.Node("fork_server"),
                $"needs language.run to be the interpreter followed by source_file '{sourceFile}', e.g. [python3, -u, {sourceFile}]");

        var preload = m.StringList("preload");
        for (var i = 0; i < preload.Count; i++)
        {
            if (!ModuleNameRegex().IsMatch(preload[i]))
                throw Error($"{m.Path("preload")}[{i}]", m.Node("preload"), $"'{preload[i]}' is not a Python module name (e.g. numpy, matplotlib.pyplot)");
        }

        return new ForkServerRecipe { Preload = preload };
    }

    private TemplateLimits ParseLimits(MapReader? m)
    {
        if (m is null)
            return new TemplateLimits();

        var defaults = new TemplateLimits();
        var limits = new TemplateLimits
        {
            CompileTimeoutS = m.Seconds("compile_timeout_s", defaults.CompileTimeoutS),
            RunTimeoutS = m.Seconds("run_timeout_s", defaults.RunTimeoutS),
            MaxTimeoutS = m.Seconds("max_timeout_s", defaults.MaxTimeoutS),
            OutputBytes = m.Long("output_bytes", defaults.OutputBytes, 1024, 1L << 30),
            Processes = m.Int("processes", defaults.Processes, 1, 65536),
            FileBytes = m.Long("file_bytes", defaults.FileBytes, 1L << 20, 1L << 40),
        };
        var maxNode = m.Has("max_timeout_s") ? m.Node("max_timeout_s") : m.MapNode;
        if (limits.RunTimeoutS > limits.MaxTimeoutS)
            throw Error(m.Path("max_timeout_s"), maxNode, $"must be at least run_timeout_s ({Fmt(limits.RunTimeoutS)}), is {Fmt(limits.MaxTimeoutS)}");
        if (limits.CompileTimeoutS > limits.MaxTimeoutS)
            throw Error(m.Path("max_timeout_s"), maxNode, $"must be at least compile_timeout_s ({Fmt(limits.CompileTimeoutS)}), is {Fmt(limits.MaxTimeoutS)}");
        return limits;
    }

    private NetworkPolicy ParseNetwork(MapReader? m)
    {
        if (m is null)
            return new NetworkPolicy();

        var mode = m.Enum("mode", NetworkMode.None, ("none", NetworkMode.None), ("proxy", NetworkMode.Proxy));
        var allow = m.StringList("allow");
        var deny = m.StringList("deny");
        if (mode == NetworkMode.None && (allow.Count > 0 || deny.Count > 0))
        {
            var key = allow.Count > 0 ? "allow" : "deny";
            throw Error(m.Path(key), m.Node(key), "rules only apply with mode: proxy (mode is none: the sandbox has no network)");
        }

        CheckRules(m, "allow", allow);
        CheckRules(m, "deny", deny);
        List<int>? ports = null;
        if (m.Has("ports"))
        {
            if (mode == NetworkMode.None)
                throw Error(m.Path("ports"), m.Node("ports"), "ports only apply with mode: proxy (mode is none: the sandbox has no network)");
            ports = [];
            var texts = m.StringList("ports");
            for (var i = 0; i < texts.Count; i++)
            {
                if (!int.TryParse(texts[i], NumberStyles.None, CultureInfo.InvariantCulture, out var port) || port is < 1 or > 65535)
                    throw Error($"{m.Path("ports")}[{i}]", m.Node("ports"), $"'{texts[i]}' is not a TCP port (1..65535)");
                ports.Add(port);
            }
        }
        return new NetworkPolicy { Mode = mode, Allow = allow, Deny = deny, Ports = ports };
    }

    private void CheckRules(MapReader m, string key, List<string> rules)
    {
        for (var i = 0; i < rules.Count; i++)
        {
            var rule = rules[i];
            var ok = IPAddress.TryParse(rule, out _) || IPNetwork.TryParse(rule, out _) || HostPatternRegex().IsMatch(rule);
            if (!ok)
                throw Error($"{m.Path(key)}[{i}]", m.Node(key), $"'{rule}' is neither a host name (example.com, *.example.com), an IP address nor a CIDR range");
        }
    }

    private WarmupPolicy ParseWarmup(MapReader? m)
    {
        if (m is null)
            return new WarmupPolicy();

        var strategy = m.Enum("strategy", WarmupStrategy.Pool,
            ("pool", WarmupStrategy.Pool), ("cold", WarmupStrategy.Cold), ("singleton", WarmupStrategy.Singleton));
        foreach (string key in new[] { "pool_size", "pool_min", "pool_max", "refill_concurrency" })
        {
            if (strategy != WarmupStrategy.Pool && m.Has(key))
                throw Error(m.Path(key), m.Node(key), "only applies to strategy: pool");
        }
        int? min = m.Has("pool_min") ? m.Int("pool_min", 0, 0, 64) : null;
        int? max = m.Has("pool_max") ? m.Int("pool_max", 0, 0, 64) : null;
        if (min.HasValue != max.HasValue)
        {
            string missing = min.HasValue ? "pool_max" : "pool_min";
            string given = min.HasValue ? "pool_min" : "pool_max";
            throw Error(m.Path(given), m.Node(given), $"needs {missing} too: the pool's target moves between the two");
        }
        if (min.HasValue && m.Has("pool_size"))
            throw Error(m.Path("pool_size"), m.Node("pool_size"), "is a fixed size: give either pool_size or pool_min and pool_max");
        if (min > max)
            throw Error(m.Path("pool_min"), m.Node("pool_min"), $"{min} is above pool_max ({max})");
        return new WarmupPolicy
        {
            Strategy = strategy,
            PoolSize = m.Int("pool_size", new WarmupPolicy().PoolSize, 0, 64),
            PoolMin = min,
            PoolMax = max,
            RefillConcurrency = m.Has("refill_concurrency") ? m.Int("refill_concurrency", 1, 1, 64) : null,
            Script = m.OptionalString("script"),
        };
    }

    /// <summary>
    /// Reads the event stream once, before YamlDotNet builds its node tree, and refuses what would take
    /// that down: nesting deeper than <see cref="MaxDepth"/> (its loader recurses per level: 100 000
    /// '[' overflow the stack and kill the process), keys that are lists, mappings or aliases (it
    /// hashes keys recursively: <c>? &amp;a [*a]</c> never ends), and an alias inside the node it names.
    /// A template needs none of these.
    /// </summary>
    private void CheckShape(string yaml)
    {
        var parser = new Parser(new StringReader(yaml));
        var open = new List<(bool Mapping, int Children, string? Anchor)>();
        while (parser.MoveNext())
        {
            var e = parser.Current!;
            if (e is NodeEvent or AnchorAlias && open.Count > 0)
            {
                var parent = open[^1];
                if (parent.Mapping && parent.Children % 2 == 0 && e is not Scalar)
                    throw new TemplateLoadException(_file, "", ToLine(e.Start), "keys must be plain strings (not a list, a mapping or an alias)");
                open[^1] = parent with { Children = parent.Children + 1 };
            }
            switch (e)
            {
                case AnchorAlias alias when open.Any(o => o.Anchor == alias.Value.Value):
                    throw new TemplateLoadException(_file, "", ToLine(e.Start), $"alias '*{alias.Value.Value}' is inside the node it names");
                case MappingStart or SequenceStart:
                    if (open.Count == MaxDepth)
                        throw new TemplateLoadException(_file, "", ToLine(e.Start), $"nested more than {MaxDepth} levels deep");
                    var anchor = ((NodeEvent)e).Anchor;
                    open.Add((e is MappingStart, 0, anchor.IsEmpty ? null : anchor.Value));
                    break;
                case MappingEnd or SequenceEnd:
                    open.RemoveAt(open.Count - 1);
                    break;
            }
        }
    }

    private MapReader Map(YamlNode node, string path, string[] allowedKeys)
    {
        if (node is not YamlMappingNode mapping)
            throw Error(path, node, $"expected a mapping (key: value lines), got {Describe(node)}");

        var keys = new Dictionary<string, (YamlNode Key, YamlNode Value)>(StringComparer.Ordinal);
        foreach (var (k, v) in mapping.Children)
        {
            if (k is not YamlScalarNode { Value: { } key })
                throw Error(path, k, "keys must be plain strings");
            var keyPath = path.Length == 0 ? key : $"{path}.{key}";
            if (!allowedKeys.Contains(key))
            {
                var hint = Closest(key, allowedKeys) is { } near ? $"; did you mean '{near}'?" : "";
                throw Error(keyPath, k, $"unknown key '{key}'{hint} (allowed here: {string.Join(", ", allowedKeys)})");
            }

            if (!keys.TryAdd(key, (k, v)))
                throw Error(keyPath, k, $"duplicate key '{key}'");
        }

        return new MapReader(this, mapping, path, keys);
    }

    private TemplateLoadException Error(string field, YamlNode? node, string reason) =>
        new(_file, field, node is null ? null : ToLine(node.Start), reason);

    private static int? ToLine(Mark mark) => mark.Line > 0 ? (int)mark.Line : null;

    private static string StripMark(string message)
    {
        // "(Line: 3, Col: 5, Idx: 20) - (Line: ...): reason" -> "reason"; the line is reported separately.
        var i = message.IndexOf("): ", StringComparison.Ordinal);
        return message.StartsWith("(Line", StringComparison.Ordinal) && i >= 0 ? message[(i + 3)..] : message;
    }

    private static bool IsNull(YamlNode node) =>
        node is YamlScalarNode { Style: ScalarStyle.Plain or ScalarStyle.Any, Value: null or "" or "~" or "null" or "Null" or "NULL" };

    private static string Describe(YamlNode node) => node switch
    {
        YamlMappingNode => "a mapping",
        YamlSequenceNode => "a list",
        YamlScalarNode s when IsNull(s) => "nothing (null)",
        YamlScalarNode s => $"'{s.Value}'",
        _ => "an unsupported YAML node",
    };

    private static string Fmt(double v) => v.ToString(CultureInfo.InvariantCulture);

    private static string? Closest(string key, string[] candidates)
    {
        string? best = null;
        var bestDistance = int.MaxValue;
        foreach (var c in candidates)
        {
            var d = EditDistance(key, c);
            if (d < bestDistance)
                (best, bestDistance) = (c, d);
        }

        return bestDistance <= Math.Max(2, key.Length / 3) ? best : null;
    }

    private static int EditDistance(string a, string b)
    {
        var prev = new int[b.Length + 1];
        var cur = new int[b.Length + 1];
        for (var j = 0; j <= b.Length; j++)
            prev[j] = j;
        for (var i = 1; i <= a.Length; i++)
        {
            cur[0] = i;
            for (var j = 1; j <= b.Length; j++)
                cur[j] = Math.Min(Math.Min(cur[j - 1] + 1, prev[j] + 1), prev[j - 1] + (a[i - 1] == b[j - 1] ? 0 : 1));
            (prev, cur) = (cur, prev);
        }

        return prev[b.Length];
    }

    /// <summary>Typed access to one mapping; every read names its YAML path in errors.</summary>
    private sealed class MapReader(TemplateParser parser, YamlMappingNode node, string path, Dictionary<string, (YamlNode Key, YamlNode Value)> entries)
    {
        public YamlMappingNode MapNode => node;

        public IEnumerable<string> Keys => entries.Keys;

        public string Path(string key) => path.Length == 0 ? key : $"{path}.{key}";

        /// <summary>True when the key is present with a non-null value.</summary>
        public bool Has(string key) => entries.TryGetValue(key, out var e) && !IsNull(e.Value);

        public YamlNode Node(string key) => entries.TryGetValue(key, out var e) ? e.Value : node;

        public string RequiredString(string key) =>
            OptionalString(key) is { Length: > 0 } s ? s : throw parser.Error(Path(key), Has(key) ? Node(key) : node, "is required");

        public string? OptionalString(string key)
        {
            if (!Has(key))
                return null;
            return Node(key) is YamlScalarNode { Value: { } v }
                ? v
                : throw parser.Error(Path(key), Node(key), $"expected a string, got {Describe(Node(key))}");
        }

        public MapReader RequiredMap(string key, string[] allowed) =>
            OptionalMap(key, allowed) ?? throw parser.Error(Path(key), node, "is required");

        public MapReader? OptionalMap(string key, string[] allowed) => Has(key) ? parser.Map(Node(key), Path(key), allowed) : null;

        public List<string> StringList(string key)
        {
            if (!Has(key))
                return [];
            if (Node(key) is not YamlSequenceNode seq)
                throw parser.Error(Path(key), Node(key), $"expected a list, got {Describe(Node(key))}");

            var list = new List<string>(seq.Children.Count);
            for (var i = 0; i < seq.Children.Count; i++)
            {
                var item = seq.Children[i];
                if (item is not YamlScalarNode { Value: { } v } || IsNull(item))
                    throw parser.Error($"{Path(key)}[{i}]", item, $"expected a string, got {Describe(item)}");
                list.Add(v);
            }

            return list;
        }

        public Dictionary<string, string> StringMap(string key)
        {
            var map = new Dictionary<string, string>(StringComparer.Ordinal);
            if (!Has(key))
                return map;
            if (Node(key) is not YamlMappingNode m)
                throw parser.Error(Path(key), Node(key), $"expected a mapping, got {Describe(Node(key))}");

            foreach (var (k, v) in m.Children)
            {
                if (k is not YamlScalarNode { Value: { Length: > 0 } name })
                    throw parser.Error(Path(key), k, "keys must be plain strings");
                // Env values are text: YAML `off` or `1` stays the string the program will see.
                if (v is not YamlScalarNode { Value: { } value })
                    throw parser.Error($"{Path(key)}.{name}", v, $"expected a string, got {Describe(v)}");
                if (!map.TryAdd(name, IsNull(v) ? "" : value))
                    throw parser.Error($"{Path(key)}.{name}", k, $"duplicate key '{name}'");
            }

            return map;
        }

        public int Int(string key, int fallback, int min, int max) => (int)Long(key, fallback, min, max);

        public long Long(string key, long fallback, long min, long max)
        {
            if (!Has(key))
                return fallback;
            var n = Node(key);
            if (n is not YamlScalarNode { Style: ScalarStyle.Plain, Value: { } text }
                || !long.TryParse(text, NumberStyles.AllowLeadingSign, CultureInfo.InvariantCulture, out var value))
                throw parser.Error(Path(key), n, $"expected a whole number, got {Describe(n)}");
            if (value < min || value > max)
                throw parser.Error(Path(key), n, $"{value} is out of range ({min}..{max})");
            return value;
        }

        /// <summary>A duration in seconds: a number &gt; 0, at most a day.</summary>
        public double Seconds(string key, double fallback)
        {
            if (!Has(key))
                return fallback;
            var n = Node(key);
            if (n is not YamlScalarNode { Style: ScalarStyle.Plain, Value: { } text }
                || !double.TryParse(text, NumberStyles.Float, CultureInfo.InvariantCulture, out var value)
                || !double.IsFinite(value))
                throw parser.Error(Path(key), n, $"expected a number of seconds, got {Describe(n)}");
            if (value <= 0 || value > 86400)
                throw parser.Error(Path(key), n, $"{Fmt(value)} is out of range (more than 0, at most 86400)");
            return value;
        }

        public T Enum<T>(string key, T fallback, params (string Text, T Value)[] values)
        {
            var text = OptionalString(key);
            if (text is null)
                return fallback;
            foreach (var (t, v) in values)
            {
                if (string.Equals(t, text, StringComparison.Ordinal))
                    return v;
            }

            throw parser.Error(Path(key), Node(key), $"'{text}' is not one of: {string.Join(", ", values.Select(v => v.Text))}");
        }
    }
}
