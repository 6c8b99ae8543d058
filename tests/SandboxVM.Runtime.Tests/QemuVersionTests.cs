using SandboxVM.Runtime.Qemu;

namespace SandboxVM.Runtime.Tests;

[Trait("tier", "unit")]
public sealed class QemuVersionTests
{
    [Theory]
    [InlineData("QEMU emulator version 7.2.22 (Debian 1:7.2+dfsg-7+deb12u18+b3)\nCopyright (c) 2003-2022 Fabrice Bellard", "7.2.22", false)]
    [InlineData("QEMU emulator version 8.1.5", "8.1.5", false)]
    [InlineData("QEMU emulator version 8.2.0 (v8.2.0)", "8.2.0", true)]
    [InlineData("QEMU emulator version 10.0.2 (Debian 1:10.0.2+ds-2+deb13u1~bpo12+1)\nCopyright (c) 2003-2025", "10.0.2", true)]
    public void Read_only_snapshot_memory_starts_with_qemu_8_2(string output, string number, bool readOnly)
    {
        var v = QemuVersion.Parse(output);

        Assert.Equal(Version.Parse(number), v.Number);
        Assert.Equal(readOnly, v.ReadOnlySnapshotMemory);
        Assert.Equal(output.Split('\n')[0], v.Text);
    }

    [Fact]
    public void Output_without_a_version_is_no_version_and_no_read_only_memory()
    {
        var v = QemuVersion.Parse("qemu-system-x86_64: error while loading shared libraries");

        Assert.Null(v.Number);
        Assert.False(v.ReadOnlySnapshotMemory);
    }

    [Fact]
    public void A_missing_binary_is_reported_not_thrown()
    {
        var v = QemuVersion.Read("/nonexistent/qemu-system-x86_64");

        Assert.Null(v.Number);
        Assert.Contains("/nonexistent/qemu-system-x86_64", v.Text, StringComparison.Ordinal);
    }
}
