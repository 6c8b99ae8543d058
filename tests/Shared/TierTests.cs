using System.Reflection;

namespace SandboxVM.Testing;

/// <summary>
/// Every test class names its tier (docs/CONTRIBUTING.md): <c>unit</c> (no processes, no sockets but
/// in-process loopback), <c>integration</c> (real processes: the agent, bubblewrap, a real server on
/// loopback), <c>cluster</c> (several server nodes and a redis-server) or <c>vm</c> (QEMU, gVisor,
/// template images, mmdebstrap). <c>scripts/test.sh --fast</c> runs only unit and integration, so a
/// class without a tier would silently drop out of it: this check, linked into every test project and
/// itself a unit test, fails instead.
/// </summary>
[Trait("tier", "unit")]
public sealed class TierTests
{
    public static readonly string[] Tiers = ["unit", "integration", "cluster", "vm"];

    [Fact]
    public void EveryTestClass_HasExactlyOneKnownTier()
    {
        var wrong = new List<string>();
        foreach (var type in typeof(TierTests).Assembly.GetTypes().Where(IsTestClass))
        {
            var tiers = type.GetCustomAttributes<TraitAttribute>(inherit: false)
                .SelectMany(t => t.GetTraits())
                .Where(t => t.Key == "tier")
                .Select(t => t.Value)
                .ToList();
            if (tiers.Count != 1 || !Tiers.Contains(tiers[0]))
            {
                wrong.Add($"{type.FullName}: [{string.Join(", ", tiers)}]");
            }
        }
        Assert.True(wrong.Count == 0,
            "each test class needs exactly one [Trait(\"tier\", \"unit\"|\"integration\"|\"cluster\"|\"vm\")] (docs/CONTRIBUTING.md); these have none or another:\n"
            + string.Join('\n', wrong));
    }

    /// <summary>A class xunit runs: not abstract, with a test method of its own or inherited.</summary>
    private static bool IsTestClass(Type type) =>
        type is { IsClass: true, IsAbstract: false } &&
        type.GetMethods(BindingFlags.Public | BindingFlags.NonPublic | BindingFlags.Instance | BindingFlags.Static)
            .Any(m => m.GetCustomAttributes<FactAttribute>(inherit: true).Any());
}
