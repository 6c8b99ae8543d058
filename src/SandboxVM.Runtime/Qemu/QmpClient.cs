using System.Collections.Concurrent;
using System.Net.Sockets;
using System.Runtime.InteropServices;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using System.Threading.Channels;

namespace SandboxVM.Runtime.Qemu;

/// <summary>QEMU answered a QMP command with an error.</summary>
public sealed class QmpException(string command, string errorClass, string description)
    : Exception($"QMP {command} failed: {errorClass}: {description}")
{
    public string Command { get; } = command;
    /// <summary>QEMU's error class, e.g. "GenericError", "CommandNotFound".</summary>
    public string ErrorClass { get; } = errorClass;
    public string Description { get; } = description;
}

/// <summary>The QMP connection closed (QEMU exited or the socket broke).</summary>
public sealed class QmpDisconnectedException(string message, Exception? inner = null) : Exception(message, inner);

/// <summary>An asynchronous QMP event (STOP, RESUME, SHUTDOWN, MIGRATION...).</summary>
public sealed record QmpEvent(string Name, JsonObject? Data, DateTimeOffset Timestamp);

/// <summary>
/// Client of QEMU's machine protocol over its unix socket: reads the greeting, negotiates
/// capabilities, then runs commands, each tagged with an id so that answers cannot be confused with
/// one another or with events. Messages are one JSON object per line in both directions. Events are
/// kept in a bounded queue (<see cref="Events"/>) that drops the oldest when nobody reads it.
/// </summary>
public sealed class QmpClient : IAsyncDisposable
{
    private const int MaxLine = 16 << 20;

    private readonly Socket _socket;
    private readonly NetworkStream _stream;
    private readonly SemaphoreSlim _writeLock = new(1, 1);
    private readonly ConcurrentDictionary<long, TaskCompletionSource<JsonObject>> _pending = new();
    private readonly Channel<QmpEvent> _events = Channel.CreateBounded<QmpEvent>(
        new BoundedChannelOptions(256) { FullMode = BoundedChannelFullMode.DropOldest, SingleWriter = true });
    private readonly TaskCompletionSource<JsonObject> _greeting = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private readonly CancellationTokenSource _stop = new();
    private readonly TimeProvider _time;
    private Task _readLoop = Task.CompletedTask;
    private long _nextId;
    private volatile Exception? _broken;
    private int _disposed;

    private QmpClient(Socket socket, TimeProvider time)
    {
        _socket = socket;
        _time = time;
        _stream = new NetworkStream(socket, ownsSocket: false);
    }

    /// <summary>QEMU's greeting (version, capabilities).</summary>
    public JsonObject Greeting { get; private set; } = [];

    /// <summary>Asynchronous events in arrival order.</summary>
    public ChannelReader<QmpEvent> Events => _events.Reader;

    /// <summary>Completes when the connection has closed.</summary>
    public Task Completion => _readLoop;

    /// <summary>Connects, reads the greeting and leaves capabilities negotiation mode.</summary>
    /// <param name="socketPath">QEMU's QMP socket.</param>
    /// <param name="cancellationToken">Stops connecting.</param>
    /// <param name="time">The clock of the client's own waits (closing); the system's by default.</param>
    public static async Task<QmpClient> ConnectAsync(string socketPath, CancellationToken cancellationToken, TimeProvider? time = null)
    {
        var socket = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
        try
        {
            await socket.ConnectAsync(new UnixDomainSocketEndPoint(socketPath), cancellationToken);
        }
        catch
        {
            socket.Dispose();
            throw;
        }
        var client = new QmpClient(socket, time ?? TimeProvider.System);
        try
        {
            client._readLoop = Task.Run(client.ReadLoopAsync, CancellationToken.None);
            client.Greeting = await client._greeting.Task.WaitAsync(cancellationToken);
            await client.ExecuteAsync("qmp_capabilities", null, cancellationToken);
            return client;
        }
        catch
        {
            await client.DisposeAsync();
            throw;
        }
    }

    /// <summary>Runs a command and returns its "return" member (often an empty object).</summary>
    public Task<JsonNode?> ExecuteAsync(string command, JsonObject? arguments, CancellationToken cancellationToken) =>
        ExecuteCoreAsync(command, arguments, null, cancellationToken);

    /// <summary>
    /// Runs a command with a file descriptor attached to it (SCM_RIGHTS), as `getfd` and `add-fd`
    /// expect. QEMU keeps its own copy; the caller may close <paramref name="fd"/> afterwards.
    /// </summary>
    public Task<JsonNode?> ExecuteWithFdAsync(string command, JsonObject? arguments, SafeHandle fd, CancellationToken cancellationToken) =>
        ExecuteCoreAsync(command, arguments, fd, cancellationToken);

