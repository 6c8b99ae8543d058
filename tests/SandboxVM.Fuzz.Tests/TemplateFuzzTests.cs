using System.Text;
using CsCheck;
using SandboxVM.Core.Templates;

namespace SandboxVM.Fuzz.Tests;

/// <summary>
/// The template loader (<see cref="TemplateRegistry"/>, <see cref="TemplateParser"/>) on mutated built-in
/// templates (templates/*.yaml), YAML bombs and random YAML. Each input loads or fails with a
/// <see cref="TemplateLoadException"/> reading <c>file:line: field: reason</c> (line inside the file),
/// never another exception (a stack overflow would take the server down with it), never a hang, and
/// allocates in proportion to the text.
/// </summary>
[Trait("category", Fuzz.Category)]
[Trait("tier", "unit")]
public sealed class TemplateFuzzTests
{
    private static readonly IReadOnlyList<(string Name, byte[] Bytes)> _builtin = Fuzz.Corpus("templates-builtin");

    private static readonly IReadOnlyList<byte[]> _corpus = [.. _builtin.Select(c => c.Bytes), .. Fuzz.Corpus("templates").Select(c => c.Bytes)];

    private static readonly byte[][] _tokens =
    [
        .. new[]
        {
            "&a ", "*a", "&b ", "*b", "? ", "[", "]", "{", "}", "- ", ": ", "\n  ", "\n- ", ", ", "!!binary ", "!!python/object:os.system ",
            "!custom ", "%YAML 1.1\n", "%TAG ! tag:x,2000:\n", "---\n", "...\n", "<<: *a\n", "\t", "\"\\u0000\"", "\"\\ud800\"", "'", "|\n  ",
            ">-\n  ", "# c\n", "\uFEFF", "\0", "~", "null", "1e400", "-0", "0x10", "9223372036854775808", "NaN", ".inf", "\u00e9", "\r\n",
            "name: x\n", "limits:\n  run_timeout_s: ", "network:\n  mode: proxy\n  allow: [", "warmup: {strategy: ", "source: {type: oci, reference: ",
        }.Select(Encoding.UTF8.GetBytes),
    ];

    /// <summary>Bombs by construction: aliases fanned out in levels, nesting of any depth, self-references.</summary>
    private static readonly Gen<string> _bombs = Gen.OneOf(
        Gen.Select(Gen.Int[1, 12], Gen.Int[1, 12], Gen.Bool, (levels, width, asKey) =>
        {
            var s = new StringBuilder("x:\n");
            for (int i = 0; i < levels; i++)
            {
                s.Append("  l").Append(i).Append(": &l").Append(i).Append(" [")
                    .AppendJoin(", ", Enumerable.Repeat(i == 0 ? "lol" : $"*l{i - 1}", width)).Append("]\n");
            }
            return s.Append(asKey ? $"? *l{levels - 1}\n: v\n" : $"build: *l{levels - 1}\n").ToString();
        }),
        Gen.Select(Gen.Int[1, 200_000], Gen.OneOf("[", "{a: ", "- "), (depth, open) => open == "- "
            ? "build:\n" + string.Concat(Enumerable.Range(0, Math.Min(depth, 400)).Select(i => new string(' ', i + 2) + "- \n"))
            : "name: " + string.Concat(Enumerable.Repeat(open, depth)) + string.Concat(Enumerable.Repeat(open == "[" ? "]" : "}", depth)) + "\n"),
        Gen.OneOf("? &a [*a]\n: x\n", "? &a {k: *a}\n: x\n", "a: &a [*a]\nname: x\n", "? &a [b]\n: *a\n? *a\n: c\n", "&a a: *a\n", "*a : b\n"));

    private static readonly Gen<(string File, string Text)> _inputs = Gen.Frequency(
        (6, Gen.Select(Mutator.From(_corpus, _tokens), Gen.Int[0, _builtin.Count - 1], (b, i) => (FileFor(i), Encoding.UTF8.GetString(b)))),
        (1, _bombs.Select(b => ("/fuzz/bomb.yaml", b))));

