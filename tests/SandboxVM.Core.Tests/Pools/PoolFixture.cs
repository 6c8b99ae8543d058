using Microsoft.Extensions.Logging.Abstractions;
using Microsoft.Extensions.Time.Testing;
using SandboxVM.Core.Pools;
using SandboxVM.Core.Runs;
using SandboxVM.Core.Templates;
using SandboxVM.Runtime;

namespace SandboxVM.Core.Tests.Pools;

/// <summary>
/// What the pool tests share: a <see cref="FakeRuntime"/> and a tracker on one fake clock, and the pool
/// manager under test (<see cref="Pools"/>, made by the derived class and disposed with the tracker).
/// </summary>
public abstract class PoolFixture : IAsyncLifetime
{
    protected FakeTimeProvider Time { get; } = new();

    private protected FakeRuntime Runtime { get; } = new();

    protected VmTracker Tracker { get; } = new(NullLogger<VmTracker>.Instance);

    protected PoolManager Pools { get; private set; } = null!;

    protected static CancellationToken Ct => TestContext.Current.CancellationToken;

    /// <summary>Templates' VM specs for the pool (the fake runtime reads none of it).</summary>
    protected static IVmSpecProvider Specs { get; } = new FakeSpecs();

    /// <summary>Replaces the pool manager under test (the previous one is disposed).</summary>
    protected async Task UseAsync(PoolManager pools)
    {
        if (Pools is not null)
        {
            await Pools.DisposeAsync();
        }
        Pools = pools;
    }

    protected static TemplateDefinition Template(string name, WarmupPolicy warmup) => new()
    {
        Name = name,
        Source = new TemplateSource(),
        Language = new LanguageRecipe { Name = "x", SourceFile = "x", Run = ["x"] },
        Warmup = warmup,
    };

    protected abstract PoolManager CreatePools();

    public virtual ValueTask InitializeAsync()
    {
        Pools = CreatePools();
        return ValueTask.CompletedTask;
    }

    public async ValueTask DisposeAsync()
    {
        await Pools.DisposeAsync();
        await Tracker.DisposeAsync();
        GC.SuppressFinalize(this);
    }

    private sealed class FakeSpecs : IVmSpecProvider
    {
        public Task<VmSpec> GetSpecAsync(TemplateDefinition template, CancellationToken cancellationToken) =>
            Task.FromResult(new VmSpec { TemplateName = template.Name, RootfsDir = "/nonexistent" });
    }
}
