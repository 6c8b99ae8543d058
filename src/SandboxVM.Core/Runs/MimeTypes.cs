namespace SandboxVM.Core.Runs;

public static class MimeTypes
{
    private static readonly Dictionary<string, string> ByExtension = new(StringComparer.OrdinalIgnoreCase)
    {
        [".png"] = "image/png",
        [".jpg"] = "image/jpeg",
        [".jpeg"] = "image/jpeg",
        [".gif"] = "image/gif",
        [".svg"] = "image/svg+xml",
        [".webp"] = "image/webp",
        [".pdf"] = "application/pdf",
        [".txt"] = "text/plain",
        [".log"] = "text/plain",
        [".md"] = "text/markdown",
        [".csv"] = "text/csv",
        [".tsv"] = "text/tab-separated-values",
        [".json"] = "application/json",
        [".html"] = "text/html",
        [".xml"] = "application/xml",
        [".zip"] = "application/zip",
        [".gz"] = "application/gzip",
        [".parquet"] = "application/vnd.apache.parquet",
    };

    public static string For(string path) =>
        ByExtension.TryGetValue(Path.GetExtension(path), out string? mime) ? mime : "application/octet-stream";
}
