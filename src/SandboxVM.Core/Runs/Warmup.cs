using System.Text;
using SandboxVM.Core.Templates;
using SandboxVM.Protocol;
using SandboxVM.Runtime.Agent;

namespace SandboxVM.Core.Runs;

/// <summary>
/// Runs a template's warm-up script in a template VM before its snapshot is taken, so every clone starts
/// with what it touched already in memory (page cache, the C++ PCH, Go's build cache in /tmp, a
/// preloaded interpreter).
/// </summary>
public static class Warmup
{
    /// <summary>Changes whenever what the warm-up does changes, so snapshots taken the old way are retired.</summary>
    public const string Version = "4: pooled python templates keep the session kernel only";

    /// <summary>
    /// Warms a VM of <paramref name="template"/>. <paramref name="prime"/>: the VM is a clone restored from a
    /// snapshot whose warm-up already ran, warmed again only so that its emulator has translated the code a
    /// run goes through (see PoolManager.PrimeRestoredVms); false: a fresh VM (a snapshot's, or one per
    /// pooled sandbox where the runtime has no snapshots).
    /// </summary>
    public static async Task RunAsync(TemplateDefinition template, AgentClient agent, bool prime, CancellationToken cancellationToken)
    {
        if (string.IsNullOrWhiteSpace(template.Warmup.Script))
        {
            return;
        }
        var env = new Dictionary<string, string>(template.Language.Env, StringComparer.Ordinal);
        var exec = RunService.BuildExec(template, template.Warmup.Script, null, env,
            template.Limits.MaxTimeoutS, template.Limits.MaxTimeoutS);
        var output = new Collector();
        // Every run of a pooled VM goes through the session kernel (one-shot runs too, see RunService), so
        // its fork server would only hold a second interpreter's memory in every clone (and in every
        // paused or forked sandbox's image). The script then runs as a plain process, once per fresh VM:
        // it warms the page cache, and the kernel below imports the template's preloads itself.
        bool preloaded = exec.ForkServer is not null;
        bool kernelOnly = preloaded && template.Warmup.Strategy == WarmupStrategy.Pool;
        if (kernelOnly)
        {
            exec.ForkServer = null;
        }
        if (!(kernelOnly && prime))
        {
            var result = await agent.ExecAsync(exec, output, cancellationToken);
            var failed = result.Compile is { } c && (c.Reason != TerminationReason.Exited || c.ExitCode != 0)
                ? result.Compile
                : result.Run is { Reason: not TerminationReason.Exited } or { ExitCode: not 0 } ? result.Run : null;
            if (failed is not null || result.Run is null)
            {
                throw new InvalidOperationException(
                    $"warm-up of template {template.Name} failed ({failed?.Reason}, exit {failed?.ExitCode}): {output.Text}");
            }
        }
        if (preloaded)
        {
            // Start the session kernel (a warm interpreter with the preloads) so the snapshot has it: a
            // sandbox's first run does not pay for an interpreter start and imports (seconds under
            // emulation). Its namespace stays empty: the script is a no-op.
            var kernel = RunService.BuildExec(template, "pass\n", null, env, template.Limits.MaxTimeoutS, template.Limits.MaxTimeoutS);
            kernel.ForkServer!.Persistent = true;
            kernel.KeepOutputs = true;
            var started = await agent.ExecAsync(kernel, output, cancellationToken);
            if (started.Run is not { Reason: TerminationReason.Exited, ExitCode: 0 })
            {
                throw new InvalidOperationException($"warm-up of the session kernel of {template.Name} failed ({started.Run?.Reason}): {output.Text}");
            }
        }
        // The warm-up's files are not the first run's artifacts.
        await agent.RemoveAsync(exec.OutputsDir, recursive: true, cancellationToken);
        await agent.MakeDirAsync(exec.OutputsDir, parents: true, cancellationToken);
    }

    private sealed class Collector : IExecObserver
    {
        private readonly StringBuilder _text = new();

        public string Text => _text.Length > 4000 ? _text.ToString(_text.Length - 4000, 4000) : _text.ToString();

        public void OnStdout(ReadOnlySpan<byte> data) => _text.Append(Encoding.UTF8.GetString(data));

        public void OnStderr(ReadOnlySpan<byte> data) => _text.Append(Encoding.UTF8.GetString(data));

        public void OnEvent(ExecEvent e)
        {
        }
    }
}
