using System.CommandLine;
using System.Globalization;
using System.Text.RegularExpressions;
using Microsoft.Extensions.Configuration;
using Microsoft.Extensions.Logging.Abstractions;
using SandboxVM.Core;
using SandboxVM.Core.Catalog;
using SandboxVM.Core.Templates;
using SandboxVM.Images;
using SandboxVM.Images.Boot;
using SandboxVM.Server;

namespace SandboxVM.Cli;

/// <summary><c>sandboxvm cache list | gc</c>: the image cache (SANDBOXVM_CACHE) on this host, no server needed.</summary>
internal static partial class CacheCommand
{
    public static Command Create()
    {
        var list = new Command("list", "Cache entries: size, exclusive size (freed if removed alone), last use, whether a current template needs it");
        list.SetAction(async (parse, ct) =>
        {
            var (cache, catalog) = Open();
            var (needed, keepPhases) = await catalog.CacheNeedsAsync(ct);
            var entries = cache.List();
            Console.WriteLine($"{"PHASE",-12} {"KEY",-12} {"SIZE",9} {"EXCLUSIVE",9} {"LAST USED (UTC)",-16} NEEDED");
            long total = 0;
            foreach (var e in entries)
            {
                var usage = ImageCache.Usage(e.Path);
                total += usage.ExclusiveBytes;
                string need = needed.Contains(e.Id) ? "yes" : keepPhases.Contains(e.Phase) ? "unknown" : "no";
                Console.WriteLine($"{e.Phase,-12} {e.Key[..12],-12} {Bytes(usage.Bytes),9} {Bytes(usage.ExclusiveBytes),9} {e.LastUsedUtc.ToString("yyyy-MM-dd HH:mm", CultureInfo.InvariantCulture),-16} {need}");
            }
            Console.WriteLine($"{entries.Count} entries in {cache.Root}; exclusive total {Bytes(total)} (a base's files shared with its rootfs entries count under none of them)");
            return 0;
        });

        var olderThan = new Option<string>("--older-than")
        {
            Description = "Remove entries not used within this period: a number with s, m, h, d or w (default 7d)",
            DefaultValueFactory = _ => "7d",
        };
        var dryRun = new Option<bool>("--dry-run") { Description = "Only print what would be removed" };
        var verbose = new Option<bool>("--verbose", "-v") { Description = "Also print each kept entry and why" };
        var gc = new Command("gc", "Remove cache entries not used within a period and not needed by the current templates; "
            + "entries a running process uses or a build holds locked stay") { olderThan, dryRun, verbose };
        gc.SetAction(async (parse, ct) =>
        {
            if (ParseDuration(parse.GetValue(olderThan)!) is not { } period)
            {
                await Console.Error.WriteLineAsync($"sandboxvm: --older-than '{parse.GetValue(olderThan)}' is not a period such as 12h, 7d or 2w");
                return 1;
            }
            var (cache, catalog) = Open();
            var (needed, keepPhases) = await catalog.CacheNeedsAsync(ct);
            bool dry = parse.GetValue(dryRun);
            var result = await cache.CollectAsync(new CacheGcOptions { OlderThan = period, DryRun = dry, Needed = needed, KeepPhases = keepPhases }, ct);
            string verb = dry ? "would remove" : "removed";
            foreach (var e in result.Removed)
            {
                Console.WriteLine($"{verb} {e.Phase} {e.Key} (last used {e.LastUsedUtc.ToString("yyyy-MM-dd HH:mm", CultureInfo.InvariantCulture)} UTC)");
            }
            if (parse.GetValue(verbose))
            {
                foreach (var (e, why) in result.Kept)
                {
                    Console.WriteLine($"kept {e.Phase} {e.Key}: {why}");
                }
            }
            foreach (var (e, error) in result.Failed)
            {
                await Console.Error.WriteLineAsync($"sandboxvm: could not remove {e.Path}: {error}");
            }
            var reasons = result.Kept.GroupBy(k => k.Reason.StartsWith("used ", StringComparison.Ordinal) ? "used recently" : k.Reason)
                .Select(g => $"{g.Count()} {g.Key}");
            Console.WriteLine($"{(dry ? "dry run: would free" : "freed")} {Bytes(result.BytesFreed)} ({result.BytesFreed} bytes) from {result.Removed.Count} entries; "
                + $"kept {result.Kept.Count} ({string.Join(", ", reasons)})" + (keepPhases.Count > 0 ? $"; phases kept whole: {string.Join(", ", keepPhases)}" : ""));
            return result.Failed.Count == 0 ? 0 : 1;
        });
        return new Command("cache", "The image cache on this host (SANDBOXVM_CACHE, default /var/cache/sandboxvm)") { list, gc };
    }

    private static (ImageCache Cache, TemplateCatalog Catalog) Open()
    {
        SandboxVmOptions options = ServerApp.LoadOptions(new ConfigurationBuilder().AddEnvironmentVariables().Build());
        var images = new ImageBuilderOptions { CacheRoot = options.CacheDir };
        var builder = new ImageBuilder(images, NullLogger<ImageBuilder>.Instance);
        var catalog = new TemplateCatalog(TemplateRegistry.Load(options.TemplateDirectories), builder, options, NullLogger<TemplateCatalog>.Instance,
            new BootArtifactsBuilder(images, NullLogger<BootArtifactsBuilder>.Instance));
        return (builder.Cache, catalog);
    }

    [GeneratedRegex(@"^(\d+(?:\.\d+)?)([smhdw])$")]
    private static partial Regex DurationRegex();

    /// <summary>"90m", "12h", "7d", "2w"; null when it is none of these.</summary>
    internal static TimeSpan? ParseDuration(string text)
    {
        var m = DurationRegex().Match(text.Trim());
        if (!m.Success)
        {
            return null;
        }
        double n = double.Parse(m.Groups[1].Value, CultureInfo.InvariantCulture);
        return m.Groups[2].Value switch
        {
            "s" => TimeSpan.FromSeconds(n),
            "m" => TimeSpan.FromMinutes(n),
            "h" => TimeSpan.FromHours(n),
            "d" => TimeSpan.FromDays(n),
            _ => TimeSpan.FromDays(7 * n),
        };
    }

    internal static string Bytes(long bytes) => bytes switch
    {
        >= 1L << 30 => string.Create(CultureInfo.InvariantCulture, $"{bytes / (double)(1L << 30):0.0} GiB"),
        >= 1L << 20 => string.Create(CultureInfo.InvariantCulture, $"{bytes / (double)(1L << 20):0.0} MiB"),
        >= 1L << 10 => string.Create(CultureInfo.InvariantCulture, $"{bytes / (double)(1L << 10):0} KiB"),
        _ => string.Create(CultureInfo.InvariantCulture, $"{bytes} B"),
    };
}
