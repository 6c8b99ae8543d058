using System.Net.Sockets;
using System.Runtime.InteropServices;
using System.Text;
using System.Text.Json.Nodes;
using Microsoft.Win32.SafeHandles;

namespace SandboxVM.Runtime.Tests;

/// <summary>
/// A QMP server on a unix socket that behaves like QEMU's monitor: greeting, capabilities negotiation,
/// then one JSON reply per command line. <see cref="Handler"/> decides the replies (and may send
/// events or nothing at all); file descriptors sent with a command are received with recvmsg.
/// </summary>
internal sealed class FakeQmpServer : IAsyncDisposable
{
    private readonly string _dir;
    private readonly Socket _listener;
    private readonly Task _serve;
    private readonly CancellationTokenSource _stop = new();
    private Socket? _client;

    public FakeQmpServer()
    {
        _dir = Path.Combine(Path.GetTempPath(), "qmp-test-" + Guid.NewGuid().ToString("N")[..8]);
        Directory.CreateDirectory(_dir);
        SocketPath = Path.Combine(_dir, "qmp.sock");
        _listener = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
        _listener.Bind(new UnixDomainSocketEndPoint(SocketPath));
        _listener.Listen(1);
        _serve = Task.Run(ServeAsync);
    }

    public string SocketPath { get; }

    /// <summary>Commands received, in order (after qmp_capabilities).</summary>
    public List<JsonObject> Received { get; } = [];

    /// <summary>File descriptors received with commands.</summary>
    public List<SafeFileHandle> ReceivedFds { get; } = [];

    public bool CapabilitiesNegotiated { get; private set; }

    /// <summary>Maps a command to the lines to send back (replies and/or events). Default: an empty return.</summary>
    public Func<JsonObject, IEnumerable<JsonObject>> Handler { get; set; } = c => [Return(c, new JsonObject())];

    public static JsonObject Return(JsonObject command, JsonNode value) =>
        new() { ["return"] = value, ["id"] = command["id"]?.DeepClone() };

    public static JsonObject Error(JsonObject command, string errorClass, string desc) =>
        new() { ["error"] = new JsonObject { ["class"] = errorClass, ["desc"] = desc }, ["id"] = command["id"]?.DeepClone() };

    public static JsonObject Event(string name, JsonObject? data = null) => new()
    {
        ["event"] = name,
        ["data"] = data ?? [],
        ["timestamp"] = new JsonObject { ["seconds"] = 1700000000, ["microseconds"] = 5 },
    };

    /// <summary>Sends a raw line now (events between commands).</summary>
    public Task SendAsync(JsonObject message) => WriteLineAsync(message.ToJsonString());

    /// <summary>Closes the client connection as QEMU does when it exits.</summary>
    public void Disconnect() => _client?.Shutdown(SocketShutdown.Both);

    private async Task WriteLineAsync(string line)
    {
        byte[] bytes = Encoding.UTF8.GetBytes(line + "\r\n");
        await _client!.SendAsync(bytes, SocketFlags.None);
    }

    private async Task ServeAsync()
    {
        try
        {
            _client = await _listener.AcceptAsync(_stop.Token);
            await WriteLineAsync("""{"QMP": {"version": {"qemu": {"micro": 22, "minor": 2, "major": 7}, "package": "fake"}, "capabilities": ["oob"]}}""");
            var pending = new StringBuilder();
            byte[] buffer = new byte[4096];
            while (true)
            {
                int n = ReceiveWithFds(_client, buffer);
                if (n <= 0)
                {
                    break;
                }
                pending.Append(Encoding.UTF8.GetString(buffer, 0, n));
                // The client sends one JSON object per line.
                int newline;
                while ((newline = pending.ToString().IndexOf('\n', StringComparison.Ordinal)) >= 0)
                {
                    string line = pending.ToString(0, newline);
                    pending.Remove(0, newline + 1);
                    var command = (JsonObject)JsonNode.Parse(line)!;
                    if (command["execute"]!.GetValue<string>() == "qmp_capabilities")
                    {
                        CapabilitiesNegotiated = true;
                        await WriteLineAsync(Return(command, new JsonObject()).ToJsonString());
                        continue;
                    }
                    lock (Received)
                    {
                        Received.Add(command);
                    }
                    foreach (var reply in Handler(command))
                    {
                        await WriteLineAsync(reply.ToJsonString());
                    }
                }
            }
        }
        catch (Exception e) when (e is OperationCanceledException or SocketException or ObjectDisposedException)
        {
        }
    }

    [StructLayout(LayoutKind.Sequential)]
    private unsafe struct IoVec
    {
        public void* Base;
        public nuint Length;
    }

    [StructLayout(LayoutKind.Sequential)]
    private unsafe struct MsgHdr
    {
        public void* Name;
        public uint NameLength;
        public IoVec* Iov;
        public nuint IovLength;
        public void* Control;
        public nuint ControlLength;
        public int Flags;
    }

    [DllImport("libc", EntryPoint = "recvmsg", SetLastError = true)]
    private static extern unsafe nint RecvMsg(int socket, MsgHdr* message, int flags);

    /// <summary>recvmsg that collects SCM_RIGHTS descriptors. .NET keeps the fd non-blocking: wait with Poll.</summary>
    private unsafe int ReceiveWithFds(Socket socket, byte[] buffer)
    {
        while (!socket.Poll(TimeSpan.FromMilliseconds(50), SelectMode.SelectRead))
        {
            if (_stop.IsCancellationRequested)
            {
                return 0;
            }
        }
        byte* control = stackalloc byte[64];
        fixed (byte* p = buffer)
        {
            var iov = new IoVec { Base = p, Length = (nuint)buffer.Length };
            var message = new MsgHdr { Iov = &iov, IovLength = 1, Control = control, ControlLength = 64 };
            nint n = RecvMsg((int)socket.Handle, &message, 0);
            // struct cmsghdr: len (size_t), level (int), type (int), then the fds.
            if (n > 0 && message.ControlLength >= 20 && *(int*)(control + 8) == 1 && *(int*)(control + 12) == 1)
            {
                ReceivedFds.Add(new SafeFileHandle(*(int*)(control + 16), ownsHandle: true));
            }
            return (int)n;
        }
    }

    public async ValueTask DisposeAsync()
    {
        await _stop.CancelAsync();
        try
        {
            // Wakes the blocking recvmsg.
            _client?.Shutdown(SocketShutdown.Both);
        }
        catch (SocketException)
        {
        }
        _client?.Dispose();
        _listener.Dispose();
        await _serve.WaitAsync(TimeSpan.FromSeconds(5)).ContinueWith(_ => { }, TaskScheduler.Default);
        foreach (var fd in ReceivedFds)
        {
            fd.Dispose();
        }
        _stop.Dispose();
        Directory.Delete(_dir, recursive: true);
    }
}
