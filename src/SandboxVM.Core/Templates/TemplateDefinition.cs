using System.Security.Cryptography;
using System.Text;
using SandboxVM.Images;

namespace SandboxVM.Core.Templates;

/// <summary>One template, as read from <c>templates/NAME.yaml</c>.</summary>
public sealed class TemplateDefinition
{
    public required string Name { get; init; }

    public string Description { get; init; } = "";

    /// <summary>The YAML file this definition came from; empty for definitions made in code.</summary>
    public string FilePath { get; init; } = "";

    public required TemplateSource Source { get; init; }

    /// <summary>Shell commands (YAML <c>build:</c>) run inside the rootfs at build time, in order.</summary>
    public List<string> BuildSteps { get; init; } = [];

    public required LanguageRecipe Language { get; init; }

    public int Vcpus { get; init; } = 1;

    public int MemoryMib { get; init; } = 512;

    public int DiskMib { get; init; } = 2048;

    public TemplateLimits Limits { get; init; } = new();

    public OutputMode Output { get; init; } = OutputMode.Text;

    public NetworkPolicy Network { get; init; } = new();

    public WarmupPolicy Warmup { get; init; } = new();

    /// <summary>
    /// YAML <c>files</c>: absolute host path of a directory (given relative to the YAML file) whose tree is
    /// copied into the rootfs at <c>/</c> when the image is built; null when the template has none.
    /// </summary>
    public string? FilesDir { get; init; }

    /// <summary>
    /// SHA-256 (lowercase hex) over everything that changes the built image: the source, the
    /// build steps and the files tree (its paths, modes and contents, read now). Description, limits, recipe and policies do not change the image, so editing
    /// them never triggers a rebuild.
    /// </summary>
    public string ContentHash
    {
        get
        {
            // Length-prefixed fields so that no two different inputs share an encoding.
            var sb = new StringBuilder("sandboxvm-template-image/1\n");
            Append(sb, "type", Source.Type);
            switch (Source.Type)
            {
                case TemplateSource.DebianType:
                    Append(sb, "suite", Source.Suite);
                    foreach (var p in Source.Packages.Distinct(StringComparer.Ordinal).Order(StringComparer.Ordinal))
                        Append(sb, "package", p);
                    break;
                case TemplateSource.OciType:
                    Append(sb, "reference", Source.Reference ?? "");
                    break;
                case TemplateSource.OciLayoutType:
                    Append(sb, "path", Source.Path ?? "");
                    Append(sb, "tag", Source.Tag ?? "");
                    // What the tag names now (read from the layout's index): a moved tag is a new image.
                    string digest;
                    try
                    {
                        digest = OciLayout.ResolveManifest(Source.Path ?? "", Source.Tag).Digest;
                    }
                    catch (InvalidDataException)
                    {
                        digest = "";
                    }
                    Append(sb, "manifest", digest);
                    break;
            }

            foreach (var step in BuildSteps)
                Append(sb, "build", step);
            if (FilesDir is not null)
                Append(sb, "files", ImageKeys.HashTree(FilesDir));
            return Convert.ToHexStringLower(SHA256.HashData(Encoding.UTF8.GetBytes(sb.ToString())));

            static void Append(StringBuilder sb, string name, string value) =>
                sb.Append(name).Append(' ').Append(Encoding.UTF8.GetByteCount(value)).Append(':').Append(value).Append('\n');
        }
    }

    /// <summary>The image builder's input for this template.</summary>
    /// <param name="agentPath">The guest agent binary to put into the rootfs.</param>
    public ImageSpec ToImageSpec(string agentPath) =>
        new(Name, Source.Type, Source.Suite, Source.Packages.ToArray(), BuildSteps.ToArray(), agentPath, FilesDir, Source.Type switch
        {
            TemplateSource.OciType => new OciSource(Source.Reference, null, null, Source.TlsVerify),
            TemplateSource.OciLayoutType => new OciSource(null, Source.Path, Source.Tag),
            _ => null,
        });

    public override string ToString() => Name;
}

/// <summary>Where the rootfs comes from.</summary>
public sealed class TemplateSource
{
    public const string DebianType = "debian";
    public const string OciType = "oci";
    public const string OciLayoutType = "oci-layout";

    /// <summary><c>debian</c>, <c>oci</c> or <c>oci-layout</c>.</summary>
    public string Type { get; init; } = DebianType;

    /// <summary>Debian suite (type <c>debian</c>).</summary>
    public string Suite { get; init; } = "bookworm";

    /// <summary>Packages installed on top of the minbase variant (type <c>debian</c>).</summary>
    public List<string> Packages { get; init; } = [];

    /// <summary>Image reference such as <c>registry.example:5000/team/python:3.12-slim</c> or <c>...@sha256:DIGEST</c> (type <c>oci</c>), fetched with skopeo.</summary>
    public string? Reference { get; init; }

    /// <summary>Verify the registry's TLS certificate (type <c>oci</c>); false also allows plain HTTP, e.g. a registry on loopback.</summary>
    public bool TlsVerify { get; init; } = true;

