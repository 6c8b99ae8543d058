using System.Diagnostics;
using System.Net.Sockets;
using System.Text;
using System.Text.Json;
using SandboxVM.Protocol;

namespace SandboxVM.Images.Tests.Boot;

/// <summary>
/// One qemu microvm for the boot tests: direct kernel boot, read-only root disk on virtio-blk, the
/// agent on a virtserialport backed by a unix socket, serial console to a file. Disposing kills qemu
/// by its pid and deletes the working directory; nothing outlives the test.
/// </summary>
internal sealed class TestVm : IAsyncDisposable
{
    private readonly Process _process;
    private readonly StringBuilder _qemuOutput = new();
    private Socket? _socket;
    private NetworkStream? _stream;

    private TestVm(Process process, string dir)
    {
        _process = process;
        Dir = dir;
    }

    public string Dir { get; }

    public string SerialLogPath => Path.Combine(Dir, "serial.log");

    public string AgentSocketPath => Path.Combine(Dir, "agent.sock");

    public Stopwatch SinceStart { get; } = new();

    public FrameWriter? Writer { get; private set; }

    public FrameReader? Reader { get; private set; }

    public bool HasExited => _process.HasExited;

    public string SerialLog => File.Exists(SerialLogPath) ? File.ReadAllText(SerialLogPath) : "";

    public string Diagnostics => $"serial console:\n{SerialLog}\nqemu output:\n{QemuOutput}";

    public string QemuOutput
    {
        get
        {
            lock (_qemuOutput)
                return _qemuOutput.ToString();
        }
    }

    /// <summary>Starts qemu under TCG (forced: CI machines have no KVM).</summary>
    public static TestVm Start(string kernel, string initrd, string rootDisk, string commandLine)
    {
        var dir = Directory.CreateTempSubdirectory("sbvm-vm-").FullName;
        // qemu option values use ',' as separator; ',,' is a literal comma.
        static string Opt(string path) => path.Replace(",", ",,", StringComparison.Ordinal);
        var psi = new ProcessStartInfo("qemu-system-x86_64")
        {
            RedirectStandardInput = true,
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
        };
        string[] args =
        [
            "-M", "microvm,x-option-roms=off,rtc=on,pit=on",
            "-bios", "qboot.rom", // as the qemu runtime does (QemuCommandLine): SeaBIOS of QEMU 10.0 does not boot it
            "-accel", "tcg",
            "-cpu", "max", "-m", "512", "-smp", "1",
            "-nodefaults", "-no-user-config", "-nographic", "-no-reboot",
            "-kernel", kernel,
            "-initrd", initrd,
            "-append", commandLine,
            "-serial", "file:" + Opt(Path.Combine(dir, "serial.log")),
            "-drive", $"id=root,file={Opt(rootDisk)},format=raw,if=none,readonly=on",
            "-device", "virtio-blk-device,drive=root",
            "-device", "virtio-serial-device",
            "-chardev", $"socket,id=ag,path={Opt(Path.Combine(dir, "agent.sock"))},server=on,wait=off",
            "-device", "virtserialport,chardev=ag,name=agent",
        ];
        foreach (var a in args)
            psi.ArgumentList.Add(a);

        var process = new Process { StartInfo = psi };
        var vm = new TestVm(process, dir);
        process.OutputDataReceived += (_, e) => vm.Append(e.Data);
        process.ErrorDataReceived += (_, e) => vm.Append(e.Data);
        vm.SinceStart.Start();
        process.Start();
        process.BeginOutputReadLine();
        process.BeginErrorReadLine();
        return vm;
    }

