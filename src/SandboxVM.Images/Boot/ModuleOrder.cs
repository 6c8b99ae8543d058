using System.Text.RegularExpressions;

namespace SandboxVM.Images.Boot;

/// <summary>Kernel module names and the order <c>insmod</c> must load them in.</summary>
internal static partial class ModuleOrder
{
    [GeneratedRegex("^[a-z0-9_]+$")]
    private static partial Regex NameRegex();

    /// <summary>The kernel treats '-' and '_' in module names alike; file names use either.</summary>
    public static string Normalize(string name)
    {
        ArgumentNullException.ThrowIfNull(name);
        var normalized = name.Trim().Replace('-', '_');
        if (!NameRegex().IsMatch(normalized))
            throw new ArgumentException($"'{name}' is not a kernel module name.", nameof(name));
        return normalized;
    }

    /// <summary>Module name of a file such as <c>virtio-rng.ko.xz</c>, or null if it is not a module file.</summary>
    public static string? NameOfFile(string fileName)
    {
        foreach (var suffix in new[] { ".ko", ".ko.xz", ".ko.zst", ".ko.gz" })
        {
            if (fileName.EndsWith(suffix, StringComparison.Ordinal) && fileName.Length > suffix.Length)
                return fileName[..^suffix.Length].Replace('-', '_');
        }

        return null;
    }

    /// <summary>
    /// Every module that <paramref name="requested"/> needs, dependencies first. Depth-first in the
    /// requested order, dependencies in name order, so the result is stable and reads like the
    /// request (virtio_ring, virtio, virtio_mmio, virtio_blk, ...).
    /// </summary>
    /// <param name="requested">Modules wanted, in preferred order; all must be keys of <paramref name="dependencies"/>.</param>
    /// <param name="dependencies">For each loadable module, the modules it depends on (from <c>modinfo -F depends</c>).</param>
    /// <exception cref="InvalidOperationException">A dependency is unknown or the graph has a cycle.</exception>
    public static IReadOnlyList<string> Compute(IEnumerable<string> requested, IReadOnlyDictionary<string, IReadOnlyList<string>> dependencies)
    {
        ArgumentNullException.ThrowIfNull(requested);
        ArgumentNullException.ThrowIfNull(dependencies);
        var order = new List<string>();
        var done = new HashSet<string>(StringComparer.Ordinal);
        var visiting = new HashSet<string>(StringComparer.Ordinal);

        void Visit(string name, string? neededBy)
        {
            if (done.Contains(name))
                return;
            if (!dependencies.TryGetValue(name, out var deps))
                throw new InvalidOperationException(neededBy is null
                    ? $"Module {name} is neither a loadable module nor built into the kernel."
                    : $"Module {neededBy} depends on {name}, which is not a loadable module of this kernel.");
            if (!visiting.Add(name))
                throw new InvalidOperationException($"Module dependency cycle through {name}.");
            foreach (var dep in deps.Order(StringComparer.Ordinal))
                Visit(dep, name);
            visiting.Remove(name);
            done.Add(name);
            order.Add(name);
        }

        foreach (var name in requested)
            Visit(name, null);
        return order;
    }

    /// <summary>Parses <c>modinfo -F depends</c> output: a comma-separated list, possibly empty.</summary>
    public static IReadOnlyList<string> ParseDepends(string output) =>
        output.Split([',', '\n'], StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries)
            .Select(Normalize)
            .Distinct(StringComparer.Ordinal)
            .ToList();
}
