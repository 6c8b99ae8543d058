using Xunit.Sdk;
using Xunit.v3;

[assembly: TestCollectionOrderer(typeof(SandboxVM.Server.Tests.LongestFirst))]

namespace SandboxVM.Server.Tests;

/// <summary>
/// The longest classes start first, the rest in xunit's default (random) order. Classes run four at a
/// time; E2bTests (the official SDKs under node, then 4 tests, about 100 s at a load of 20) started anywhere
/// from 11 s to 106 s into the run, and the ProcessWide collection waits for it: started last, it was
/// the end of the run. (Now 7 tests, about 33 s alone at a load of 10 to 15: its quick-start script no
/// longer waits out the SDK's leftover 60 s timer.)
/// </summary>
internal sealed class LongestFirst : ITestCollectionOrderer
{
    private static readonly string[] Longest =
    [
        typeof(E2bTests).FullName!,
        typeof(McpServerTests).FullName!,
        typeof(HttpSurfaceTests).FullName!,
        typeof(CallerIsolationTests).FullName!,
    ];

    public IReadOnlyCollection<TTestCollection> OrderTestCollections<TTestCollection>(IReadOnlyCollection<TTestCollection> testCollections)
        where TTestCollection : ITestCollection
    {
        var ordered = DefaultTestCollectionOrderer.Instance.OrderTestCollections(testCollections);
        return [.. ordered.OrderBy(c => Rank(c))];
    }

    /// <summary>The class's place in <see cref="Longest"/>, or after them all (a stable sort keeps the default order among the rest).</summary>
    private static int Rank(ITestCollection collection)
    {
        for (int i = 0; i < Longest.Length; i++)
        {
            if (collection.TestCollectionDisplayName.EndsWith(Longest[i], StringComparison.Ordinal)
                || collection.TestCollectionDisplayName.Contains(Longest[i] + " ", StringComparison.Ordinal))
            {
                return i;
            }
        }
        return Longest.Length;
    }
}