    /// <summary>Connects to the agent socket (qemu creates it at start-up, the guest opens its end later:
    /// what is written before that waits in the socket).</summary>
    public async Task ConnectAsync(CancellationToken cancellationToken)
    {
        while (true)
        {
            cancellationToken.ThrowIfCancellationRequested();
            Assert.False(_process.HasExited, "qemu exited before its agent socket was up.\n" + Diagnostics);
            if (File.Exists(AgentSocketPath))
            {
                var socket = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
                try
                {
                    await socket.ConnectAsync(new UnixDomainSocketEndPoint(AgentSocketPath), cancellationToken);
                    _socket = socket;
                    _stream = new NetworkStream(socket, ownsSocket: false);
                    Writer = new FrameWriter(_stream);
                    Reader = new FrameReader(_stream);
                    return;
                }
                catch (SocketException)
                {
                    socket.Dispose();
                }
            }

            await Task.Delay(20, cancellationToken);
        }
    }

    /// <summary>Sends Hello and waits for the HelloReply.</summary>
    public async Task<HelloReply> HelloAsync(CancellationToken cancellationToken)
    {
        await Writer!.WriteJsonAsync(FrameType.Hello, 0, new Hello(), ProtocolJson.Default.Hello, cancellationToken);
        var frame = await ReadFrameAsync(cancellationToken);
        Assert.True(frame.Type == FrameType.HelloReply, $"expected HelloReply, got {frame.Type}: {Encoding.UTF8.GetString(frame.Payload.Span)}");
        return JsonSerializer.Deserialize(frame.Payload.Span, ProtocolJson.Default.HelloReply)!;
    }

    /// <summary>Runs one exec on <paramref name="id"/>; returns stdout, stderr and the result.</summary>
    public async Task<(string Stdout, string Stderr, ExecResult Result)> ExecAsync(uint id, ExecRequest exec, CancellationToken cancellationToken)
    {
        await Writer!.WriteJsonAsync(FrameType.Request, id, new AgentRequest { Op = Ops.Exec, Exec = exec }, ProtocolJson.Default.AgentRequest, cancellationToken);
        var stdout = new MemoryStream();
        var stderr = new MemoryStream();
        while (true)
        {
            var frame = await ReadFrameAsync(cancellationToken);
            if (frame.Id != id)
                continue;
            switch (frame.Type)
            {
                case FrameType.Stdout:
                    stdout.Write(frame.Payload.Span);
                    break;
                case FrameType.Stderr:
                    stderr.Write(frame.Payload.Span);
                    break;
                case FrameType.Response:
                    return (Encoding.UTF8.GetString(stdout.ToArray()), Encoding.UTF8.GetString(stderr.ToArray()),
                        JsonSerializer.Deserialize(frame.Payload.Span, ProtocolJson.Default.ExecResult)!);
                case FrameType.Error:
                    Assert.Fail("exec failed: " + Encoding.UTF8.GetString(frame.Payload.Span));
                    break;
            }
        }
    }

    /// <summary>Waits for qemu to exit on its own; false on timeout.</summary>
    public async Task<bool> WaitForExitAsync(TimeSpan timeout, CancellationToken cancellationToken)
    {
        using var cts = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
        cts.CancelAfter(timeout);
        try
        {
            await _process.WaitForExitAsync(cts.Token);
            return true;
        }
        catch (OperationCanceledException) when (!cancellationToken.IsCancellationRequested)
        {
            return false;
        }
    }

    public async ValueTask DisposeAsync()
    {
        try
        {
            if (!_process.HasExited)
                _process.Kill(entireProcessTree: true);
        }
        catch (InvalidOperationException)
        {
            // Exited in between.
        }

        await _process.WaitForExitAsync(CancellationToken.None);
        _process.Dispose();
        if (_stream is not null)
            await _stream.DisposeAsync();
        _socket?.Dispose();
        if (Writer is not null)
            await Writer.DisposeAsync();
        Directory.Delete(Dir, recursive: true);
    }

    private async Task<Frame> ReadFrameAsync(CancellationToken cancellationToken)
    {
        var result = await Reader!.ReadAsync(cancellationToken);
        Assert.True(result.Outcome == ReadOutcome.Frame, $"agent channel: {result.Outcome} {result.Error}\n{Diagnostics}");
        return result.Frame;
    }

    private void Append(string? line)
    {
        if (line is null)
            return;
        lock (_qemuOutput)
            _qemuOutput.AppendLine(line);
    }
}
