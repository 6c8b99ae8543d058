using System.CommandLine;
using SandboxVM.Client;

namespace SandboxVM.Cli;

internal static class RunCommand
{
    public static Command Create()
    {
        var template = new Option<string>("--template", "-t") { Description = "Template to run the code in", Required = true };
        var file = new Argument<string?>("file") { Description = "Source file; omit or '-' to read the code from stdin", Arity = ArgumentArity.ZeroOrOne };
        var stdinFile = new Option<string?>("--stdin") { Description = "File whose content is the program's stdin" };
        var timeout = new Option<double?>("--timeout") { Description = "Run time limit in seconds" };
        var outDir = new Option<string>("--artifacts") { Description = "Folder to save artifacts into", DefaultValueFactory = _ => "artifacts" };
        var url = Common.UrlOption();
        var apiKey = Common.ApiKeyOption();
        var command = new Command("run", "Run a program once and print its output; the exit code follows the program's")
        {
            template, file, stdinFile, timeout, outDir, url, apiKey,
        };
        command.SetAction(async (parse, ct) =>
        {
            string? path = parse.GetValue(file);
            string code = path is null or "-" ? await Console.In.ReadToEndAsync(ct) : await File.ReadAllTextAsync(path, ct);
            string? stdin = parse.GetValue(stdinFile) is { } s ? await File.ReadAllTextAsync(s, ct) : null;
            using var client = new SandboxClient(new SandboxClientOptions { BaseUrl = parse.GetValue(url)!, ApiKey = parse.GetValue(apiKey) });
            RunResult result;
            try
            {
                result = await client.RunAsync(new RunRequest
                {
                    Template = parse.GetValue(template)!,
                    Code = code,
                    Stdin = stdin,
                    TimeoutS = parse.GetValue(timeout),
                }, ct);
            }
            catch (SandboxException e)
            {
                await Console.Error.WriteLineAsync("sandboxvm: " + e.Message);
                return 2;
            }
            await Console.Out.WriteAsync(result.Stdout);
            await Console.Error.WriteAsync(result.Stderr);
            foreach (var artifact in result.Artifacts.Where(a => a.Content is not null))
            {
                string saved = await artifact.SaveToAsync(parse.GetValue(outDir)!, ct);
                await Console.Error.WriteLineAsync($"artifact: {saved} ({artifact.Mime}, {artifact.Size} bytes)");
            }
            if (result.Status != RunStatus.Ok)
            {
                await Console.Error.WriteLineAsync($"sandboxvm: status {Common.Snake(result.Status.ToString())}" + (result.ExitCode is int c ? $", exit code {c}" : ""));
            }
            var m = result.Metrics;
            await Console.Error.WriteLineAsync(
                $"sandboxvm: {m.VmSource.ToString().ToLowerInvariant()} startup {m.StartupMs:0} ms, compile {m.CompileMs:0} ms, run {m.RunMs:0} ms, total {m.TotalMs:0} ms");
            return result.Status switch
            {
                RunStatus.Ok => 0,
                RunStatus.Error or RunStatus.CompileError => result.ExitCode is > 0 and < 256 ? result.ExitCode.Value : 1,
                RunStatus.Timeout => 124,
                RunStatus.Oom => 137,
                _ => 125,
            };
        });
        return command;
    }
}
