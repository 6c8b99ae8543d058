using SandboxVM.Agent.Native;
using SandboxVM.Protocol;

namespace SandboxVM.Agent.Operations;

/// <summary>ping and reinit.</summary>
internal static class SystemOperations
{
    public static async Task PingAsync(OperationContext context, AgentState state) =>
        await context.RespondAsync(new OkBody(), ProtocolJson.Default.OkBody);

    /// <summary>kernel_stop: ends a context's kernel (its state with it); ok also when none ran.</summary>
    public static async Task KernelStopAsync(OperationContext context, AgentState state)
    {
        state.Kernels.Stop(context.Request.Kernel?.Context);
        await context.RespondAsync(new OkBody(), ProtocolJson.Default.OkBody);
    }

    /// <summary>
    /// Fresh identity after a snapshot restore. Each part is best effort (a process-runtime agent may
    /// not be allowed to set the clock); failures are logged, the reply is ok. unix_time_ms of 0 leaves
    /// the clock alone.
    /// </summary>
    public static async Task ReinitAsync(OperationContext context, AgentState state)
    {
        var request = context.Request.Reinit ?? throw AgentException.BadRequest("reinit needs a 'reinit' member");
        if (request.UnixTimeMs > 0 && Libc.IsRoot)
        {
            int errno = Libc.SetRealtimeClock(request.UnixTimeMs);
            if (errno != 0)
            {
                AgentLog.Write($"reinit: cannot set the clock: {Libc.DescribeErrno(errno)}");
            }
        }
        if (request.Entropy.Length > 0)
        {
            try
            {
                // Writing mixes the bytes into the pool (without crediting entropy, which needs RNDADDENTROPY).
                await using var random = new FileStream("/dev/urandom", FileMode.Open, FileAccess.Write, FileShare.ReadWrite, bufferSize: 0);
                await random.WriteAsync(request.Entropy, context.Cancellation);
            }
            catch (Exception e) when (AgentException.IsIo(e))
            {
                AgentLog.Write($"reinit: cannot write /dev/urandom: {e.Message}");
            }
            if (Libc.IsRoot && Libc.ReseedCrng() is int reseedErrno and not 0)
            {
                AgentLog.Write($"reinit: cannot reseed the CRNG: {Libc.DescribeErrno(reseedErrno)}");
            }
        }
        state.SandboxId = request.SandboxId;
        await context.RespondAsync(new OkBody(), ProtocolJson.Default.OkBody);
    }

    /// <summary>Starts the HTTP proxy on the requested loopback address (idempotent); replies with the bound address.</summary>
    public static async Task EgressEnableAsync(OperationContext context, AgentState state)
    {
        var request = context.Request.EgressEnable ?? new EgressEnableRequest();
        string bound = state.Egress.Start(request.Listen);
        await context.RespondAsync(new EgressEnableReply { Listen = bound }, ProtocolJson.Default.EgressEnableReply);
    }
}
