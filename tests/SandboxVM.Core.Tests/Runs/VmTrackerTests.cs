using Microsoft.Extensions.Logging.Abstractions;
using SandboxVM.Core.Runs;
using SandboxVM.Runtime;
using SandboxVM.Runtime.Agent;

namespace SandboxVM.Core.Tests.Runs;

/// <summary>A finished run hands its VM back and returns: none of the VM's teardown runs on the caller's thread.</summary>
[Trait("tier", "unit")]
public sealed class VmTrackerTests
{
    private static CancellationToken Ct => TestContext.Current.CancellationToken;

    [Fact]
    public async Task Release_Returns_BeforeAnyOfTheTeardownRuns_AndShutdownWaitsForIt()
    {
        var tracker = new VmTracker(NullLogger<VmTracker>.Instance);
        await using var vm = new BlockingTeardownVm();
        tracker.Add(vm);

        // The VM's teardown blocks its thread until the test lets it go, which the test does only once
        // Release has returned: inline, Release would sit in that wait (30 s) and the teardown see no go.
        tracker.Release(vm);
        vm.Go.Set();

        Assert.True(await vm.TornDown.Task.WaitAsync(TimeSpan.FromSeconds(60), Ct), "the teardown ran on the caller's thread, before Release returned");
        Assert.Equal(0, tracker.LiveCount);
        await tracker.DisposeAsync();
    }

    /// <summary>A VM whose DisposeAsync blocks (synchronously, as a runtime's cgroup reads and kills do) until <see cref="Go"/>.</summary>
    private sealed class BlockingTeardownVm : IVm
    {
        private readonly System.IO.Pipes.AnonymousPipeServerStream _in = new(System.IO.Pipes.PipeDirection.In);
        private readonly System.IO.Pipes.AnonymousPipeServerStream _out = new(System.IO.Pipes.PipeDirection.Out);
        private readonly TaskCompletionSource _exited = new(TaskCreationOptions.RunContinuationsAsynchronously);
        private int _disposed;

        public BlockingTeardownVm() => Agent = new AgentClient(_in, _out);

        public ManualResetEventSlim Go { get; } = new();
        /// <summary>Whether the teardown got the go (true) or gave up waiting for it (false).</summary>
        public TaskCompletionSource<bool> TornDown { get; } = new(TaskCreationOptions.RunContinuationsAsynchronously);

        public string Id => "blocking-1";
        public string TemplateName => "t";
        public VmSource Source => VmSource.Pool;
        public AgentClient Agent { get; }
        public TimeSpan StartupTime => TimeSpan.Zero;
        public Task Exited => _exited.Task;

        public VmUsage ReadUsage() => new(0, null);

        public async ValueTask DisposeAsync()
        {
            if (Interlocked.Exchange(ref _disposed, 1) != 0)
            {
                return;
            }
            bool go = Go.Wait(TimeSpan.FromSeconds(30));
            _exited.TrySetResult();
            await Agent.DisposeAsync();
            _in.Dispose();
            _out.Dispose();
            TornDown.TrySetResult(go);
        }
    }
}
