using System.CommandLine;
using System.Globalization;
using SandboxVM.Client;

namespace SandboxVM.Cli;

/// <summary><c>sandboxvm sandbox ...</c>: sandboxes (sessions) kept between runs, their files and artifacts.</summary>
internal static partial class SandboxCommand
{
    public static Command Create() => new("sandbox", "Create sandboxes that keep files and interpreter state between runs; run code, move files, read artifacts")
    {
        CreateCommand(),
        ListCommand(),
        InfoCommand(),
        RunCommand(),
        ExecCommand(),
        ShellCommand(),
        FilesCommand(),
        ArtifactsCommand(),
        KeepAliveCommand(),
        SetTimeoutCommand(),
        PauseCommand(),
        ResumeCommand(),
        ForkCommand(),
        SnapshotCommand(),
        SnapshotsCommand(),
        ConnectInfoCommand(),
        KillCommand(),
    };

    /// <summary>--url and --api-key on a parent command, valid before or after its subcommand.</summary>
    private static (Option<string> Url, Option<string?> ApiKey) SharedOptions(Command parent)
    {
        var url = Common.UrlOption();
        var apiKey = Common.ApiKeyOption();
        url.Recursive = true;
        apiKey.Recursive = true;
        parent.Options.Add(url);
        parent.Options.Add(apiKey);
        return (url, apiKey);
    }

    private static Argument<string> IdArgument() => new("id") { Description = "Sandbox id (from `sandbox create` or `sandbox list`)" };

    /// <summary>A subcommand with --url and --api-key whose action gets a client; SDK errors print as in every command.</summary>
    /// <remarks>With <paramref name="shared"/> (recursive options of a parent command), those are used and none are added.</remarks>
    private static Command WithClient(
        Command command,
        Func<ParseResult, SandboxClient, CancellationToken, Task<int>> action,
        (Option<string> Url, Option<string?> ApiKey)? shared = null)
    {
        var (url, apiKey) = shared ?? (Common.UrlOption(), Common.ApiKeyOption());
        if (shared is null)
        {
            command.Options.Add(url);
            command.Options.Add(apiKey);
        }
        command.SetAction(async (parse, ct) =>
        {
            using var client = Common.Client(parse, url, apiKey);
            try
            {
                return await action(parse, client, ct);
            }
            catch (SandboxException e)
            {
                return await Common.FailAsync(e);
            }
        });
        return command;
    }

    private static Command CreateCommand()
    {
        var template = new Option<string?>("--template", "-t") { Description = "Template of the sandbox" };
        var timeout = new Option<double?>("--timeout") { Description = "Lifetime in seconds (default: the server's)" };
        var idle = new Option<double?>("--idle-timeout") { Description = "End it after this many seconds without calls (default: the server's)" };
        var metadata = new Option<string[]>("--metadata", "-m") { Description = "A KEY=VALUE label; repeat for more", AllowMultipleArgumentsPerToken = false };
        var fromSnapshot = new Option<string?>("--from-snapshot") { Description = "Start from this snapshot of yours (its template; see `sandbox snapshots`)" };
        var command = new Command("create", "Create a sandbox and print its id") { template, timeout, idle, metadata, fromSnapshot };
        command.Validators.Add(result =>
        {
            if (result.GetValue(template) is null && result.GetValue(fromSnapshot) is null)
            {
                result.AddError("--template or --from-snapshot is required");
            }
        });
        return WithClient(command, async (parse, client, ct) =>
        {
            if (!TryLabels(parse.GetValue(metadata), out var labels))
            {
                await Console.Error.WriteLineAsync("sandboxvm: --metadata takes KEY=VALUE");
                return 1;
            }
            var options = new SandboxCreateOptions
            {
                TimeoutS = parse.GetValue(timeout), IdleTimeoutS = parse.GetValue(idle), Metadata = labels, FromSnapshot = parse.GetValue(fromSnapshot),
            };
            var sandbox = await client.CreateSandboxAsync(parse.GetValue(template) ?? "", options, ct);
            // It lives on after this process: the server ends it at its timeout or on `sandbox kill`.
            sandbox.KillOnDispose = false;
            Console.WriteLine(sandbox.Id);
            await Console.Error.WriteLineAsync($"sandboxvm: {sandbox.Template} sandbox {sandbox.Id} expires {Common.Time(sandbox.Info.ExpiresAt)} (startup {sandbox.Info.StartupMs:0} ms via {sandbox.Info.VmSource.ToString().ToLowerInvariant()})");
            return 0;
        });
    }

