using System.Security.Cryptography;
using System.Text;
using System.Text.Json;
using System.Text.RegularExpressions;
using Microsoft.Extensions.Logging;
using SandboxVM.Core.Pools;
using SandboxVM.Core.Runs;
using SandboxVM.Core.Templates;
using SandboxVM.Runtime;

namespace SandboxVM.Core.Sessions;

/// <summary>A named snapshot as its owner sees it.</summary>
public sealed record NamedSnapshot(string Name, string Template, long SizeBytes, DateTimeOffset CreatedAt, string SourceSandbox);

// Named snapshots: a sandbox's state saved the way a fork saves it, kept in the state directory under
// its owner until deleted, and restored by any number of creates (POST /v1/sandboxes {"from_snapshot"}).
// Nothing about them is kept in memory: the directory is the truth, so they survive a restart as they are.
public sealed partial class SessionManager
{
    internal const string SnapshotsDirName = "snapshots";
    internal const string SnapshotRecordFileName = "snapshot.json";

    /// <summary>Letters, digits, '.', '_' and '-', starting with a letter or digit: a directory name that cannot escape or hide.</summary>
    [GeneratedRegex("^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")]
    private static partial Regex SnapshotNameRegex();

    private readonly Lock _snapshotLock = new();
    /// <summary>Snapshot directories being written (name taken) or read by a create (not deletable).</summary>
    private readonly HashSet<string> _snapshotsSaving = [];
    private readonly Dictionary<string, int> _snapshotReaders = [];

    /// <summary>One directory per owner, named by a hash: owner names are API key names, not file names.</summary>
    private string OwnerSnapshotDir(string owner) =>
        Path.Combine(_options.StateDir, SnapshotsDirName, Convert.ToHexStringLower(SHA256.HashData(Encoding.UTF8.GetBytes(owner)))[..32]);

    private static string CheckSnapshotName(string? name) =>
        name is not null && SnapshotNameRegex().IsMatch(name)
            ? name
            : throw new RunRequestException(ProblemCodes.InvalidSnapshotName, "name",
                "a snapshot name is 1 to 64 letters, digits, '.', '_' or '-', starting with a letter or digit");

    /// <summary>
    /// Saves sandbox <paramref name="id"/>'s state now (memory, files, interpreter) as the owner's snapshot
    /// <paramref name="name"/>; the sandbox goes on (a paused one stays paused, its image is copied).
    /// </summary>
    public async Task<NamedSnapshot> SnapshotAsync(string id, string? name, CancellationToken cancellationToken)
    {
        var source = Get(id);
        var saver = Saver;
        name = CheckSnapshotName(name);
        string ownerDir = OwnerSnapshotDir(source.Owner);
        string dir = Path.Combine(ownerDir, name);
        lock (_snapshotLock)
        {
            if (Directory.Exists(dir) || _snapshotsSaving.Contains(dir))
            {
                throw new RunRequestException(ProblemCodes.SnapshotExists, "name", $"a snapshot named '{name}' exists; delete it first or pick another name",
                    RefusalKind.Conflict);
            }
            int held = Directory.Exists(ownerDir) ? Directory.GetDirectories(ownerDir).Count(d => !Path.GetFileName(d).StartsWith('.')) : 0;
            held += _snapshotsSaving.Count(d => Path.GetDirectoryName(d) == ownerDir);
            if (held >= _options.MaxSnapshotsPerOwner)
            {
                throw new RunRequestException(ProblemCodes.TooManySnapshots, null,
                    $"this API key keeps {held} snapshots, the most it may; delete one first", RefusalKind.Conflict);
            }
            _snapshotsSaving.Add(dir);
        }
        // A dot name: never taken for a snapshot (names start with a letter or digit), removed if left behind.
        string build = Path.Combine(ownerDir, ".tmp-" + Convert.ToHexStringLower(RandomNumberGenerator.GetBytes(8)));
        try
        {
            using var turn = await source.RunLock.AcquireAsync(cancellationToken);
            source = Get(id);
            VmSpec spec = source.SavedSpec ??= await _pools.GetSpecAsync(source.Template, cancellationToken);
            CreatePrivateDirectory(Path.Combine(_options.StateDir, SnapshotsDirName));
            CreatePrivateDirectory(ownerDir);
            string image = Path.Combine(build, ImageDirName);
            long bytes;
            if (source.State == SessionState.Paused)
            {
                bytes = CopyDirectory(Path.Combine(source.PausedDirectory!, ImageDirName), image);
            }
            else
            {
                Directory.CreateDirectory(image);
                bytes = (await SaveRunningAsync(source, saver, spec, image)).Bytes;
            }
            var record = new SnapshotRecord
            {
                Name = name,
                Owner = source.Owner,
                Template = source.Template.Name,
                Runtime = _pools.Runtime.Name,
                CreatedAt = _time.GetUtcNow(),
                SourceSandbox = source.Id,
                SizeBytes = bytes,
                BuiltHash = source.BuiltHash,
                Runs = source.Runs,
                Spec = spec,
            };
            await File.WriteAllTextAsync(Path.Combine(build, SnapshotRecordFileName),
                JsonSerializer.Serialize(record, SnapshotRecordJson.Default.SnapshotRecord), CancellationToken.None);
            Directory.Move(build, dir);
            LogSnapshotSaved(_logger, name, source.Id, bytes);
            return record.ToInfo();
        }
        catch (Exception e) when (e is not RunRequestException and not OperationCanceledException)
        {
            LogSnapshotFailed(_logger, id, e);
            throw new RunRequestException(ProblemCodes.SnapshotFailed, null, $"sandbox '{id}' could not be saved as '{name}': {DescribeSaveError(e, build)}",
                RefusalKind.Unavailable);
        }
        finally
        {
            TryDeleteDirectory(build);
            lock (_snapshotLock)
            {
                _snapshotsSaving.Remove(dir);
            }
        }
    }