    private static string FileFor(int builtin) => Path.Combine(AppContext.BaseDirectory, "corpus", "templates-builtin", _builtin[builtin].Name);

    [Fact]
    public void MutatedTemplatesAndBombs_LoadOrFailWithFileLineFieldReason() =>
        Fuzz.Run("template-yaml", _inputs, input => Check(input.File, input.Text), iterations: 600,
            input => $"file={input.File} text={Fuzz.Escape(input.Text, 4000)}", input => Encoding.UTF8.GetBytes(input.Text));

    [Fact]
    public void BuiltInTemplates_StillLoad()
    {
        foreach (var (name, bytes) in _builtin)
        {
            var file = Path.Combine(AppContext.BaseDirectory, "corpus", "templates-builtin", name);
            try
            {
                Assert.Equal(Path.GetFileNameWithoutExtension(name), TemplateRegistry.Parse(Encoding.UTF8.GetString(bytes), file).Name);
            }
            catch (TemplateLoadException e) when (e.Field == "files")
            {
                // websearch-tools names a directory beside it in templates/, not copied here.
            }
        }
    }

    [Theory]
    [InlineData("deep-flow-nesting.yaml", 7, "nested more than 64 levels deep")] // overflowed the stack in YamlDotNet's loader
    [InlineData("self-referencing-key.yaml", 1, "keys must be plain strings")] // overflowed the stack hashing the key
    [InlineData("alias-key.yaml", 3, "keys must be plain strings")]
    public void Regression_YamlThatKilledTheProcess_IsATemplateLoadException(string corpusFile, int line, string reason)
    {
        var text = Encoding.UTF8.GetString(Fuzz.CorpusFile("templates", corpusFile));

        var e = Assert.Throws<TemplateLoadException>(() => TemplateRegistry.Parse(text, "/t/bomb.yaml"));

        Assert.Equal(line, e.Line);
        Assert.StartsWith($"/t/bomb.yaml:{line}: ", e.Message, StringComparison.Ordinal);
        Assert.Contains(reason, e.Reason, StringComparison.Ordinal);
    }

    [Fact]
    public void Regression_ABrokenFlowList_IsInvalidYaml_NotAnInvalidOperationException()
    {
        // Found by the fuzzer (seed bqGcK3JpeUYhwIf42): YamlDotNet's parser throws InvalidOperationException here.
        var text = Encoding.UTF8.GetString(Fuzz.CorpusFile("templates", "scanner-invalid-operation.yaml"));

        var e = Assert.Throws<TemplateLoadException>(() => TemplateRegistry.Parse(text, "/t/broken.yaml"));

        Assert.StartsWith("/t/broken.yaml: invalid YAML: ", e.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Regression_ATemplateFileThatNeverEnds_IsRefusedAtTheSizeLimit()
    {
        // Before the fix File.ReadAllText read /dev/zero until memory ran out.
        var e = Assert.Throws<TemplateLoadException>(() => TemplateRegistry.LoadFile("/dev/zero"));

        Assert.Equal("/dev/zero: the file is larger than 1024 KiB", e.Message);
    }

    private static void Check(string file, string text)
    {
        long before = GC.GetAllocatedBytesForCurrentThread();
        try
        {
            var template = TemplateRegistry.Parse(text, file);
            Assert.Equal(Path.GetFileNameWithoutExtension(file), template.Name);
        }
        catch (TemplateLoadException e)
        {
            Assert.Equal(file, e.File);
            Assert.False(string.IsNullOrWhiteSpace(e.Reason));
            int lines = text.Split('\n').Length;
            if (e.Line is { } line)
            {
                Assert.InRange(line, 1, lines + 1);
            }
            string where = e.Line is { } l ? $"{file}:{l}: " : $"{file}: ";
            Assert.Equal(e.Field.Length == 0 ? where + e.Reason : $"{where}{e.Field}: {e.Reason}", e.Message);
        }
        long allocated = GC.GetAllocatedBytesForCurrentThread() - before;
        long allowed = 64L * 1024 * 1024 + 400L * text.Length;
        Assert.True(allocated <= allowed, $"loading {text.Length} characters allocated {allocated} bytes (allowed {allowed})");
    }
}