    private static Command ListCommand()
    {
        var metadata = new Option<string[]>("--metadata", "-m") { Description = "Only sandboxes with this KEY=VALUE label; repeat for more", AllowMultipleArgumentsPerToken = false };
        var state = new Option<SandboxState[]>("--state") { Description = "Only sandboxes in this state (running, paused, ...); repeat for more", AllowMultipleArgumentsPerToken = false };
        return WithClient(new Command("list", "List your sandboxes: id, template, state, expiry, last activity") { metadata, state }, async (parse, client, ct) =>
        {
            if (!TryLabels(parse.GetValue(metadata), out var labels))
            {
                await Console.Error.WriteLineAsync("sandboxvm: --metadata takes KEY=VALUE");
                return 1;
            }
            var filter = new SandboxListFilter { Metadata = labels, States = parse.GetValue(state) };
            foreach (var s in await client.ListSandboxesAsync(filter, ct))
            {
                Console.WriteLine($"{s.Id,-24} {s.Template,-22} {s.State.ToString().ToLowerInvariant(),-8} expires {Common.Time(s.ExpiresAt)}  active {Common.Time(s.LastActivityAt)}");
            }
            return 0;
        });
    }

    private static Command InfoCommand()
    {
        var id = IdArgument();
        return WithClient(new Command("info", "Show a sandbox's state, lifetime and VM") { id }, async (parse, client, ct) =>
        {
            var s = await client.GetSandboxAsync(parse.GetValue(id)!, ct);
            Line("id", s.Id);
            Line("template", s.Template);
            Line("state", s.State.ToString().ToLowerInvariant());
            Line("created", Common.Time(s.CreatedAt));
            Line("expires", Common.Time(s.ExpiresAt));
            Line("last activity", Common.Time(s.LastActivityAt));
            Line("timeout", $"{s.TimeoutS.ToString(CultureInfo.InvariantCulture)} s, idle {s.IdleTimeoutS.ToString(CultureInfo.InvariantCulture)} s");
            Line("runtime", $"{s.Runtime} ({s.VmSource.ToString().ToLowerInvariant()}, startup {s.StartupMs:0} ms)");
            foreach (var (key, value) in s.Metadata)
            {
                Line("metadata", $"{key}={value}");
            }
            return 0;
        });
    }

    private static Command RunCommand()
    {
        var id = IdArgument();
        var file = new Argument<string?>("file") { Description = "Source file; omit or '-' to read the code from stdin", Arity = ArgumentArity.ZeroOrOne };
        var stdinFile = new Option<string?>("--stdin") { Description = "File whose content is the program's stdin" };
        var timeout = new Option<double?>("--timeout") { Description = "Run time limit in seconds" };
        var outDir = new Option<string>("--artifacts") { Description = "Folder to save artifacts that come with the result into", DefaultValueFactory = _ => "artifacts" };
        var stream = new Option<bool>("--stream") { Description = "Print the output as the program writes it" };
        var command = new Command("run", "Run code in a sandbox (files and python state persist); the exit code follows the program's")
        {
            id, file, stdinFile, timeout, outDir, stream,
        };
        return WithClient(command, async (parse, client, ct) =>
        {
            string code = await Common.ReadCodeAsync(parse.GetValue(file), ct);
            string? stdin = parse.GetValue(stdinFile) is { } s ? await File.ReadAllTextAsync(s, ct) : null;
            await using var sandbox = await client.ConnectSandboxAsync(parse.GetValue(id)!, ct);
            var options = new RunOptions { Stdin = stdin, TimeoutS = parse.GetValue(timeout) };
            bool streamed = parse.GetValue(stream);
            var result = streamed
                ? await Common.PrintStreamAsync(sandbox.RunStreamAsync(code, options, ct), ct)
                : await sandbox.RunAsync(code, options, ct);
            return await Common.FinishRunAsync(result, streamed, parse.GetValue(outDir)!, ct);
        });
    }

