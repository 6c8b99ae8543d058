namespace SandboxVM.Server;

// Bodies of the HTTP API (docs/API.md) that are not Core's run types: written with the server's JSON
// options (snake_case), checked against tests/contract/*.json by ContractTests.

/// <summary>FileInfo: a file or directory in a sandbox.</summary>
internal sealed record FileInfoDto(string Path, string Name, string Kind, long Size, DateTime Mtime);

/// <summary>An artifact without its bytes: the <c>artifact</c> stream event and <c>GET .../artifacts</c>.</summary>
internal sealed record ArtifactInfoDto(string Path, string Mime, long Size, string Sha256);

/// <summary>Data of the <c>stdout</c> and <c>stderr</c> stream events.</summary>
internal sealed record StreamText(string Text);