    /// <summary>At start: what a server that stopped mid-save or mid-delete left behind goes.</summary>
    private void SweepSnapshotLeftovers()
    {
        string root = Path.Combine(_options.StateDir, SnapshotsDirName);
        if (!Directory.Exists(root))
        {
            return;
        }
        foreach (string leftover in Directory.GetDirectories(root).SelectMany(Directory.GetDirectories).Where(d => Path.GetFileName(d).StartsWith('.')))
        {
            TryDeleteDirectory(leftover);
        }
    }

    /// <summary>The owner's snapshots (of this server's runtime), by name.</summary>
    public IReadOnlyList<NamedSnapshot> ListSnapshots(string owner)
    {
        string ownerDir = OwnerSnapshotDir(owner);
        if (!Directory.Exists(ownerDir))
        {
            return [];
        }
        return [.. Directory.GetDirectories(ownerDir)
            .Where(d => !Path.GetFileName(d).StartsWith('.'))
            .Select(d => ReadSnapshot(d, owner))
            .OfType<SnapshotRecord>()
            .Select(r => r.ToInfo())
            .OrderBy(i => i.Name, StringComparer.Ordinal)];
    }

    /// <summary>Deletes the owner's snapshot; 404 when there is none, 409 while a sandbox is being started from it.</summary>
    public void DeleteSnapshot(string owner, string? name)
    {
        string dir = Path.Combine(OwnerSnapshotDir(owner), CheckSnapshotName(name));
        string trash = Path.Combine(OwnerSnapshotDir(owner), ".del-" + Convert.ToHexStringLower(RandomNumberGenerator.GetBytes(8)));
        lock (_snapshotLock)
        {
            if (ReadSnapshot(dir, owner) is null)
            {
                throw SnapshotNotFound(name!, field: null);
            }
            if (_snapshotReaders.ContainsKey(dir))
            {
                throw new RunRequestException(ProblemCodes.SnapshotBusy, null, $"a sandbox is being started from snapshot '{name}'; delete it when that is done",
                    RefusalKind.Conflict);
            }
            // Gone from the name at once; its files go after (a VM restored from it keeps what it opened).
            Directory.Move(dir, trash);
        }
        TryDeleteDirectory(trash);
    }

    /// <summary>The owner's snapshot <paramref name="name"/> for a create; 404 for another owner's, like an unknown one.</summary>
    private SnapshotRecord FindSnapshot(string owner, string name)
    {
        _ = Saver;
        string dir = Path.Combine(OwnerSnapshotDir(owner), CheckSnapshotName(name));
        return ReadSnapshot(dir, owner) ?? throw SnapshotNotFound(name);
    }

