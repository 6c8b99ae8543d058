using SandboxVM.Core.Pools;
using SandboxVM.Core.Templates;
using SandboxVM.Runtime;

namespace SandboxVM.Testing;

/// <summary>The spec of a template's sandbox as the catalog makes it (its resources), without building an image.</summary>
internal sealed class TemplateSpecs : IVmSpecProvider
{
    public Task<VmSpec> GetSpecAsync(TemplateDefinition template, CancellationToken cancellationToken) =>
        Task.FromResult(new VmSpec
        {
            TemplateName = template.Name,
            RootfsDir = "/nonexistent",
            Vcpus = template.Vcpus,
            MemoryMib = template.MemoryMib,
            MaxProcesses = template.Limits.Processes,
            WritableBytes = template.Limits.FileBytes,
        });
}
