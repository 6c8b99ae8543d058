using System.CommandLine;
using SandboxVM.Server;

namespace SandboxVM.Cli;

/// <summary><c>sandboxvm keys new | hash</c>: API keys and the hashes a keys file stores (docs/API.md).</summary>
internal static class KeysCommand
{
    public static Command Create()
    {
        var name = new Option<string>("--name") { Description = "The caller's name: its sandboxes belong to it (a rotation keeps the name)", Required = true };
        var admin = new Option<bool>("--admin") { Description = "May read /metrics and use /v1/admin" };
        var file = new Option<string?>("--file")
        {
            Description = "Write the entry into this keys file (created if missing; an entry of the same name is replaced: a rotation). "
                + "A running server reads it again by itself",
        };
        var sandboxes = new Option<int?>("--sandboxes") { Description = "Live sandboxes (default: the server's SandboxVM:KeyLimits)" };
        var runs = new Option<int?>("--runs-per-minute") { Description = "Runs started per minute" };
        var concurrent = new Option<int?>("--concurrent-runs") { Description = "Runs executing at once" };
        var searches = new Option<int?>("--searches-per-minute") { Description = "Web searches per minute" };
        var create = new Command("new", "Make a new API key; print it (once: only its hash is stored) and its keys file entry")
        {
            name, admin, file, sandboxes, runs, concurrent, searches,
        };
        create.SetAction(async (parse, _) =>
        {
            string key = ApiKeys.NewKey();
            string hash = ApiKeys.Hash(key);
            int?[] given = [parse.GetValue(sandboxes), parse.GetValue(runs), parse.GetValue(concurrent), parse.GetValue(searches)];
            var limits = given.Any(v => v is not null)
                ? new ApiKeys.LimitsEntry { Sandboxes = given[0], RunsPerMinute = given[1], ConcurrentRuns = given[2], SearchesPerMinute = given[3] }
                : null;
            string who = parse.GetValue(name)!;
            try
            {
                if (parse.GetValue(file) is { } path)
                {
                    ApiKeys.WriteEntry(path, who, hash, parse.GetValue(admin), limits);
                    await Console.Error.WriteLineAsync($"sandboxvm: wrote the entry of '{who}' into {Path.GetFullPath(path)}; the key, shown once:");
                    Console.WriteLine(key);
                    return 0;
                }
                string entry = ApiKeys.EntryJson(who, hash, parse.GetValue(admin), limits);
                // Checked as a server would read it, so a bad name or limit is said here.
                ApiKeys.Parse($$"""{"keys": [{{entry}}]}""", "(new entry)", new SandboxVM.Core.KeyLimitOptions());
                Console.WriteLine($"key:   {key}");
                Console.WriteLine($"entry: {entry}");
                await Console.Error.WriteLineAsync("sandboxvm: give the key to its caller now (only its hash is kept); add the entry to the keys file's \"keys\" list");
                return 0;
            }
            catch (Exception e) when (e is FormatException or IOException or UnauthorizedAccessException or System.Text.Json.JsonException)
            {
                await Console.Error.WriteLineAsync("sandboxvm: " + e.Message);
                return 1;
            }
        });

        var hashCommand = new Command("hash", "Print the SHA-256 a keys file stores for the key read from stdin (one line)");
        hashCommand.SetAction(async (_, ct) =>
        {
            string? line = await Console.In.ReadLineAsync(ct);
            if (string.IsNullOrEmpty(line))
            {
                await Console.Error.WriteLineAsync("sandboxvm: no key on stdin");
                return 1;
            }
            Console.WriteLine(ApiKeys.Hash(line));
            return 0;
        });

        return new Command("keys", "API keys: make one, or hash an existing one, for the server's keys file") { create, hashCommand };
    }
}
