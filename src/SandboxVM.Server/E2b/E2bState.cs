using System.Collections.Concurrent;
using System.Security.Cryptography;
using System.Text;

namespace SandboxVM.Server.E2b;

/// <summary>
/// What the E2B door keeps beside a sandbox: the access token envd and interpreter calls present (an HMAC of
/// the sandbox id under <paramref name="key"/>, so it needs no store), and per sandbox E2B's numeric pids for
/// SandboxVM's command ids, its code contexts and its watches. (Create's environment variables are the
/// sandbox's own, SandboxSession.Env, so they go with it through pauses and moves.)
/// </summary>
/// <param name="key">
/// The token key: made at start on a single server; in a cluster derived from the cluster secret, so every node
/// checks the tokens any node gave out, also after a sandbox moved.
/// </param>
internal sealed class E2bState(byte[] key)
{
    public E2bState()
        : this(RandomNumberGenerator.GetBytes(32))
    {
    }

    /// <summary>What the SDK is told about the envd it talks to: 0.5.7 has octet-stream uploads and CloseStdin, no file metadata.</summary>
    public const string EnvdVersion = "0.5.7";

    private readonly byte[] _key = key.Length >= 32 ? key : throw new ArgumentException("an E2B token key has at least 32 bytes", nameof(key));
    private readonly ConcurrentDictionary<string, SandboxExtras> _extras = new(StringComparer.Ordinal);

    public string TokenFor(string sandboxId) =>
        Convert.ToHexStringLower(HMACSHA256.HashData(_key, Encoding.UTF8.GetBytes(sandboxId)));

    public bool TokenMatches(string sandboxId, string? presented) =>
        presented is { Length: > 0 } &&
        CryptographicOperations.FixedTimeEquals(Encoding.ASCII.GetBytes(TokenFor(sandboxId)), Encoding.ASCII.GetBytes(presented));

    /// <summary>
    /// Whether <paramref name="signature"/> is the SDK's signature of a file URL of sandbox <paramref name="sandboxId"/>:
    /// <c>v1_</c> + unpadded base64 of SHA-256(<c>path:operation:user:token[:expiration]</c>).
    /// </summary>
    public bool Signs(string sandboxId, string signature, string path, string operation, string user, string? expiration)
    {
        string raw = $"{path}:{operation}:{user}:{TokenFor(sandboxId)}" + (expiration is null ? "" : ":" + expiration);
        string expected = "v1_" + Convert.ToBase64String(SHA256.HashData(Encoding.UTF8.GetBytes(raw))).TrimEnd('=');
        return CryptographicOperations.FixedTimeEquals(Encoding.ASCII.GetBytes(expected), Encoding.ASCII.GetBytes(signature));
    }

    public SandboxExtras For(string sandboxId) => _extras.GetOrAdd(sandboxId, _ => new SandboxExtras());

    public void Forget(string sandboxId) => _extras.TryRemove(sandboxId, out _);

    /// <summary>Drops what is kept for sandboxes that ended without a DELETE (timed out, lost), so the map stays as big as the live sandboxes.</summary>
    public void KeepOnly(IEnumerable<string> liveIds)
    {
        var live = liveIds.ToHashSet(StringComparer.Ordinal);
        foreach (string id in _extras.Keys.Where(id => !live.Contains(id)))
        {
            _extras.TryRemove(id, out _);
        }
    }

    public int Count => _extras.Count;
}

internal sealed class SandboxExtras
{
    private readonly Lock _lock = new();
    private readonly Dictionary<uint, E2bProcess> _byPid = [];
    private uint _nextPid = 1000;

    private int _watches;

    /// <summary>Counts a directory watch in; false when <paramref name="max"/> are on already.</summary>
    public bool TryStartWatch(int max)
    {
        lock (_lock)
        {
            if (_watches >= max)
            {
                return false;
            }
            _watches++;
            return true;
        }
    }

    public void EndWatch()
    {
        lock (_lock)
        {
            _watches--;
        }
    }

    /// <summary>Where every context's code starts (E2B's /home/user does not exist).</summary>
    public const string ContextCwd = "/home/sandbox";

    /// <summary>Code contexts made by POST /contexts, in order; "default" is always there and not in this list.</summary>
    private readonly List<string> _contexts = [];

    /// <summary>The context ids, the default one first.</summary>
    public IReadOnlyList<string> Contexts()
    {
        lock (_lock)
        {
            return [E2bInterpreter.DefaultContext, .. _contexts];
        }
    }

    public bool HasContext(string id)
    {
        lock (_lock)
        {
            return id == E2bInterpreter.DefaultContext || _contexts.Contains(id);
        }
    }

    /// <summary>A new context id, or null when the sandbox has <see cref="Protocol.KernelRequest.MaxContexts"/> (the default one included).</summary>
    public string? AddContext()
    {
        lock (_lock)
        {
            if (_contexts.Count + 1 >= Protocol.KernelRequest.MaxContexts)
            {
                return null;
            }
            string id = Guid.NewGuid().ToString("N");
            _contexts.Add(id);
            return id;
        }
    }

    public void RemoveContext(string id)
    {
        lock (_lock)
        {
            _contexts.Remove(id);
        }
    }

    /// <summary>Pids remembered per sandbox; past it the oldest are forgotten (a sandbox running command after command must not grow this without end).</summary>
    public const int MaxProcesses = 4096;

    public E2bProcess Add(string commandId, string cmd, List<string> args, Dictionary<string, string> envs, string? cwd, string? tag,
        E2bPty? pty = null, E2bPty.Subscription? firstSubscription = null)
    {
        lock (_lock)
        {
            var p = new E2bProcess(++_nextPid, commandId, cmd, args, envs, cwd, tag, pty, firstSubscription);
            _byPid[p.Pid] = p;
            _byPid.Remove(p.Pid - MaxProcesses);
            return p;
        }
    }

    public E2bProcess? Find(uint? pid, string? tag)
    {
        lock (_lock)
        {
            return pid is { } n ? _byPid.GetValueOrDefault(n) : _byPid.Values.FirstOrDefault(p => tag is not null && p.Tag == tag);
        }
    }

    /// <summary>The processes on a terminal that still run.</summary>
    public IReadOnlyList<E2bProcess> Terminals()
    {
        lock (_lock)
        {
            return [.. _byPid.Values.Where(p => p.Pty is { Running: true })];
        }
    }

    public E2bProcess? FindCommand(string commandId)
    {
        lock (_lock)
        {
            return _byPid.Values.FirstOrDefault(p => p.CommandId == commandId);
        }
    }
}

/// <summary>
/// A process of the door: a SandboxVM command (<paramref name="CommandId"/>) or, when <paramref name="Pty"/> is set, a
/// terminal (CommandId empty); <paramref name="FirstSubscription"/> is the terminal's output for the Start call's stream.
/// </summary>
internal sealed record E2bProcess(uint Pid, string CommandId, string Cmd, List<string> Args, Dictionary<string, string> Envs, string? Cwd, string? Tag,
    E2bPty? Pty = null, E2bPty.Subscription? FirstSubscription = null);
