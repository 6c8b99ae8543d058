using SandboxVM.Agent.Files;
using SandboxVM.Protocol;

namespace SandboxVM.Agent.Operations;

/// <summary>
/// file_write, file_read, file_list, file_stat, file_remove, file_mkdir and artifacts_list, each done
/// for the user steps run as (or, under a run directory, for its run user) with that user's filesystem
/// identity (<see cref="UserFiles"/>): an upload is the user's to read, overwrite or remove, and nothing
/// the user planted (a symlink, FIFO, device, hard link) is followed, opened or written through.
/// </summary>
internal static class FileOperations
{
    /// <summary>Receives Data frames until DataEnd, writing each as it comes (never the whole file in memory).</summary>
    public static async Task WriteAsync(OperationContext context, AgentState state)
    {
        var request = RequireFile(context);
        string path = state.ResolvePath(request.Path);
        var who = state.IdentityFor(path);
        // Created (as the user) at once, so even a partial upload (cancelled, over the limit) is the user's to remove.
        var handle = await UserFiles.OpenWriteAsync(who, path, request.Mode);
        await using (var stream = new FileStream(handle!, FileAccess.Write, bufferSize: 0))
        {
            while (true)
            {
                var item = await context.Inbox.ReadAsync(context.Cancellation);
                if (item.Rejected is { } rejected)
                {
                    throw rejected;
                }
                if (item.Frame.Type == FrameType.DataEnd)
                {
                    break;
                }
                try
                {
                    await stream.WriteAsync(item.Frame.Payload, context.Cancellation);
                }
                catch (Exception e) when (AgentException.IsIo(e))
                {
                    throw AgentException.FromIo(e, path);
                }
            }
        }
        await context.RespondAsync(await UserFiles.DescribeAsync(who, path), ProtocolJson.Default.FileInfoBody);
    }

    /// <summary>Sends the content as Data frames of <see cref="Frame.ChunkSize"/>, a DataEnd, then the file's metadata.</summary>
    public static async Task ReadAsync(OperationContext context, AgentState state)
    {
        string path = state.ResolvePath(RequireFile(context).Path);
        var (handle, opened) = await UserFiles.OpenReadAsync(state.IdentityFor(path), path);
        long sent = 0;
        try
        {
            await using var stream = new FileStream(handle, FileAccess.Read, bufferSize: 0);
            byte[] buffer = new byte[Frame.ChunkSize];
            int n;
            while ((n = await stream.ReadAsync(buffer, context.Cancellation)) > 0)
            {
                await context.SendAsync(FrameType.Data, buffer.AsMemory(0, n), context.Cancellation);
                sent += n;
            }
        }
        catch (Exception e) when (AgentException.IsIo(e))
        {
            throw AgentException.FromIo(e, path);
        }
        await context.SendAsync(FrameType.DataEnd, ReadOnlyMemory<byte>.Empty, context.Cancellation);
        // The file that was read, not whatever the path names now.
        await context.RespondAsync(new FileInfoBody
        {
            Path = path,
            Name = Path.GetFileName(path),
            Kind = FileKind.File,
            Size = sent,
            MtimeMs = opened.MtimeMs,
        }, ProtocolJson.Default.FileInfoBody);
    }

    public static async Task ListAsync(OperationContext context, AgentState state)
    {
        string path = state.ResolvePath(RequireFile(context).Path);
        await context.RespondAsync(await UserFiles.ListAsync(state.IdentityFor(path), path), ProtocolJson.Default.FileListBody);
    }

    public static async Task StatAsync(OperationContext context, AgentState state)
    {
        string path = state.ResolvePath(RequireFile(context).Path);
        await context.RespondAsync(await UserFiles.DescribeAsync(state.IdentityFor(path), path), ProtocolJson.Default.FileInfoBody);
    }

    public static async Task RemoveAsync(OperationContext context, AgentState state)
    {
        var request = RequireFile(context);
        string path = state.ResolvePath(request.Path);
        if (state.RunDirectories.IsRunDirectory(path))
        {
            // Its entry is in a root-owned parent: the content goes as its user, the directory as root.
            await state.RunDirectories.RemoveAsync(path, request.Recursive);
        }
        else
        {
            await UserFiles.RemoveAsync(state.IdentityFor(path), path, request.Recursive);
        }
        await context.RespondAsync(new OkBody(), ProtocolJson.Default.OkBody);
    }

    /// <summary>Creates a directory; with Recursive its parents too. An existing directory is fine (like mkdir -p).</summary>
    public static async Task MkdirAsync(OperationContext context, AgentState state)
    {
        var request = RequireFile(context);
        string path = state.ResolvePath(request.Path);
        await context.RespondAsync(await UserFiles.MakeDirectoryAsync(state.IdentityFor(path), path, request.Recursive),
            ProtocolJson.Default.FileInfoBody);
    }

    /// <summary>Artifacts under the agent's outputs directory, or under <c>file.path</c> when the request gives one.</summary>
    public static async Task ListArtifactsAsync(OperationContext context, AgentState state)
    {
        string root = context.Request.File is { Path.Length: > 0 } file
            ? state.ResolvePath(file.Path)
            : state.Options.OutputsDir;
        var body = new ArtifactListBody { Artifacts = await UserFiles.ListArtifactsAsync(state.IdentityFor(root), root, context.Cancellation) };
        await context.RespondAsync(body, ProtocolJson.Default.ArtifactListBody);
    }

    private static FileRequest RequireFile(OperationContext context) =>
        context.Request.File ?? throw AgentException.BadRequest($"{context.Request.Op} needs a 'file' member");
}
