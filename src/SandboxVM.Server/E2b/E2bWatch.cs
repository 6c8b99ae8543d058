using System.Text.Json.Nodes;
using Microsoft.AspNetCore.Http;
using SandboxVM.Core.Runs;
using SandboxVM.Core.Sessions;
using SandboxVM.Protocol;

namespace SandboxVM.Server.E2b;

/// <summary>
/// envd's Filesystem/WatchDir without a watch in the agent: the directory (and, recursive, what is under it, to
/// <see cref="MaxDepth"/> levels) is listed every <see cref="Interval"/> and compared with the listing before. A
/// name that appears is EVENT_TYPE_CREATE (a non-empty file also EVENT_TYPE_WRITE, as inotify reports a new file
/// that was written), one whose size or mtime changed EVENT_TYPE_WRITE, one that went EVENT_TYPE_REMOVE. Changes
/// within one interval fold together (a file made and removed in between is not seen; a rename is a remove and a
/// create). At most <see cref="MaxWatches"/> per sandbox and <see cref="MaxEntries"/> entries each.
/// </summary>
internal static class E2bWatch
{
    public static readonly TimeSpan Interval = TimeSpan.FromMilliseconds(250);
    public const int MaxWatches = 8;
    public const int MaxEntries = 10_000;
    public const int MaxDepth = 16;

    /// <summary>How often a watch with nothing to report says it is alive (the SDK asks for 50 s).</summary>
    private static readonly TimeSpan _keepalive = TimeSpan.FromSeconds(30);

    private readonly record struct Stamp(FileKind Kind, long Size, long MtimeMs);

    public static async Task StreamAsync(HttpContext context, SessionManager sessions, SandboxExtras extras, string id, JsonObject request, CancellationToken ct)
    {
        string path = request["path"]?.GetValue<string>() is { Length: > 0 } p ? p : throw new ConnectException("invalid_argument", "'path' is required");
        bool recursive = request["recursive"]?.GetValue<bool>() ?? false;
        var root = await sessions.UseAsync(id, path, (a, checkedPath) => a.StatAsync(checkedPath, ct));
        if (root.Kind != FileKind.Directory)
        {
            throw new ConnectException("invalid_argument", $"'{path}' is not a directory");
        }
        if (!extras.TryStartWatch(MaxWatches))
        {
            throw new ConnectException("resource_exhausted", $"a sandbox may watch at most {MaxWatches} directories at once");
        }
        try
        {
            var before = await ListAsync(sessions, id, root.Path, recursive, ct);
            await E2bConnect.StartStreamAsync(context);
            await E2bConnect.WriteMessageAsync(context, new JsonObject { ["start"] = new JsonObject() }, ct);
            ConnectException? error = null;
            var quietSince = DateTimeOffset.UtcNow;
            try
            {
                while (true)
                {
                    await Task.Delay(Interval, ct);
                    Dictionary<string, Stamp> now;
                    try
                    {
                        now = await ListAsync(sessions, id, root.Path, recursive, ct);
                    }
                    catch (RunRequestException e) when (e.Kind == RefusalKind.NotFound && e.Code != ProblemCodes.SandboxNotFound)
                    {
                        error = new ConnectException("not_found", $"the watched directory '{path}' was removed");
                        break;
                    }
                    var events = Diff(before, now);
                    foreach (var e in events)
                    {
                        await E2bConnect.WriteMessageAsync(context, e, ct);
                    }
                    before = now;
                    if (events.Count > 0)
                    {
                        quietSince = DateTimeOffset.UtcNow;
                    }
                    else if (DateTimeOffset.UtcNow - quietSince > _keepalive)
                    {
                        await E2bConnect.WriteMessageAsync(context, new JsonObject { ["keepalive"] = new JsonObject() }, ct);
                        quietSince = DateTimeOffset.UtcNow;
                    }
                }
            }
            catch (OperationCanceledException) when (ct.IsCancellationRequested)
            {
                return; // the client stopped watching
            }
            catch (RunRequestException e)
            {
                error = ConnectException.From(e);
            }
            catch (ConnectException e)
            {
                error = e;
            }
            await E2bConnect.EndStreamAsync(context, error);
        }
        finally
        {
            extras.EndWatch();
        }
    }

    /// <summary>The events that turn listing <paramref name="before"/> into <paramref name="now"/>, names relative to the watched directory.</summary>
    private static List<JsonObject> Diff(Dictionary<string, Stamp> before, Dictionary<string, Stamp> now)
    {
        var events = new List<JsonObject>();
        foreach (var (name, stamp) in now.OrderBy(kv => kv.Key, StringComparer.Ordinal))
        {
            if (!before.TryGetValue(name, out var old) || old.Kind != stamp.Kind)
            {
                if (old.Kind != stamp.Kind && before.ContainsKey(name))
                {
                    events.Add(Event(name, "EVENT_TYPE_REMOVE"));
                }
                events.Add(Event(name, "EVENT_TYPE_CREATE"));
                if (stamp is { Kind: FileKind.File, Size: > 0 })
                {
                    events.Add(Event(name, "EVENT_TYPE_WRITE"));
                }
            }
            else if (stamp.Kind == FileKind.File && (old.Size != stamp.Size || old.MtimeMs != stamp.MtimeMs))
            {
                events.Add(Event(name, "EVENT_TYPE_WRITE"));
            }
        }
        foreach (string name in before.Keys.Where(n => !now.ContainsKey(n)).OrderBy(n => n, StringComparer.Ordinal))
        {
            events.Add(Event(name, "EVENT_TYPE_REMOVE"));
        }
        return events;
    }

    private static JsonObject Event(string name, string type) =>
        new() { ["filesystem"] = new JsonObject { ["name"] = name, ["type"] = type } };

    /// <summary>Every entry under <paramref name="root"/> by its path relative to it (one level unless <paramref name="recursive"/>).</summary>
    private static async Task<Dictionary<string, Stamp>> ListAsync(SessionManager sessions, string id, string root, bool recursive, CancellationToken ct)
    {
        var entries = new Dictionary<string, Stamp>(StringComparer.Ordinal);
        var pending = new Queue<(string Path, string Prefix, int Level)>([(root, "", 1)]);
        while (pending.TryDequeue(out var dir))
        {
            FileListBody listing;
            try
            {
                listing = await sessions.UseAsync(id, dir.Path, (a, p) => a.ListAsync(p, ct));
            }
            catch (RunRequestException e) when (dir.Level > 1 && e.Kind == RefusalKind.NotFound && e.Code != ProblemCodes.SandboxNotFound)
            {
                continue; // a subdirectory removed since its parent was listed
            }
            foreach (var e in listing.Entries)
            {
                if (entries.Count >= MaxEntries)
                {
                    throw new ConnectException("resource_exhausted", $"more than {MaxEntries} entries under the watched directory");
                }
                string name = dir.Prefix + e.Name;
                entries[name] = new Stamp(e.Kind, e.Size, e.MtimeMs);
                if (recursive && e.Kind == FileKind.Directory && dir.Level < MaxDepth)
                {
                    pending.Enqueue((e.Path, name + "/", dir.Level + 1));
                }
            }
        }
        return entries;
    }
}
