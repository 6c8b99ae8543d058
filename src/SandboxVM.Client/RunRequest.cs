namespace SandboxVM.Client;

/// <summary>
/// A one-shot run: which template, what code, and optionally stdin, environment and time limits.
/// Unset (null) members are left out of the request so the template's defaults apply.
/// </summary>
/// <example>
/// <code>
/// var request = new RunRequest { Template = "cpp-algorithm", Code = source, Stdin = "3\n1 2 3\n", TimeoutS = 5 };
/// </code>
/// </example>
public sealed class RunRequest
{
    /// <summary>Name of the template to run in, e.g. <c>python-data-analysis</c>, <c>cpp-algorithm</c>, <c>go-algorithm</c>.</summary>
    public required string Template { get; init; }

    /// <summary>The source code to run.</summary>
    public required string Code { get; init; }

    /// <summary>Text fed to the program's standard input.</summary>
    public string? Stdin { get; init; }

    /// <summary>Extra environment variables for the program.</summary>
    public IReadOnlyDictionary<string, string>? Env { get; init; }

    /// <summary>Run time limit in seconds (the template's default when null; capped by its maximum).</summary>
    public double? TimeoutS { get; init; }

    /// <summary>Compile time limit in seconds for compiled languages (the template's default when null).</summary>
    public double? CompileTimeoutS { get; init; }
}
