using System.Text.Encodings.Web;
using System.Text.Json;

namespace SandboxVM.Images;

/// <summary>The JSON manifest every cache phase writes into its result: builder version, build time, then the phase's own fields.</summary>
internal static class PhaseManifest
{
    /// <param name="path">Where (inside the phase's temp path, so it is renamed with it).</param>
    /// <param name="builderVersion">The builder's version (part of every key of the phase).</param>
    /// <param name="fields">The phase's own fields.</param>
    /// <param name="encoder">How strings are escaped; null for the default.</param>
    /// <param name="cancellationToken">Stops the write.</param>
    public static async Task WriteAsync(string path, int builderVersion, Action<Utf8JsonWriter> fields, JavaScriptEncoder? encoder,
        CancellationToken cancellationToken)
    {
        var stream = File.Create(path);
        await using (stream.ConfigureAwait(false))
        {
            var writer = new Utf8JsonWriter(stream, new JsonWriterOptions { Indented = true, Encoder = encoder });
            await using (writer.ConfigureAwait(false))
            {
                writer.WriteStartObject();
                writer.WriteNumber("builder_version", builderVersion);
                writer.WriteString("built_at", DateTimeOffset.UtcNow);
                fields(writer);
                writer.WriteEndObject();
                await writer.FlushAsync(cancellationToken).ConfigureAwait(false);
            }
        }
    }
}