    /// <summary>Absolute path of an OCI image layout directory (type <c>oci-layout</c>).</summary>
    public string? Path { get; init; }

    /// <summary>Which image of the layout (type <c>oci-layout</c>); null: its only one, else <c>latest</c>.</summary>
    public string? Tag { get; init; }
}

/// <summary>How the guest agent turns submitted code into a running program.</summary>
public sealed class LanguageRecipe
{
    /// <summary>Language name for display and metrics, e.g. <c>cpp</c>.</summary>
    public required string Name { get; init; }

    /// <summary>File name the submitted code is written to, relative to the working directory.</summary>
    public required string SourceFile { get; init; }

    /// <summary>Compile argv; null for interpreted languages.</summary>
    public List<string>? Compile { get; init; }

    /// <summary>Run argv.</summary>
    public required List<string> Run { get; init; }

    /// <summary>Environment for both compile and run.</summary>
    public Dictionary<string, string> Env { get; init; } = new(StringComparer.Ordinal);

    /// <summary>
    /// YAML <c>fork_server</c>: run the program in the guest agent's warm Python interpreter (modules
    /// imported once) instead of a new process; null when absent. Python only: <see cref="Run"/> is
    /// read as the interpreter argv followed by <see cref="SourceFile"/> and its arguments.
    /// </summary>
    public ForkServerRecipe? ForkServer { get; init; }
}

/// <summary>The guest agent's fork server for a Python template (YAML <c>language.fork_server</c>).</summary>
public sealed class ForkServerRecipe
{
    /// <summary>Modules the server imports once, before it serves any run (e.g. <c>numpy</c>, <c>matplotlib.pyplot</c>).</summary>
    public List<string> Preload { get; init; } = [];
}

public sealed class TemplateLimits
{
    public double CompileTimeoutS { get; init; } = 30;

    public double RunTimeoutS { get; init; } = 10;

    /// <summary>The highest <c>timeout_s</c> a caller may ask for.</summary>
    public double MaxTimeoutS { get; init; } = 300;

    /// <summary>Cap on captured stdout plus stderr.</summary>
    public long OutputBytes { get; init; } = 1024 * 1024;

    public int Processes { get; init; } = 128;

    /// <summary>Cap on the writable space (home, /tmp, outputs).</summary>
    public long FileBytes { get; init; } = 256L * 1024 * 1024;
}

public enum OutputMode
{
    /// <summary>YAML <c>text</c>: stdout and stderr only.</summary>
    Text,

    /// <summary>YAML <c>text+images</c>: also images written to <c>/tmp/outputs</c>.</summary>
    TextAndImages,
}

public enum NetworkMode
{
    /// <summary>No network device at all.</summary>
    None,

    /// <summary>HTTP(S) through the host's egress proxy, filtered by the allow and deny rules.</summary>
    Proxy,
}

public sealed class NetworkPolicy
{
    public NetworkMode Mode { get; init; } = NetworkMode.None;

    /// <summary>Host names (<c>example.com</c>, <c>*.example.com</c>), IP addresses or CIDR ranges.</summary>
    public List<string> Allow { get; init; } = [];

    /// <summary>Same forms as <see cref="Allow"/>; deny wins over allow.</summary>
    public List<string> Deny { get; init; } = [];

    /// <summary>Allowed destination ports (YAML <c>ports</c>); null: 80 and 443.</summary>
    public List<int>? Ports { get; init; }
}

public enum WarmupStrategy
{
    /// <summary>Keep <see cref="WarmupPolicy.PoolSize"/> warm VMs cloned from a snapshot.</summary>
    Pool,

    /// <summary>Boot a VM per request.</summary>
    Cold,

    /// <summary>One long-lived VM shared by all requests.</summary>
    Singleton,
}

public sealed class WarmupPolicy
{
    public WarmupStrategy Strategy { get; init; } = WarmupStrategy.Pool;

    public int PoolSize { get; init; } = 2;

    /// <summary>
    /// Fewest ready sandboxes the pool keeps (YAML <c>pool_min</c>); with <see cref="PoolMax"/> the target
    /// follows demand between the two. Null: <see cref="PoolSize"/>, a fixed pool.
    /// </summary>
    public int? PoolMin { get; init; }

    /// <summary>Most ready sandboxes the pool keeps (YAML <c>pool_max</c>). Null: <see cref="PoolSize"/>.</summary>
    public int? PoolMax { get; init; }

    /// <summary>Restores the pool runs at once when it refills (YAML <c>refill_concurrency</c>). Null: the server's setting.</summary>
    public int? RefillConcurrency { get; init; }

    /// <summary>The pool's lower bound: <see cref="PoolMin"/>, else the fixed <see cref="PoolSize"/>.</summary>
    public int MinPool => PoolMin ?? PoolSize;

    /// <summary>The pool's upper bound: <see cref="PoolMax"/>, else the fixed <see cref="PoolSize"/>.</summary>
    public int MaxPool => PoolMax ?? PoolSize;

    /// <summary>Code in the template's language run once before the snapshot is taken.</summary>
    public string? Script { get; init; }
}
