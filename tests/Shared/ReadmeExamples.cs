namespace SandboxVM.Testing;

/// <summary>The examples of the repository's README.md that tests run as written.</summary>
internal static class ReadmeExamples
{
    /// <summary>The <paramref name="language"/> code block after <c>&lt;!-- readme-test: NAME --&gt;</c> in README.md.</summary>
    public static string Block(string name, string language)
    {
        string dir = AppContext.BaseDirectory;
        while (!File.Exists(Path.Combine(dir, "README.md")) || !File.Exists(Path.Combine(dir, "SandboxVM.slnx")))
        {
            dir = Path.GetDirectoryName(dir) ?? throw new InvalidOperationException("README.md of the repository not found");
        }
        string readme = File.ReadAllText(Path.Combine(dir, "README.md"));
        int marker = readme.IndexOf($"<!-- readme-test: {name} -->", StringComparison.Ordinal);
        Assert.True(marker >= 0, $"README.md has no example marked {name}");
        string fence = $"```{language}\n";
        int open = readme.IndexOf(fence, marker, StringComparison.Ordinal);
        Assert.True(open >= 0, $"README.md's example {name} has no {language} block");
        int start = open + fence.Length;
        return readme[start..readme.IndexOf("```", start, StringComparison.Ordinal)];
    }
}
