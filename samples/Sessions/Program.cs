// A sandbox kept across runs: upload a CSV, analyse it with pandas, plot it, read the PNG back, and use the
// same DataFrame in a later run. Server: the first argument, else $SANDBOXVM_BASE_URL, else http://127.0.0.1:8000
// (scripts/serve.sh). Run with: dotnet run --project samples/Sessions [-- http://host:8000]
using System.Globalization;
using System.Text;
using SandboxVM.Client;

await using var sb = await Sandbox.CreateAsync("python-data-analysis", new SandboxCreateOptions
{
    BaseUrl = args.Length > 0 ? args[0] : null,
    IdleTimeoutS = 120,
    Metadata = new Dictionary<string, string> { ["sample"] = "sessions" },
});
Console.WriteLine($"sandbox {sb.Id} ({sb.Template}): {sb.Info.VmSource.ToString().ToLowerInvariant()} VM in {sb.Info.StartupMs:0} ms, expires {sb.Info.ExpiresAt:u}");

// 1. Upload a CSV (streamed; parent directories are created).
var csv = new StringBuilder("month,sales,costs\n");
for (var month = 1; month <= 12; month++)
{
    csv.Append(CultureInfo.InvariantCulture, $"{month},{100 + (month * 17 % 23) * 5},{90 + month * 3}\n");
}

var uploaded = await sb.Files.WriteAsync("data/sales.csv", csv.ToString());
Console.WriteLine($"uploaded {uploaded.Path} ({uploaded.Size} bytes)");

// 2. Load it with pandas and plot it; output is printed as the program writes it. `df` stays in the interpreter.
var analysis = await sb.RunAsync(
    """
    import pandas as pd
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    df = pd.read_csv("data/sales.csv")
    df["profit"] = df.sales - df.costs
    print(df[["sales", "costs", "profit"]].agg(["mean", "max"]).round(1))
    ax = df.plot(x="month", y=["sales", "costs", "profit"], marker="o", title="Sales 2026")
    ax.figure.savefig("/tmp/outputs/sales.png", dpi=80)
    plt.close("all")
    """,
    onStdout: Console.Write,
    onStderr: Console.Error.Write);
Check(analysis, "analysis");

// 3. Read the plot back: the run's outputs are artifacts of the sandbox.
foreach (var artifact in await sb.ListArtifactsAsync())
{
    Console.WriteLine($"artifact: {artifact}");
}

var png = await sb.ReadArtifactAsync("sales.png");
var isPng = png.Content.AsSpan().StartsWith((ReadOnlySpan<byte>)[0x89, (byte)'P', (byte)'N', (byte)'G']);
await File.WriteAllBytesAsync("sales.png", png.Content);
Console.WriteLine($"saved sales.png ({png.ContentType}, {png.Content.Length} bytes, {(isPng ? "a PNG" : "NOT a PNG")})");

// 4. A later run uses the same DataFrame; the value of the last expression comes back as Result.
var best = await sb.RunAsync("""
    df.to_csv("data/profit.csv", index=False)
    int(df.loc[df.profit.idxmax(), "month"])
    """);
Check(best, "second run");
if (best.StateReset)
{
    Console.WriteLine("the interpreter was restarted: df from the first run is gone");
}

Console.WriteLine($"most profitable month: {best.Result}");

// 5. Files the code wrote can be listed and downloaded.
foreach (var entry in await sb.Files.ListAsync("data"))
{
    Console.WriteLine($"file: {entry}");
}

var profitCsv = await sb.Files.ReadTextAsync("data/profit.csv");
Console.WriteLine($"data/profit.csv: {profitCsv.Split('\n')[0]} … ({profitCsv.Length} chars)");

// 6. Or stream the events yourself.
await foreach (var e in sb.RunStreamAsync("for i in range(3):\n    print(f'tick {i}', flush=True)\n"))
{
    switch (e)
    {
        case StdoutEvent o:
            Console.Write($"[stdout] {o.Text}");
            break;
        case ResultEvent r:
            Console.WriteLine($"[result] {r.Result.Status} in {r.Result.Metrics.TotalMs:0} ms");
            break;
    }
}

// Leaving the `await using` scope ends the sandbox (DELETE /v1/sandboxes/{id}).
return isPng && best.Result is not null ? 0 : 1;

static void Check(RunResult result, string what)
{
    if (result.Status != RunStatus.Ok)
    {
        throw new InvalidOperationException($"{what} failed: {result}");
    }
}
