using System.Diagnostics.CodeAnalysis;

namespace SandboxVM.Core.Templates;

/// <summary>The known templates, by name. Immutable once loaded.</summary>
public sealed class TemplateRegistry
{
    private readonly Dictionary<string, TemplateDefinition> _byName = new(StringComparer.Ordinal);

    /// <summary>Builds a registry from definitions made in code (tests, embedding).</summary>
    /// <exception cref="TemplateLoadException">Two definitions share a name.</exception>
    public TemplateRegistry(IEnumerable<TemplateDefinition> templates)
    {
        ArgumentNullException.ThrowIfNull(templates);
        var all = new List<TemplateDefinition>();
        foreach (var t in templates)
        {
            if (_byName.TryGetValue(t.Name, out var existing))
            {
                var where = existing.FilePath.Length > 0 ? existing.FilePath : "another definition";
                throw new TemplateLoadException(t.FilePath, "name", null, $"template '{t.Name}' is already defined in {where}");
            }

            _byName.Add(t.Name, t);
            all.Add(t);
        }

        All = all.AsReadOnly();
    }

    /// <summary>All templates, in load order (directory order, then file name).</summary>
    public IReadOnlyList<TemplateDefinition> All { get; }

    public bool TryGet(string name, [MaybeNullWhen(false)] out TemplateDefinition template) =>
        _byName.TryGetValue(name, out template);

    /// <summary>Loads every <c>*.yaml</c> file of each directory: the built-in one first, then user
    /// directories. Any bad file fails the whole load, so a typo never silently drops a template.</summary>
    /// <exception cref="TemplateLoadException">A directory is missing, a file is invalid, or two files
    /// define the same name.</exception>
    public static TemplateRegistry Load(IEnumerable<string> directories)
    {
        ArgumentNullException.ThrowIfNull(directories);
        var templates = new List<TemplateDefinition>();
        foreach (var dir in directories)
        {
            if (!Directory.Exists(dir))
                throw new TemplateLoadException(dir, "", null, "template directory does not exist");

            var files = Directory.EnumerateFiles(dir, "*.yaml", SearchOption.TopDirectoryOnly)
                .Where(f => !Path.GetFileName(f).StartsWith('.')) // editor and OS droppings
                .Order(StringComparer.Ordinal);
            templates.AddRange(files.Select(LoadFile));
        }

        return new TemplateRegistry(templates);
    }

    /// <summary>Loads one template file; its name must equal the file name without <c>.yaml</c>.</summary>
    /// <exception cref="TemplateLoadException">The file cannot be read or is invalid.</exception>
    public static TemplateDefinition LoadFile(string path)
    {
        ArgumentNullException.ThrowIfNull(path);
        string text;
        try
        {
            // At most one character over the limit: the parser names the limit, and a file that never
            // ends (a FIFO, a link to /dev/zero) is not read to the end.
            using var reader = new StreamReader(path);
            var buffer = new char[TemplateParser.MaxChars + 1];
            text = new string(buffer, 0, reader.ReadBlock(buffer, 0, buffer.Length));
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new TemplateLoadException(path, "", null, "cannot read the file: " + e.Message, e);
        }

        return TemplateParser.Parse(text, path);
    }

    /// <summary>Parses template YAML. With an empty <paramref name="filePath"/> the name is not checked
    /// against a file name.</summary>
    /// <exception cref="TemplateLoadException">The text is not a valid template.</exception>
    public static TemplateDefinition Parse(string yaml, string filePath = "")
    {
        ArgumentNullException.ThrowIfNull(yaml);
        ArgumentNullException.ThrowIfNull(filePath);
        return TemplateParser.Parse(yaml, filePath);
    }
}
