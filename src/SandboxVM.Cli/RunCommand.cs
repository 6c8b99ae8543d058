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
        var stream = new Option<bool>("--stream") { Description = "Print the output as the program writes it" };
        var url = Common.UrlOption();
        var apiKey = Common.ApiKeyOption();
        var command = new Command("run", "Run a program once and print its output; the exit code follows the program's")
        {
            template, file, stdinFile, timeout, outDir, stream, url, apiKey,
        };
        command.SetAction(async (parse, ct) =>
        {
            string code = await Common.ReadCodeAsync(parse.GetValue(file), ct);
            string? stdin = parse.GetValue(stdinFile) is { } s ? await File.ReadAllTextAsync(s, ct) : null;
            using var client = Common.Client(parse, url, apiKey);
            var request = new RunRequest
            {
                Template = parse.GetValue(template)!,
                Code = code,
                Stdin = stdin,
                TimeoutS = parse.GetValue(timeout),
            };
            bool streamed = parse.GetValue(stream);
            RunResult result;
            try
            {
                result = streamed
                    ? await Common.PrintStreamAsync(client.RunStreamAsync(request, ct), ct)
                    : await client.RunAsync(request, ct);
            }
            catch (SandboxException e)
            {
                return await Common.FailAsync(e);
            }
            return await Common.FinishRunAsync(result, streamed, parse.GetValue(outDir)!, ct);
        });
        return command;
    }
}