    private async Task<JsonNode?> ExecuteCoreAsync(string command, JsonObject? arguments, SafeHandle? fd, CancellationToken cancellationToken)
    {
        ObjectDisposedException.ThrowIf(_disposed != 0, this);
        if (_broken is { } broken)
        {
            throw new QmpDisconnectedException($"QMP connection is closed (before {command})", broken);
        }
        long id = Interlocked.Increment(ref _nextId);
        var reply = new TaskCompletionSource<JsonObject>(TaskCreationOptions.RunContinuationsAsynchronously);
        _pending[id] = reply;
        try
        {
            var message = new JsonObject { ["execute"] = command, ["id"] = id };
            if (arguments is not null)
            {
                // Commands may be built from shared templates: send a copy rather than re-parent the caller's node.
                message["arguments"] = arguments.DeepClone();
            }
            byte[] bytes = Encoding.UTF8.GetBytes(message.ToJsonString() + "\n");
            await WriteAsync(bytes, fd, cancellationToken);
            if (_broken is not null)
            {
                // The reader ended between the check above and the registration: nobody will answer.
                reply.TrySetException(new QmpDisconnectedException($"QMP connection closed during {command}", _broken));
            }
            JsonObject answer = await reply.Task.WaitAsync(cancellationToken);
            if (answer["error"] is JsonObject error)
            {
                throw new QmpException(command, error["class"]?.GetValue<string>() ?? "Unknown", error["desc"]?.GetValue<string>() ?? "");
            }
            return answer["return"];
        }
        finally
        {
            _pending.TryRemove(id, out _);
        }
    }

    /// <summary>
    /// Waits for the next event <paramref name="match"/> accepts; the events before it are consumed.
    /// Events queued since the connection count, so one that arrived before the call is not missed.
    /// </summary>
    /// <exception cref="QmpDisconnectedException">The connection closed first (QEMU exited).</exception>
    public async Task<QmpEvent> WaitForEventAsync(Func<QmpEvent, bool> match, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(match);
        while (await _events.Reader.WaitToReadAsync(cancellationToken))
        {
            while (_events.Reader.TryRead(out var e))
            {
                if (match(e))
                {
                    return e;
                }
            }
        }
        throw new QmpDisconnectedException("QMP connection closed while waiting for an event", _broken);
    }

    /// <summary>
    /// Waits for the migration under way (save or incoming load) to end, on QEMU's MIGRATION events
    /// (the <c>events</c> migration capability must be on): returns on "completed", throws with QEMU's
    /// reason on "failed" or "cancelled". No polling: QEMU says when.
    /// </summary>
    /// <exception cref="InvalidOperationException">The migration failed or was cancelled.</exception>
    /// <exception cref="QmpDisconnectedException">QEMU exited first (a destination that cannot load the state does).</exception>
    public async Task WaitForMigrationAsync(CancellationToken cancellationToken)
    {
        var end = await WaitForEventAsync(e => e.Name == "MIGRATION" && MigrationStatus(e) is "completed" or "failed" or "cancelled", cancellationToken);
        string? status = MigrationStatus(end);
        if (status != "completed")
        {
            // The reason is only in query-migrate; asked once, on failure. A destination that failed to
            // load exits right after the event (QEMU 10.0: exit code 1), possibly before it answers.
            string? reason = null;
            try
            {
                reason = (await ExecuteAsync("query-migrate", null, cancellationToken) as JsonObject)?["error-desc"]?.GetValue<string>();
            }
            catch (QmpDisconnectedException)
            {
            }
            throw new InvalidOperationException($"migration {status}: {reason ?? "no reason given"}");
        }
    }

    /// <summary>
    /// Continues a VM whose outgoing migration has completed (a save that keeps the sandbox running). QEMU
    /// sends the "completed" event from its migration thread before it leaves the finish-migrate run state;
    /// a <c>cont</c> in between is refused with "Migration is not finalized yet" (QEMU's documented quirk),
    /// and under load that gap is wide enough to hit: seen as a failed fork and a failed snapshot in CI.
    /// No event marks the end of that state, so <c>cont</c> is asked again, every 5 ms on this client's
    /// clock, until it is taken or <paramref name="cancellationToken"/> ends the wait.
    /// </summary>
    public async Task ContinueAfterMigrationAsync(CancellationToken cancellationToken)
    {
        while (true)
        {
            try
            {
                await ExecuteAsync("cont", null, cancellationToken);
                return;
            }
            catch (QmpException e) when (e.Description.Contains("not finalized", StringComparison.OrdinalIgnoreCase))
            {
                await Task.Delay(TimeSpan.FromMilliseconds(5), _time, cancellationToken);
            }
        }
    }

