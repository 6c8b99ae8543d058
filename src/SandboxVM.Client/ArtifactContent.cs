namespace SandboxVM.Client;

/// <summary>The bytes of an artifact read from a sandbox, and their content type.</summary>
public sealed class ArtifactContent
{
    internal ArtifactContent(string path, string contentType, byte[] content)
    {
        Path = path;
        ContentType = contentType;
        Content = content;
    }

    /// <summary>Path of the artifact, relative to the outputs directory <c>/tmp/outputs</c>.</summary>
    public string Path { get; }

    /// <summary>Media type the server sent, e.g. <c>image/png</c>; <c>application/octet-stream</c> when it sent none.</summary>
    public string ContentType { get; }

    /// <summary>The artifact's bytes.</summary>
    public byte[] Content { get; }

    /// <inheritdoc/>
    public override string ToString() => $"{Path} ({ContentType}, {Content.Length} bytes)";
}
