using System.Text.Json;
using System.Text.RegularExpressions;

namespace SandboxVM.Images;

/// <summary>Where an OCI image comes from: a registry reference or an image layout on this host.</summary>
/// <param name="Reference">Registry reference (<c>HOST[:PORT]/REPO:TAG</c> or <c>...@sha256:DIGEST</c>), fetched with skopeo; null for a layout.</param>
/// <param name="LayoutPath">Absolute path of an OCI image layout directory; null for a reference.</param>
/// <param name="Tag">The layout's image to use (its <c>org.opencontainers.image.ref.name</c>); null: the layout's only image, else <c>latest</c>.</param>
/// <param name="TlsVerify">Verify the registry's TLS certificate (false also allows plain HTTP, e.g. a registry on loopback).</param>
public sealed record OciSource(string? Reference, string? LayoutPath, string? Tag = null, bool TlsVerify = true);

/// <summary>Reads an OCI image layout's <c>index.json</c> (the OCI image specification's "image layout").</summary>
public static partial class OciLayout
{
    /// <summary>Annotation that names an image in a layout's <c>index.json</c>.</summary>
    public const string RefNameAnnotation = "org.opencontainers.image.ref.name";

    private const string ManifestMediaType = "application/vnd.oci.image.manifest.v1+json";

    [GeneratedRegex("^[A-Za-z0-9_][A-Za-z0-9._-]{0,127}$")]
    private static partial Regex TagRegex();

    [GeneratedRegex("^sha256:[a-f0-9]{64}$")]
    private static partial Regex DigestRegex();

    /// <summary>True when <paramref name="tag"/> is a valid image tag.</summary>
    public static bool IsValidTag(string tag) => TagRegex().IsMatch(tag);

    /// <summary>
    /// The manifest the layout names <paramref name="tag"/> (null: its only image, or the one tagged
    /// <c>latest</c>): the tag to hand to umoci and the manifest's digest, which identifies the image's
    /// content. Throws <see cref="InvalidDataException"/> naming what is wrong with the layout (also when
    /// it cannot be read).
    /// </summary>
    public static (string Tag, string Digest) ResolveManifest(string layoutPath, string? tag)
    {
        var index = Path.Combine(layoutPath, "index.json");
        if (!File.Exists(Path.Combine(layoutPath, "oci-layout")) || !File.Exists(index))
            throw new InvalidDataException($"{layoutPath} is not an OCI image layout (it needs oci-layout and index.json)");
        if (tag is not null && !IsValidTag(tag))
            throw new InvalidDataException($"'{tag}' is not an image tag");

        var manifests = new List<(string? Name, string Digest)>();
        try
        {
            using var doc = JsonDocument.Parse(File.ReadAllBytes(index));
            if (!doc.RootElement.TryGetProperty("manifests", out var list) || list.ValueKind != JsonValueKind.Array)
                throw new InvalidDataException($"{index} has no manifests array");
            foreach (var m in list.EnumerateArray())
            {
                var mediaType = m.TryGetProperty("mediaType", out var mt) ? mt.GetString() : null;
                var digest = m.TryGetProperty("digest", out var d) ? d.GetString() : null;
                if (mediaType != ManifestMediaType || digest is null)
                    continue;  // image indexes (multi-platform) and other artifacts are not unpacked
                string? name = m.TryGetProperty("annotations", out var a) && a.ValueKind == JsonValueKind.Object
                    && a.TryGetProperty(RefNameAnnotation, out var n) ? n.GetString() : null;
                manifests.Add((name, digest));
            }
        }
        catch (JsonException e)
        {
            throw new InvalidDataException($"{index} is not valid JSON: {e.Message}");
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new InvalidDataException($"cannot read {index}: {e.Message}", e);
        }

        (string? Name, string Digest) chosen;
        if (tag is not null)
        {
            chosen = manifests.FirstOrDefault(m => m.Name == tag);
            if (chosen.Digest is null)
                throw new InvalidDataException($"the OCI layout {layoutPath} has no image tagged '{tag}' (it has: {Names(manifests)})");
        }
        else if (manifests.Count == 1 && manifests[0].Name is not null)
        {
            chosen = manifests[0];
        }
        else
        {
            chosen = manifests.FirstOrDefault(m => m.Name == "latest");
            if (chosen.Digest is null)
                throw new InvalidDataException($"the OCI layout {layoutPath} has {manifests.Count} images and none tagged 'latest': name one with source.tag (it has: {Names(manifests)})");
        }
        if (!DigestRegex().IsMatch(chosen.Digest))
            throw new InvalidDataException($"the OCI layout {layoutPath} names its image by '{chosen.Digest}', not a sha256 digest");
        if (!File.Exists(Path.Combine(layoutPath, "blobs", "sha256", chosen.Digest["sha256:".Length..])))
            throw new InvalidDataException($"the OCI layout {layoutPath} lacks the manifest blob {chosen.Digest}");
        return (chosen.Name!, chosen.Digest);
    }

    private static string Names(List<(string? Name, string Digest)> manifests) =>
        manifests.Count == 0 ? "no image manifests" : string.Join(", ", manifests.Select(m => m.Name ?? "(untagged)"));
}
