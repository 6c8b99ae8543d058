using System.Diagnostics;
using System.Globalization;
using System.Text;
using CsCheck;

namespace SandboxVM.Fuzz.Tests;

/// <summary>
/// Runs a property over a fixed number of generated inputs from a fixed seed, so every run of the test
/// command checks the same inputs (CsCheck's own Sample draws fresh seeds each run). Longer or different
/// runs: <c>SANDBOXVM_FUZZ_ITERATIONS</c> (inputs per target) and <c>SANDBOXVM_FUZZ_SEED</c> (a number).
/// A failure names the CsCheck seed of the input (replayable with CsCheck's <c>Sample(..., seed: S)</c>),
/// prints it, and writes it to <c>fuzz-failures/</c> beside the test binary to be copied into the corpus.
/// </summary>
internal static class Fuzz
{
    public const string Category = "fuzz";

    /// <summary>The seed CI uses; any other finds other inputs.</summary>
    public const ulong DefaultSeed = 20_260_611;

    public static ulong Seed { get; } = ulong.TryParse(Environment.GetEnvironmentVariable("SANDBOXVM_FUZZ_SEED"), NumberStyles.None,
        CultureInfo.InvariantCulture, out var s) ? s : DefaultSeed;

    /// <summary><paramref name="fallback"/>, or <c>SANDBOXVM_FUZZ_ITERATIONS</c> when set.</summary>
    public static int Iterations(int fallback) =>
        int.TryParse(Environment.GetEnvironmentVariable("SANDBOXVM_FUZZ_ITERATIONS"), NumberStyles.None, CultureInfo.InvariantCulture, out var n) && n > 0
            ? n
            : fallback;

    /// <summary>Longest one input may take before it counts as a hang.</summary>
    public static readonly TimeSpan InputTimeout = TimeSpan.FromSeconds(10);

    /// <summary>
    /// Checks <paramref name="property"/> on <paramref name="iterations"/> inputs of <paramref name="gen"/> (a
    /// throw is a failure), each within <see cref="InputTimeout"/>; prints how many ran.
    /// </summary>
    public static void Run<T>(string target, Gen<T> gen, Action<T> property, int iterations, Func<T, string> print, Func<T, byte[]>? raw = null) =>
        RunAsync(target, gen, value =>
        {
            property(value);
            return Task.CompletedTask;
        }, iterations, print, raw).GetAwaiter().GetResult();

    /// <summary>
    /// As <see cref="Run{T}"/> for an async property. <paramref name="raw"/> gives the bytes of an input to
    /// save as a corpus file when it fails.
    /// </summary>
    public static async Task RunAsync<T>(string target, Gen<T> gen, Func<T, Task> property, int iterations, Func<T, string> print, Func<T, byte[]>? raw = null)
    {
        int n = Iterations(iterations);
        var pcg = new PCG(StableHash(target), Seed);
        var clock = Stopwatch.StartNew();
        for (int i = 0; i < n; i++)
        {
            ulong state = pcg.State;
            T value = gen.Generate(pcg, null, out _);
            try
            {
                await WithinAsync(() => property(value), $"{target} input {i}");
            }
            catch (Exception e)
            {
                throw new FuzzFailureException(Report(target, i, pcg.ToString(state), print(value), raw?.Invoke(value)), e);
            }
        }
        Log($"{target}: {n} inputs passed in {clock.ElapsedMilliseconds} ms (seed {Seed})");
    }

    /// <summary>Runs <paramref name="work"/> on the thread pool and fails if it has not ended within <see cref="InputTimeout"/>.</summary>
    public static async Task WithinAsync(Func<Task> work, string what)
    {
        var task = Task.Run(work);
        if (await Task.WhenAny(task, Task.Delay(InputTimeout)) != task)
        {
            throw new TimeoutException($"{what} did not finish within {InputTimeout.TotalSeconds} s (a hang)");
        }
        await task;
    }

    public static void Log(string line) => TestContext.Current.TestOutputHelper?.WriteLine(line);

    /// <summary>The files of <c>corpus/<paramref name="target"/></c>, by name.</summary>
    public static IReadOnlyList<(string Name, byte[] Bytes)> Corpus(string target)
    {
        string dir = Path.Combine(AppContext.BaseDirectory, "corpus", target);
        return [.. Directory.EnumerateFiles(dir).Order(StringComparer.Ordinal).Select(f => (Path.GetFileName(f), File.ReadAllBytes(f)))];
    }

    public static byte[] CorpusFile(string target, string name) => File.ReadAllBytes(Path.Combine(AppContext.BaseDirectory, "corpus", target, name));

    /// <summary>Bytes for a failure message: printable ASCII as is, the rest escaped, long inputs cut.</summary>
    public static string Escape(ReadOnlySpan<byte> bytes, int max = 2000)
    {
        var s = new StringBuilder();
        foreach (byte b in bytes[..Math.Min(bytes.Length, max)])
        {
            s.Append(b is >= 0x20 and < 0x7f and not (byte)'\\' ? (char)b : $"\\x{b:x2}");
        }
        return bytes.Length > max ? s.Append(CultureInfo.InvariantCulture, $"... ({bytes.Length} bytes)").ToString() : s.ToString();
    }

    public static string Escape(string text, int max = 2000) => Escape(Encoding.UTF8.GetBytes(text), max);

    private static string Report(string target, int index, string seed, string input, byte[]? raw)
    {
        string dir = Path.Combine(AppContext.BaseDirectory, "fuzz-failures");
        Directory.CreateDirectory(dir);
        string file = Path.Combine(dir, $"{target}-{seed}.txt");
        File.WriteAllText(file, input);
        if (raw is not null)
        {
            file = Path.Combine(dir, $"{target}-{seed}.input");
            File.WriteAllBytes(file, raw);
        }
        return $"{target}: input {index} failed (SANDBOXVM_FUZZ_SEED={Seed}, CsCheck seed {seed}, written to {file}): {input}";
    }

    /// <summary>FNV-1a of the name: each target draws its own stream of inputs from the one seed.</summary>
    private static uint StableHash(string s)
    {
        uint h = 2166136261;
        foreach (char c in s)
        {
            h = (h ^ c) * 16777619;
        }
        return h;
    }
}

public sealed class FuzzFailureException : Exception
{
    public FuzzFailureException()
    {
    }

    public FuzzFailureException(string message)
        : base(message)
    {
    }

    public FuzzFailureException(string message, Exception inner)
        : base(message, inner)
    {
    }
}
