using CsCheck;
using SandboxVM.Agent;
using SandboxVM.Agent.Operations;
using SandboxVM.Agent.Processes;
using SandboxVM.Core.Runs;
using SandboxVM.Core.Sessions;
using SandboxVM.Protocol;

namespace SandboxVM.Fuzz.Tests;

/// <summary>
/// The files API's path handling, server and guest: <see cref="SessionManager.CheckPath"/> and
/// <see cref="SessionManager.ArtifactPath"/> (the <c>path=</c> and artifact route checks) and the
/// agent's <see cref="AgentState.ResolvePath"/>. For any string: a 400 <c>invalid_path</c> /
/// <c>bad_request</c> with a reason, or a path that is absolute, normalised, free of NUL, within
/// PATH_MAX and NAME_MAX, and (when given relative) inside home; an artifact path stays in
/// /tmp/outputs. Nothing else is thrown (that would be a 500).
/// </summary>
[Trait("category", Fuzz.Category)]
[Trait("tier", "unit")]
public sealed class PathFuzzTests
{
    private const string Home = "/home/sandbox";

    private static readonly AgentState _agent = new(AgentOptions.Parse(["--home", Home]), new ProcessSupervisor(SandboxUser.Self));

    private static readonly string[] _seeds = File.ReadAllLines(Path.Combine(AppContext.BaseDirectory, "corpus", "paths", "paths.txt"));

    private static readonly Gen<string> _fragment = Gen.Frequency(
        (6, Gen.OneOf("/", "//", ".", "..", "../", "/..", "./", "a", "home", "sandbox", "tmp", "outputs", "~", "\0", "\\", "%2e%2e", "%2F", "%00",
            " ", "\n", "\u00e9", "\u20ac", "\ud800", "\udc00", "\ud83d\ude00", "\ufffd", "\u202e", ":", "*", "?")),
        (2, Gen.String),
        (1, Gen.Select(Gen.OneOf("/", "a", "../", "\u00e9", "x/"), Gen.Int[1, 5000], (s, n) => string.Concat(Enumerable.Repeat(s, n)))));

    private static readonly Gen<string> _paths = Gen.Select(
        Gen.Frequency((3, Gen.OneOf(_seeds)), (1, Gen.Const(""))),
        _fragment.Array[0, 12],
        Gen.Int[0, 3],
        (seed, fragments, where) =>
        {
            string tail = string.Concat(fragments);
            return where switch
            {
                0 => seed + tail,
                1 => tail + seed,
                2 => tail,
                _ => seed.Insert(seed.Length / 2, tail),
            };
        });

    [Fact]
    public void AnyPath_IsA400OrAnAbsoluteNormalisedPath_AndRelativeOnesStayInHome() =>
        Fuzz.Run("paths", _paths, CheckPath, iterations: 2000, p => Fuzz.Escape(p, 600), System.Text.Encoding.UTF8.GetBytes);

    [Fact]
    public void AnyArtifactRoute_IsA400OrAPathInTheOutputsDirectory() =>
        Fuzz.Run("artifact-paths", _paths, CheckArtifactPath, iterations: 1000, p => Fuzz.Escape(p, 600));

    [Theory]
    [InlineData("../../etc/passwd")] // resolved to /etc/passwd
    [InlineData("a/../../sandbox2")] // resolved to /home/sandbox2
    [InlineData("..")]
    public void Regression_ARelativePath_DoesNotClimbOutOfHome(string path)
    {
        var e = Assert.Throws<AgentException>(() => _agent.ResolvePath(path));

        Assert.Equal(ErrorCodes.BadRequest, e.Code);
        Assert.Contains("give an absolute path", e.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Regression_NamesTheKernelWouldRefuse_AreBadRequestsNotIoErrors()
    {
        // Each used to resolve, then fail later as io_error (409) or be opened with U+FFFD in place of the surrogate.
        string[] paths = [new string('a', 256), "/" + string.Concat(Enumerable.Repeat("\u00e9/", 2100)), "x\ud800y"];

        foreach (string path in paths)
        {
            Assert.Equal(ErrorCodes.BadRequest, Assert.Throws<AgentException>(() => _agent.ResolvePath(path)).Code);
        }
    }

    private static void CheckPath(string path)
    {
        string? server = Guard(() => SessionManager.CheckPath(path));
        if (server is not null)
        {
            Assert.Equal(path, server); // the server checks, the agent resolves
        }
        string? resolved = Guard(() => _agent.ResolvePath(path));
        if (resolved is null)
        {
            return;
        }
        Assert.StartsWith("/", resolved, StringComparison.Ordinal);
        Assert.DoesNotContain('\0', resolved);
        Assert.Equal(resolved, Path.GetFullPath(resolved));
        Assert.DoesNotContain("//", resolved, StringComparison.Ordinal);
        string[] names = resolved.Split('/');
        Assert.DoesNotContain(names, n => n is "." or "..");
        Assert.InRange(System.Text.Encoding.UTF8.GetByteCount(resolved), 1, 4095);
        Assert.All(names, n => Assert.InRange(System.Text.Encoding.UTF8.GetByteCount(n), 0, 255));
        if (Path.IsPathRooted(path))
        {
            Assert.Equal(Path.GetFullPath(path), resolved);
        }
        else
        {
            Assert.True(resolved == Home || resolved.StartsWith(Home + "/", StringComparison.Ordinal), $"relative '{path}' resolved outside home: {resolved}");
        }
    }

    private static void CheckArtifactPath(string route)
    {
        string? guest = Guard(() => SessionManager.ArtifactPath(route));
        if (guest is null)
        {
            return;
        }
        Assert.StartsWith("/tmp/outputs/", guest, StringComparison.Ordinal);
        // What the agent then opens (after the server's own check) is still in the outputs directory.
        if (Guard(() => SessionManager.CheckPath(guest)) is { } checkedPath && Guard(() => _agent.ResolvePath(checkedPath)) is { } resolved)
        {
            Assert.StartsWith("/tmp/outputs/", resolved, StringComparison.Ordinal);
        }
    }

    /// <summary>The result, or null for the refusals that become a 400; anything else fails the property.</summary>
    private static string? Guard(Func<string> resolve)
    {
        try
        {
            return resolve();
        }
        catch (RunRequestException e)
        {
            Assert.Equal(RefusalKind.Invalid, e.Kind);
            Assert.Equal(ProblemCodes.InvalidPath, e.Code);
            Assert.False(string.IsNullOrWhiteSpace(e.Message));
            return null;
        }
        catch (AgentException e)
        {
            Assert.Equal(ErrorCodes.BadRequest, e.Code);
            Assert.False(string.IsNullOrWhiteSpace(e.Message));
            return null;
        }
    }
}