    private static Command FilesCommand()
    {
        var id = IdArgument();
        var files = new Command("files", "Files in a sandbox: ls, put, get, rm, mkdir (relative paths are under /home/sandbox)") { id };
        var shared = SharedOptions(files);

        var lsPath = new Argument<string>("path") { Description = "Directory (default: the working directory)", DefaultValueFactory = _ => "." };
        files.Subcommands.Add(WithClient(new Command("ls", "List a directory") { lsPath }, async (parse, client, ct) =>
        {
            await using var sandbox = await client.ConnectSandboxAsync(parse.GetValue(id)!, ct);
            foreach (var e in (await sandbox.Files.ListAsync(parse.GetValue(lsPath)!, ct)).OrderBy(e => e.Name, StringComparer.Ordinal))
            {
                char kind = e.Kind switch { SandboxFileKind.Directory => 'd', SandboxFileKind.Symlink => 'l', SandboxFileKind.File => '-', _ => '?' };
                Console.WriteLine($"{kind} {e.Size,12} {Common.Time(e.Mtime)} {e.Name}{(e.IsDirectory ? "/" : "")}");
            }
            return 0;
        }, shared));

        var local = new Argument<string>("local") { Description = "Local file to upload, or '-' for stdin" };
        var remote = new Argument<string?>("remote") { Description = "Path in the sandbox (default: the local file's name)", Arity = ArgumentArity.ZeroOrOne };
        files.Subcommands.Add(WithClient(new Command("put", "Upload a file (streamed; parent directories are created)") { local, remote }, async (parse, client, ct) =>
        {
            string from = parse.GetValue(local)!;
            string? to = parse.GetValue(remote) ?? (from == "-" ? null : Path.GetFileName(from));
            if (string.IsNullOrEmpty(to))
            {
                await Console.Error.WriteLineAsync("sandboxvm: name the path in the sandbox when uploading stdin");
                return 1;
            }
            await using var sandbox = await client.ConnectSandboxAsync(parse.GetValue(id)!, ct);
            await using var source = from == "-" ? Console.OpenStandardInput() : File.OpenRead(from);
            var info = await sandbox.Files.WriteAsync(to, source, ct);
            await Console.Error.WriteLineAsync($"sandboxvm: wrote {info.Path} ({info.Size} bytes)");
            return 0;
        }, shared));

        var getPath = new Argument<string>("path") { Description = "File in the sandbox" };
        var output = new Option<string?>("--output", "-o") { Description = "Local file to write (default: stdout)" };
        files.Subcommands.Add(WithClient(new Command("get", "Download a file (streamed)") { getPath, output }, async (parse, client, ct) =>
        {
            await using var sandbox = await client.ConnectSandboxAsync(parse.GetValue(id)!, ct);
            string? target = parse.GetValue(output);
            if (target is null or "-")
            {
                await using var stdout = Console.OpenStandardOutput();
                await sandbox.Files.ReadToAsync(parse.GetValue(getPath)!, stdout, ct);
                return 0;
            }
            // Download beside the target, so a failure leaves no half-written file under its name.
            string partial = target + ".part";
            await using (var file = File.Create(partial))
            {
                await sandbox.Files.ReadToAsync(parse.GetValue(getPath)!, file, ct);
            }
            File.Move(partial, target, overwrite: true);
            return 0;
        }, shared));

        var rmPath = new Argument<string>("path") { Description = "File or directory in the sandbox" };
        var recursive = new Option<bool>("--recursive", "-r") { Description = "Remove a directory and everything in it" };
        files.Subcommands.Add(WithClient(new Command("rm", "Remove a file or directory") { rmPath, recursive }, async (parse, client, ct) =>
        {
            await using var sandbox = await client.ConnectSandboxAsync(parse.GetValue(id)!, ct);
            await sandbox.Files.RemoveAsync(parse.GetValue(rmPath)!, parse.GetValue(recursive), ct);
            return 0;
        }, shared));

        var mkdirPath = new Argument<string>("path") { Description = "Directory to make (parents are created)" };
        files.Subcommands.Add(WithClient(new Command("mkdir", "Make a directory") { mkdirPath }, async (parse, client, ct) =>
        {
            await using var sandbox = await client.ConnectSandboxAsync(parse.GetValue(id)!, ct);
            await sandbox.Files.MakeDirAsync(parse.GetValue(mkdirPath)!, ct);
            return 0;
        }, shared));
        return files;
    }

    private static Command ArtifactsCommand()
    {
        var id = IdArgument();
        async Task<int> ListAsync(ParseResult parse, SandboxClient client, CancellationToken ct)
        {
            await using var sandbox = await client.ConnectSandboxAsync(parse.GetValue(id)!, ct);
            foreach (var a in await sandbox.ListArtifactsAsync(ct))
            {
                Console.WriteLine($"{a.Size,12} {a.Mime,-24} {a.Path}");
            }
            return 0;
        }

        var artifacts = new Command("artifacts", "Files the sandbox's runs left in /tmp/outputs: list them (default), or get one") { id };
        var shared = SharedOptions(artifacts);
        WithClient(artifacts, ListAsync, shared);
        artifacts.Subcommands.Add(WithClient(new Command("ls", "List artifacts: size, type, path"), ListAsync, shared));

        var path = new Argument<string>("path") { Description = "Artifact path, relative to /tmp/outputs" };
        var output = new Option<string?>("--output", "-o") { Description = "Local file to write (default: stdout)" };
        artifacts.Subcommands.Add(WithClient(new Command("get", "Download an artifact") { path, output }, async (parse, client, ct) =>
        {
            await using var sandbox = await client.ConnectSandboxAsync(parse.GetValue(id)!, ct);
            var artifact = await sandbox.ReadArtifactAsync(parse.GetValue(path)!, ct);
            string? target = parse.GetValue(output);
            if (target is null or "-")
            {
                await using var stdout = Console.OpenStandardOutput();
                await stdout.WriteAsync(artifact.Content, ct);
            }
            else
            {
                await File.WriteAllBytesAsync(target, artifact.Content, ct);
                await Console.Error.WriteLineAsync($"sandboxvm: {target} ({artifact.ContentType}, {artifact.Content.Length} bytes)");
            }
            return 0;
        }, shared));
        return artifacts;
    }

