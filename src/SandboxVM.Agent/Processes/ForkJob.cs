using System.Text.Json.Serialization;
using System.Text.RegularExpressions;
using SandboxVM.Protocol;

namespace SandboxVM.Agent.Processes;

/// <summary>What the fork server's child becomes: sent to the server as JSON (see forkserver.py).</summary>
internal sealed class ForkJob
{
    /// <summary>The script as named in argv, relative to <see cref="Cwd"/> or absolute.</summary>
    public string Script { get; set; } = "";
    /// <summary>sys.argv[1:].</summary>
    public List<string> Args { get; set; } = [];
    public string Cwd { get; set; } = "";
    /// <summary>The child's whole environment (os.environ is replaced by it).</summary>
    public Dictionary<string, string> Env { get; set; } = [];
    /// <summary>The exec's outputs directory (absolute), where saved figures go.</summary>
    public string Outputs { get; set; } = "";
    /// <summary>Save the matplotlib figures left open as OUTPUTS/figure-N.png after the script.</summary>
    public bool SaveFigures { get; set; }
    /// <summary>Kernel: report the final value's representations and display()ed objects (<see cref="ForkServerRequest.RichResults"/>).</summary>
    public bool RichResults { get; set; }
}

/// <summary>JSON of the fork server's jobs, and of the JSON string on its "result" line.</summary>
[JsonSourceGenerationOptions(PropertyNamingPolicy = JsonKnownNamingPolicy.SnakeCaseLower)]
[JsonSerializable(typeof(ForkJob))]
[JsonSerializable(typeof(string))]
[JsonSerializable(typeof(Dictionary<string, string>))]
internal sealed partial class ForkJobJson : JsonSerializerContext;

/// <summary>
/// A run argv split for the fork server: <c>INTERPRETER... SCRIPT ARGS...</c>. The interpreter part
/// starts the server (or the kernel, when <see cref="Persistent"/>); the script and its arguments
/// become the forked child (or the kernel's next run).
/// </summary>
internal sealed partial record ForkPlan(IReadOnlyList<string> Interpreter, string Script, IReadOnlyList<string> Args, IReadOnlyList<string> Preload,
    bool Persistent = false, bool SaveFigures = false, bool RichResults = false)
{
    [GeneratedRegex(@"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")]
    private static partial Regex ModuleNameRegex();

    /// <summary>Splits <paramref name="run"/> as <paramref name="request"/> says; null with a reason when it cannot.</summary>
    public static ForkPlan? Create(IReadOnlyList<string> run, ForkServerRequest request, out string? error)
    {
        error = null;
        foreach (string module in request.Preload)
        {
            if (!ModuleNameRegex().IsMatch(module))
            {
                error = $"fork_server.preload: '{module}' is not a Python module name";
                return null;
            }
        }
        string script = string.IsNullOrEmpty(request.Script) && run.Count > 0 ? run[^1] : request.Script;
        int index = -1;
        for (int i = run.Count - 1; i >= 1; i--)
        {
            if (run[i] == script)
            {
                index = i;
                break;
            }
        }
        if (index < 1 || script.Length == 0)
        {
            error = $"fork_server.script '{script}' is not an element of exec.run after the interpreter";
            return null;
        }
        return new ForkPlan([.. run.Take(index)], script, [.. run.Skip(index + 1)], [.. request.Preload], request.Persistent, request.SaveFigures, request.RichResults);
    }

    /// <summary>
    /// Servers are interchangeable when they run the same interpreter argv, preloaded the same modules
    /// and started with the same PYTHON* variables (read once, at interpreter start-up).
    /// </summary>
    public string ServerKey(IReadOnlyDictionary<string, string> environment) => string.Join('\0',
    [
        "interpreter", .. Interpreter,
        "preload", .. Preload,
        "env", .. environment.Where(kv => kv.Key.StartsWith("PYTHON", StringComparison.Ordinal))
            .OrderBy(kv => kv.Key, StringComparer.Ordinal)
            .Select(kv => $"{kv.Key}={kv.Value}"),
    ]);

    /// <summary>The job for one run of this plan.</summary>
    public ForkJob Job(StepSpec spec, string outputsDir) => new()
    {
        Script = Script,
        Args = [.. Args],
        Cwd = spec.Cwd,
        Env = spec.Environment.ToDictionary(StringComparer.Ordinal),
        Outputs = outputsDir,
        SaveFigures = SaveFigures,
        RichResults = RichResults,
    };
}
