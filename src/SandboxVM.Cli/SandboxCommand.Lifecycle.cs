using System.CommandLine;
using System.Globalization;
using SandboxVM.Client;

namespace SandboxVM.Cli;

/// <summary><c>sandboxvm sandbox</c> verbs that find a sandbox again and save it: set-timeout, pause, resume, fork, snapshot(s), connect-info.</summary>
internal static partial class SandboxCommand
{
    /// <summary>KEY=VALUE pairs into a map (null when none); false when one has no '=' or an empty key.</summary>
    private static bool TryLabels(string[]? pairs, out Dictionary<string, string>? labels)
    {
        labels = null;
        foreach (string pair in pairs ?? [])
        {
            int eq = pair.IndexOf('=', StringComparison.Ordinal);
            if (eq <= 0)
            {
                return false;
            }
            (labels ??= [])[pair[..eq]] = pair[(eq + 1)..];
        }
        return true;
    }

    private static void PrintState(SandboxInfo s) =>
        Console.WriteLine($"{s.Id} {s.State.ToString().ToLowerInvariant()} expires {Common.Time(s.ExpiresAt)}"
            + (s.PausedBytes is { } bytes && s.State == SandboxState.Paused ? $" ({bytes} bytes on disk)" : ""));

    private static Command SetTimeoutCommand()
    {
        var id = IdArgument();
        var seconds = new Argument<double>("seconds") { Description = "New lifetime, from now" };
        return WithClient(new Command("set-timeout", "Give a sandbox a new lifetime from now (also the default of later keepalives)") { id, seconds },
            async (parse, client, ct) =>
            {
                await using var sandbox = await client.ConnectSandboxAsync(parse.GetValue(id)!, ct);
                PrintState(await sandbox.SetTimeoutAsync(parse.GetValue(seconds), ct));
                return 0;
            });
    }

    private static Command PauseCommand()
    {
        var id = IdArgument();
        return WithClient(new Command("pause", "Save a sandbox to the server's disk and end its VM (qemu, gvisor); resume brings it back as it was") { id },
            async (parse, client, ct) =>
            {
                await using var sandbox = await client.ConnectSandboxAsync(parse.GetValue(id)!, ct);
                PrintState(await sandbox.PauseAsync(ct));
                return 0;
            });
    }

    private static Command ResumeCommand()
    {
        var id = IdArgument();
        return WithClient(new Command("resume", "Bring a paused sandbox back: globals, files, background processes") { id }, async (parse, client, ct) =>
        {
            await using var sandbox = await client.ConnectSandboxAsync(parse.GetValue(id)!, ct);
            PrintState(await sandbox.ResumeAsync(ct));
            return 0;
        });
    }

    private static Command ForkCommand()
    {
        var id = IdArgument();
        var count = new Option<int>("--count", "-n") { Description = "How many sandboxes", DefaultValueFactory = _ => 1 };
        return WithClient(new Command("fork", "Start new sandboxes from a sandbox's state now and print their ids; it keeps running") { id, count },
            async (parse, client, ct) =>
            {
                await using var sandbox = await client.ConnectSandboxAsync(parse.GetValue(id)!, ct);
                foreach (var fork in await sandbox.ForkAsync(parse.GetValue(count), ct))
                {
                    // They live on after this process, like `sandbox create`'s.
                    fork.KillOnDispose = false;
                    Console.WriteLine(fork.Id);
                }
                return 0;
            });
    }

    private static Command SnapshotCommand()
    {
        var id = IdArgument();
        var name = new Argument<string>("name") { Description = "Snapshot name: letters, digits, '.', '_', '-'" };
        return WithClient(new Command("snapshot", "Save a sandbox's state as a named snapshot; `sandbox create --from-snapshot NAME` starts from it") { id, name },
            async (parse, client, ct) =>
            {
                await using var sandbox = await client.ConnectSandboxAsync(parse.GetValue(id)!, ct);
                var saved = await sandbox.SnapshotAsync(parse.GetValue(name)!, ct);
                Console.WriteLine($"{saved.Name} {saved.Template} {saved.SizeBytes} bytes");
                return 0;
            });
    }

    private static Command SnapshotsCommand()
    {
        var snapshots = new Command("snapshots", "Your named snapshots: list them (default), or rm one");
        var shared = SharedOptions(snapshots);
        async Task<int> ListAsync(ParseResult parse, SandboxClient client, CancellationToken ct)
        {
            foreach (var s in await client.ListSnapshotsAsync(ct))
            {
                Console.WriteLine($"{s.Name,-24} {s.Template,-22} {s.SizeBytes,14} {Common.Time(s.CreatedAt)}  from {s.SourceSandbox}");
            }
            return 0;
        }
        WithClient(snapshots, ListAsync, shared);
        snapshots.Subcommands.Add(WithClient(new Command("ls", "List snapshots: name, template, bytes, created, source sandbox"), ListAsync, shared));
        var name = new Argument<string>("name") { Description = "Snapshot name" };
        snapshots.Subcommands.Add(WithClient(new Command("rm", "Delete a snapshot (sandboxes made from it go on)") { name }, async (parse, client, ct) =>
        {
            string which = parse.GetValue(name)!;
            if (await client.DeleteSnapshotAsync(which, ct))
            {
                return 0;
            }
            await Console.Error.WriteLineAsync($"sandboxvm: no snapshot '{which}'");
            return 1;
        }, shared));
        return snapshots;
    }

    private static Command ConnectInfoCommand()
    {
        var id = IdArgument();
        var url = Common.UrlOption();
        var apiKey = Common.ApiKeyOption();
        var command = new Command("connect-info", "Print how to reach a sandbox again from code: server, id, state, SDK lines") { id, url, apiKey };
        return WithClient(command, async (parse, client, ct) =>
        {
            var s = await client.GetSandboxAsync(parse.GetValue(id)!, ct);
            string server = parse.GetValue(url)!;
            Line("id", s.Id);
            Line("server", server);
            Line("template", s.Template);
            Line("state", s.State.ToString().ToLowerInvariant());
            Line("expires", Common.Time(s.ExpiresAt));
            Line("python", string.Create(CultureInfo.InvariantCulture, $"Sandbox.connect(\"{s.Id}\", base_url=\"{server}\")"));
            Line("csharp", string.Create(CultureInfo.InvariantCulture,
                $"await Sandbox.ConnectAsync(\"{s.Id}\", new SandboxClientOptions {{ BaseUrl = \"{server}\" }})"));
            return 0;
        }, (url, apiKey));
    }
}
