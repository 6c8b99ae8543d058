namespace SandboxVM.Agent;

/// <summary>Command line of <c>sandboxvm-agent</c>.</summary>
internal sealed class AgentOptions
{
    public const string Usage =
        "usage: sandboxvm-agent [--channel stdio|PATH] [--home DIR] [--outputs DIR] [--skel DIR] [--vm] [--user UID:GID|self]";

    /// <summary>"stdio", or the path of a character device (virtio-serial port) opened read/write.</summary>
    public string Channel { get; private set; } = "stdio";

    /// <summary>Working directory of the agent; relative paths in requests are under it.</summary>
    public string Home { get; private set; } = "/home/sandbox";

    /// <summary>Directory listed by artifacts_list.</summary>
    public string OutputsDir { get; private set; } = "/tmp/outputs";

    /// <summary>Template files copied into <see cref="Home"/> at start (existing files are kept).</summary>
    public string SkelDir { get; private set; } = "/opt/sandboxvm/skel";

    /// <summary>Running as the guest's init or with --vm: the agent detects OOM kills itself.</summary>
    public bool VmMode { get; private set; }

    /// <summary>
    /// Who steps run as (see <see cref="SandboxUser"/>): <c>--user UID:GID</c> (needs root), <c>self</c>,
    /// or by default the sandbox user (1000:1000) when the agent runs as root, else the agent's own user.
    /// </summary>
    public SandboxUser User { get; private set; } = SandboxUser.Self;

    public bool IsStdio => Channel == "stdio";

    public static AgentOptions Parse(IReadOnlyList<string> args)
    {
        var options = new AgentOptions { VmMode = Environment.ProcessId == 1 };
        string? user = null;
        for (int i = 0; i < args.Count; i++)
        {
            string arg = args[i];
            switch (arg)
            {
                case "--channel":
                    options.Channel = Value(args, ref i);
                    break;
                case "--home":
                    options.Home = Path.GetFullPath(Value(args, ref i));
                    break;
                case "--outputs":
                    options.OutputsDir = Path.GetFullPath(Value(args, ref i));
                    break;
                case "--skel":
                    options.SkelDir = Path.GetFullPath(Value(args, ref i));
                    break;
                case "--vm":
                    options.VmMode = true;
                    break;
                case "--user":
                    user = Value(args, ref i);
                    break;
                default:
                    throw new ArgumentException($"unknown argument '{arg}'\n{Usage}");
            }
        }
        options.User = SandboxUser.Decide(Native.Libc.IsRoot, user);
        return options;
    }

    private static string Value(IReadOnlyList<string> args, ref int i)
    {
        if (i + 1 >= args.Count || args[i + 1].Length == 0)
        {
            throw new ArgumentException($"{args[i]} needs a value\n{Usage}");
        }
        return args[++i];
    }
}