    private static Command ExecCommand()
    {
        var id = IdArgument();
        var cmd = new Argument<string[]>("command")
        {
            Description = "After --: a program and its arguments, or one shell line (run by /bin/sh -c)",
            Arity = ArgumentArity.OneOrMore,
        };
        var cwd = new Option<string?>("--cwd") { Description = "Working directory in the sandbox (default /home/sandbox)" };
        var timeout = new Option<double?>("--timeout") { Description = "Time limit in seconds (default 60; background: none)" };
        var env = new Option<string[]>("--env") { Description = "NAME=VALUE, repeatable", AllowMultipleArgumentsPerToken = false };
        var background = new Option<bool>("--background") { Description = "Start it, print its id and return; it keeps running" };
        var command = new Command("exec", "Run a shell command in a sandbox as its user; the exit code follows the command's")
        {
            id, cmd, cwd, timeout, env, background,
        };
        return WithClient(command, async (parse, client, ct) =>
        {
            string[] words = parse.GetValue(cmd)!;
            var variables = new Dictionary<string, string>(StringComparer.Ordinal);
            foreach (string pair in parse.GetValue(env) ?? [])
            {
                int eq = pair.IndexOf('=', StringComparison.Ordinal);
                if (eq <= 0)
                {
                    await Console.Error.WriteLineAsync($"sandboxvm: --env '{pair}' is not NAME=VALUE");
                    return 2;
                }
                variables[pair[..eq]] = pair[(eq + 1)..];
            }
            await using var sandbox = await client.ConnectSandboxAsync(parse.GetValue(id)!, ct);
            var options = new CommandOptions { Cwd = parse.GetValue(cwd), TimeoutS = parse.GetValue(timeout), Env = variables };
            bool shell = words.Length == 1;
            if (parse.GetValue(background))
            {
                var started = shell ? await sandbox.Commands.StartAsync(words[0], options, ct) : await sandbox.Commands.StartAsync(words, options, ct);
                Console.WriteLine(started.Id);
                return 0;
            }
            var result = shell ? await sandbox.Commands.RunAsync(words[0], options, ct) : await sandbox.Commands.RunAsync(words, options, ct);
            Console.Out.Write(result.Stdout);
            await Console.Error.WriteAsync(result.Stderr);
            if (result.Status != "exited")
            {
                await Console.Error.WriteLineAsync($"sandboxvm: command ended: {result.Status}{(result.Signal is int sig ? $" (signal {sig})" : "")}");
            }
            return result.ExitCode ?? (result.Signal is int s ? 128 + s : 1);
        });
    }

    private static Command KeepAliveCommand()
    {
        var id = IdArgument();
        var timeout = new Option<double?>("--timeout") { Description = "Seconds from now (default: the sandbox's lifetime)" };
        return WithClient(new Command("keepalive", "Push a sandbox's expiry to now plus its lifetime (or --timeout)") { id, timeout }, async (parse, client, ct) =>
        {
            await using var sandbox = await client.ConnectSandboxAsync(parse.GetValue(id)!, ct);
            var info = await sandbox.KeepAliveAsync(parse.GetValue(timeout), ct);
            Console.WriteLine($"{info.Id} expires {Common.Time(info.ExpiresAt)}");
            return 0;
        });
    }

    private static Command KillCommand()
    {
        var id = IdArgument();
        return WithClient(new Command("kill", "End a sandbox now; its files and state are gone") { id }, async (parse, client, ct) =>
        {
            string which = parse.GetValue(id)!;
            if (await client.KillSandboxAsync(which, ct))
            {
                return 0;
            }
            await Console.Error.WriteLineAsync($"sandboxvm: no sandbox '{which}' (unknown, or already ended)");
            return 1;
        });
    }

    private static void Line(string what, string value) => Console.WriteLine($"{what,-14} {value}");
}
