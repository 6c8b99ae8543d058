using System.CommandLine;
using Microsoft.Extensions.Configuration;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;
using SandboxVM.Client;
using SandboxVM.Core.Catalog;
using SandboxVM.Core.Templates;
using SandboxVM.Images;
using SandboxVM.Images.Boot;
using SandboxVM.Server;

namespace SandboxVM.Cli;

internal static class TemplatesCommand
{
    public static Command Create()
    {
        var url = Common.UrlOption();
        var apiKey = Common.ApiKeyOption();
        var list = new Command("list", "List the server's templates and their state") { url, apiKey };
        list.SetAction(async (parse, ct) =>
        {
            using var client = new SandboxClient(new SandboxClientOptions { BaseUrl = parse.GetValue(url)!, ApiKey = parse.GetValue(apiKey) });
            try
            {
                foreach (var t in await client.ListTemplatesAsync(ct))
                {
                    string state = !t.Available ? "unavailable: " + t.UnavailableReason : t.Built ? "built" : "not built";
                    Console.WriteLine($"{t.Name,-22} {t.Language,-8} {t.Runtime,-8} {t.Isolation,-13} {state}");
                }
                return 0;
            }
            catch (SandboxException e)
            {
                await Console.Error.WriteLineAsync("sandboxvm: " + e.Message);
                return 2;
            }
        });

        var name = new Argument<string?>("name") { Description = "Template to build; all available ones when omitted", Arity = ArgumentArity.ZeroOrOne };
        var build = new Command("build", "Build template images into the cache (unchanged templates are not rebuilt)") { name };
        build.SetAction(async (parse, ct) =>
        {
            var options = ServerApp.LoadOptions(new ConfigurationBuilder().AddEnvironmentVariables().Build());
            using var loggers = LoggerFactory.Create(b => b.AddSimpleConsole(o => o.SingleLine = true).SetMinimumLevel(LogLevel.Warning));
            TemplateRegistry registry;
            try
            {
                registry = TemplateRegistry.Load(options.TemplateDirectories);
            }
            catch (TemplateLoadException e)
            {
                await Console.Error.WriteLineAsync("sandboxvm: " + e.Message);
                return 1;
            }
            var catalog = new TemplateCatalog(registry,
                new ImageBuilder(new ImageBuilderOptions { CacheRoot = options.CacheDir }, loggers.CreateLogger<ImageBuilder>()),
                options, NullLogger<TemplateCatalog>.Instance);
            string? only = parse.GetValue(name);
            if (only is not null && catalog.Find(only) is null)
            {
                await Console.Error.WriteLineAsync($"sandboxvm: unknown template '{only}'; known: {string.Join(", ", catalog.All.Select(t => t.Name))}");
                return 1;
            }
            int failures = 0;
            foreach (var t in catalog.All.Where(t => only is null || t.Name == only))
            {
                if (TemplateCatalog.UnavailableReason(t) is { } why)
                {
                    Console.WriteLine($"{t.Name}: skipped, {why}");
                    continue;
                }
                Console.WriteLine($"{t.Name}: building");
                var progress = new SyncProgress<string>(line => Console.WriteLine($"  {t.Name} | {line}"));
                try
                {
                    var image = await catalog.EnsureBuiltAsync(t, progress, ct);
                    Console.WriteLine($"{t.Name}: {(image.WasCached ? "up to date" : "built")} in {image.Elapsed.TotalSeconds:0.0} s -> {image.RootfsDir}");
                }
                catch (Exception e) when (e is not OperationCanceledException)
                {
                    failures++;
                    await Console.Error.WriteLineAsync($"{t.Name}: FAILED: {e.Message}");
                }
            }
            return failures == 0 ? 0 : 1;
        });
        var vmName = new Argument<string>("name") { Description = "Template whose VM images to build" };
        var vmImages = new Command("vm-images",
            "Build a template's VM images (guest kernel, initramfs, ext4 root disk) and print their paths as shell assignments "
            + "(SANDBOXVM_KERNEL, SANDBOXVM_INITRD, SANDBOXVM_ROOTFS_IMG), as the runtime end-to-end tests read them") { vmName };
        vmImages.SetAction(async (parse, ct) =>
        {
            var options = ServerApp.LoadOptions(new ConfigurationBuilder().AddEnvironmentVariables().Build());
            using var loggers = LoggerFactory.Create(b => b.AddSimpleConsole(o => o.SingleLine = true).SetMinimumLevel(LogLevel.Warning));
            var images = new ImageBuilderOptions { CacheRoot = options.CacheDir };
            var catalog = new TemplateCatalog(TemplateRegistry.Load(options.TemplateDirectories),
                new ImageBuilder(images, loggers.CreateLogger<ImageBuilder>()), options, NullLogger<TemplateCatalog>.Instance,
                new BootArtifactsBuilder(images, loggers.CreateLogger<BootArtifactsBuilder>()));
            var t = catalog.Find(parse.GetValue(vmName)!);
            if (t is null)
            {
                await Console.Error.WriteLineAsync($"sandboxvm: unknown template '{parse.GetValue(vmName)}'");
                return 1;
            }
            var spec = await catalog.GetSpecAsync(t, ct);
            Console.WriteLine($"SANDBOXVM_KERNEL='{spec.KernelPath}'");
            Console.WriteLine($"SANDBOXVM_INITRD='{spec.InitrdPath}'");
            Console.WriteLine($"SANDBOXVM_ROOTFS_IMG='{spec.RootfsImage}'");
            return 0;
        });
        return new Command("templates", "List or build templates") { list, build, vmImages };
    }
}
