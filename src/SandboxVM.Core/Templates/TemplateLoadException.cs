namespace SandboxVM.Core.Templates;

/// <summary>A template file (or directory) could not be loaded. The message names the file, the line
/// where known, the field as a YAML path (<c>limits.run_timeout_s</c>) and what is wrong.</summary>
public sealed class TemplateLoadException : Exception
{
    public TemplateLoadException()
        : this("", "", null, "template could not be loaded")
    {
    }

    public TemplateLoadException(string message)
        : this("", "", null, message)
    {
    }

    public TemplateLoadException(string message, Exception innerException)
        : this("", "", null, message, innerException)
    {
    }

    public TemplateLoadException(string file, string field, int? line, string reason, Exception? innerException = null)
        : base(Format(file, field, line, reason), innerException)
    {
        File = file;
        Field = field;
        Line = line;
        Reason = reason;
    }

    /// <summary>Path of the template file (or directory) at fault.</summary>
    public string File { get; }

    /// <summary>YAML path of the field at fault, e.g. <c>limits.run_timeout_s</c>; empty for the whole file.</summary>
    public string Field { get; }

    /// <summary>1-based line in <see cref="File"/>, when known.</summary>
    public int? Line { get; }

    /// <summary>What is wrong, without the location.</summary>
    public string Reason { get; }

    private static string Format(string file, string field, int? line, string reason)
    {
        var where = file.Length == 0 ? "" : line is { } l ? $"{file}:{l}: " : $"{file}: ";
        return field.Length == 0 ? where + reason : $"{where}{field}: {reason}";
    }
}