    private static string? MigrationStatus(QmpEvent e) => e.Data?["status"] is JsonValue v && v.TryGetValue(out string? s) ? s : null;

    private async Task WriteAsync(byte[] bytes, SafeHandle? fd, CancellationToken cancellationToken)
    {
        await _writeLock.WaitAsync(cancellationToken);
        try
        {
            int offset = 0;
            if (fd is not null)
            {
                // The descriptor travels with the command's first bytes, so QEMU has it when the command runs.
                offset = HostNative.SendWithFd(_socket.SafeHandle, bytes, fd);
            }
            if (offset < bytes.Length)
            {
                await _stream.WriteAsync(bytes.AsMemory(offset), cancellationToken);
            }
        }
        catch (Exception e) when (e is IOException or SocketException or ObjectDisposedException)
        {
            throw new QmpDisconnectedException("QMP connection broke while sending", e);
        }
        finally
        {
            _writeLock.Release();
        }
    }

    private async Task ReadLoopAsync()
    {
        Exception? failure = null;
        byte[] buffer = new byte[16 * 1024];
        var line = new MemoryStream();
        try
        {
            while (true)
            {
                int n = await _stream.ReadAsync(buffer, _stop.Token);
                if (n == 0)
                {
                    break;
                }
                int start = 0;
                for (int i = 0; i < n; i++)
                {
                    if (buffer[i] != (byte)'\n')
                    {
                        continue;
                    }
                    line.Write(buffer, start, i - start);
                    start = i + 1;
                    Dispatch(line.GetBuffer().AsSpan(0, (int)line.Length));
                    line.SetLength(0);
                }
                line.Write(buffer, start, n - start);
                if (line.Length > MaxLine)
                {
                    throw new InvalidDataException("QMP message exceeds 16 MiB without a newline");
                }
            }
        }
        catch (OperationCanceledException) when (_stop.IsCancellationRequested)
        {
        }
        catch (Exception e)
        {
            failure = e;
        }
        _broken = failure ?? new EndOfStreamException("QEMU closed the QMP connection");
        var closed = new QmpDisconnectedException("QMP connection closed", _broken);
        _greeting.TrySetException(closed);
        foreach (var pending in _pending.Values)
        {
            pending.TrySetException(closed);
        }
        _events.Writer.TryComplete();
    }

    private void Dispatch(ReadOnlySpan<byte> line)
    {
        if (line.Trim((byte)'\r').Trim((byte)' ').IsEmpty)
        {
            return;
        }
        JsonObject message;
        try
        {
            message = JsonNode.Parse(line) as JsonObject ?? throw new InvalidDataException("QMP message is not a JSON object");
        }
        catch (JsonException e)
        {
            throw new InvalidDataException($"malformed QMP message: {e.Message}", e);
        }
        if (message["QMP"] is not null)
        {
            _greeting.TrySetResult(message);
        }
        else if (message["event"] is JsonValue name)
        {
            _events.Writer.TryWrite(new QmpEvent(name.GetValue<string>(), message["data"] as JsonObject, ParseTimestamp(message["timestamp"])));
        }
        else if (message["id"] is JsonValue idValue && idValue.TryGetValue(out long id) && _pending.TryGetValue(id, out var pending))
        {
            pending.TrySetResult(message);
        }
        // Replies without a known id (a command we gave up waiting for) are dropped.
    }

    private DateTimeOffset ParseTimestamp(JsonNode? timestamp)
    {
        if (timestamp is JsonObject t && t["seconds"] is JsonValue s && s.TryGetValue(out long seconds))
        {
            long micro = t["microseconds"] is JsonValue m && m.TryGetValue(out long us) ? us : 0;
            return DateTimeOffset.FromUnixTimeSeconds(seconds).AddTicks(micro * 10);
        }
        return _time.GetUtcNow();
    }

    public async ValueTask DisposeAsync()
    {
        if (Interlocked.Exchange(ref _disposed, 1) != 0)
        {
            return;
        }
        await _stop.CancelAsync();
        try
        {
            _socket.Shutdown(SocketShutdown.Both);
        }
        catch (SocketException)
        {
        }
        _socket.Dispose();
        await _readLoop.WaitAsync(TimeSpan.FromSeconds(2), _time).ContinueWith(_ => { }, TaskScheduler.Default);
        await _stream.DisposeAsync();
        _stop.Dispose();
        _writeLock.Dispose();
    }
}