    /// <summary>A VM restored from the snapshot; the snapshot cannot be deleted until it is up.</summary>
    private async Task<LeasedVm> RestoreSnapshotAsync(SnapshotRecord snapshot, TemplateDefinition template)
    {
        string dir = Path.Combine(OwnerSnapshotDir(snapshot.Owner), snapshot.Name);
        lock (_snapshotLock)
        {
            if (!Directory.Exists(dir))
            {
                throw SnapshotNotFound(snapshot.Name);
            }
            _snapshotReaders[dir] = _snapshotReaders.GetValueOrDefault(dir) + 1;
        }
        try
        {
            return await RestoreLeaseAsync(Saver, template, snapshot.Spec!, Path.Combine(dir, ImageDirName));
        }
        finally
        {
            lock (_snapshotLock)
            {
                int left = _snapshotReaders[dir] - 1;
                if (left == 0)
                {
                    _snapshotReaders.Remove(dir);
                }
                else
                {
                    _snapshotReaders[dir] = left;
                }
            }
        }
    }

    private static RunRequestException SnapshotNotFound(string name, string? field = "from_snapshot") =>
        new(ProblemCodes.SnapshotNotFound, field, $"no snapshot named '{name}'", RefusalKind.NotFound);

    /// <summary>The record in <paramref name="dir"/> when it is the owner's and this runtime's, else null (logged when unreadable).</summary>
    private SnapshotRecord? ReadSnapshot(string dir, string owner)
    {
        string path = Path.Combine(dir, SnapshotRecordFileName);
        if (!File.Exists(path))
        {
            return null;
        }
        try
        {
            var record = JsonSerializer.Deserialize(File.ReadAllText(path), SnapshotRecordJson.Default.SnapshotRecord);
            return record is not null && record.Owner == owner && record.Name == Path.GetFileName(dir) && record.Runtime == _pools.Runtime.Name
                && record.Spec is not null
                ? record
                : null;
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException or JsonException)
        {
            LogSnapshotUnreadable(_logger, dir, e.Message);
            return null;
        }
    }

    /// <summary>Copies a saved image (a paused sandbox's) file by file; returns the bytes copied.</summary>
    private static long CopyDirectory(string from, string to)
    {
        long bytes = 0;
        Directory.CreateDirectory(to);
        foreach (string file in Directory.GetFiles(from))
        {
            string target = Path.Combine(to, Path.GetFileName(file));
            File.Copy(file, target);
            bytes += new FileInfo(target).Length;
        }
        foreach (string sub in Directory.GetDirectories(from))
        {
            bytes += CopyDirectory(sub, Path.Combine(to, Path.GetFileName(sub)));
        }
        return bytes;
    }

    [LoggerMessage(Level = LogLevel.Information, Message = "snapshot {Name} saved from sandbox {Id} ({Bytes} bytes on disk)")]
    private static partial void LogSnapshotSaved(ILogger logger, string name, string id, long bytes);

    [LoggerMessage(Level = LogLevel.Warning, Message = "sandbox {Id} could not be saved as a snapshot")]
    private static partial void LogSnapshotFailed(ILogger logger, string id, Exception e);

    [LoggerMessage(Level = LogLevel.Warning, Message = "snapshot in {Dir} not readable: {Reason}")]
    private static partial void LogSnapshotUnreadable(ILogger logger, string dir, string reason);
}

/// <summary>snapshot.json next to a named snapshot's image.</summary>
internal sealed record SnapshotRecord
{
    public required string Name { get; init; }
    public required string Owner { get; init; }
    public required string Template { get; init; }
    public string? Runtime { get; init; }
    public DateTimeOffset CreatedAt { get; init; }
    public string SourceSandbox { get; init; } = "";
    public long SizeBytes { get; init; }
    public string? BuiltHash { get; init; }
    public int Runs { get; init; }
    public VmSpec? Spec { get; init; }

    public NamedSnapshot ToInfo() => new(Name, Template, SizeBytes, CreatedAt, SourceSandbox);
}

[System.Text.Json.Serialization.JsonSourceGenerationOptions(PropertyNamingPolicy = System.Text.Json.Serialization.JsonKnownNamingPolicy.SnakeCaseLower, WriteIndented = true)]
[System.Text.Json.Serialization.JsonSerializable(typeof(SnapshotRecord))]
internal sealed partial class SnapshotRecordJson : System.Text.Json.Serialization.JsonSerializerContext;
