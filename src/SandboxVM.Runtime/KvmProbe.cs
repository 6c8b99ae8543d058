
namespace SandboxVM.Runtime;

/// <summary>
/// Whether QEMU can really run a guest with KVM here. A /dev/kvm that opens, and even KVM_CREATE_VM
/// succeeding, are not enough: under some nested setups QEMU aborts setting up the vCPU (seen here:
/// "failed to set MSR 0x10a"). So run a guest: a 64 KiB firmware whose reset vector writes 0x2a to an
/// isa-debug-exit port, which makes QEMU exit with status (0x2a &lt;&lt; 1) | 1 = 85.
/// </summary>
public static class KvmProbe
{
    private const int ExpectedExit = (0x2a << 1) | 1;

    public static bool QemuCanUseKvm(string qemuPath, TimeSpan timeout)
    {
        string firmware = Path.Combine(Path.GetTempPath(), $"sandboxvm-kvm-probe-{Environment.ProcessId}.bin");
        try
        {
            byte[] image = new byte[64 * 1024];
            Array.Fill(image, (byte)0xF4); // hlt everywhere
            // At the reset vector (top 16 bytes): mov al, 0x2a; out 0xf4, al; hlt
            byte[] code = [0xB0, 0x2A, 0xE6, 0xF4, 0xF4];
            code.CopyTo(image, image.Length - 16);
            File.WriteAllBytes(firmware, image);

            var run = HostProcess.RunAsync(new HostCommand(qemuPath, ["-accel", "kvm", "-cpu", "host", "-M", "microvm,x-option-roms=off", "-m", "16",
                "-nodefaults", "-no-user-config", "-display", "none", "-bios", firmware,
                "-device", "isa-debug-exit,iobase=0xf4,iosize=1"]) { Timeout = timeout }, CancellationToken.None);
            // Once, at start-up, from a synchronous probe (no synchronization context to block).
            return run.GetAwaiter().GetResult().ExitCode == ExpectedExit;
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException or ExternalCommandException or TimeoutException)
        {
            return false;
        }
        finally
        {
            File.Delete(firmware);
        }
    }
}
