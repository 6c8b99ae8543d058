using SandboxVM.Protocol;

namespace SandboxVM.Agent.Operations;

/// <summary>
/// file_write, file_read, file_list, file_stat, file_remove, file_mkdir and artifacts_list. Files written
/// and directories made belong to the user steps run as (<see cref="SandboxUser"/>): an upload is the
/// user's to read, overwrite or remove. Reading, listing and removing go on as the agent.
/// </summary>
internal static class FileOperations
{
    /// <summary>Receives Data frames until DataEnd, writing each as it comes (never the whole file in memory).</summary>
    public static async Task WriteAsync(OperationContext context, AgentState state)
    {
        var request = RequireFile(context);
        string path = state.ResolvePath(request.Path);
        string parent = Path.GetDirectoryName(path) ?? "/";
        if (FileSystem.TryDescribe(parent)?.Kind != FileKind.Directory)
        {
            throw AgentException.NotFound(parent);
        }
        FileStream stream;
        try
        {
            stream = new FileStream(path, new FileStreamOptions
            {
                Mode = FileMode.Create,
                Access = FileAccess.Write,
                Share = FileShare.ReadWrite,
                BufferSize = 0,
                UnixCreateMode = (UnixFileMode)(request.Mode & 0x1ff),
            });
        }
        catch (Exception e) when (AgentException.IsIo(e))
        {
            throw AgentException.FromIo(e, path);
        }
        await using (stream)
        {
            try
            {
                // At once, so even a partial upload (cancelled, over the limit) is the user's to remove.
                state.Options.User.OwnWritten(stream.SafeFileHandle, path);
            }
            catch (IOException e)
            {
                throw AgentException.FromIo(e, path);
            }
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
        await context.RespondAsync(FileSystem.Describe(path), ProtocolJson.Default.FileInfoBody);
    }

    /// <summary>Sends the content as Data frames of <see cref="Frame.ChunkSize"/>, a DataEnd, then the file's metadata.</summary>
    public static async Task ReadAsync(OperationContext context, AgentState state)
    {
        string path = state.ResolvePath(RequireFile(context).Path);
        if (FileSystem.Describe(path).Kind == FileKind.Directory)
        {
            throw new AgentException(ErrorCodes.IoError, $"{path}: is a directory");
        }
        try
        {
            await using var stream = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.ReadWrite, bufferSize: 0);
            byte[] buffer = new byte[Frame.ChunkSize];
            int n;
            while ((n = await stream.ReadAsync(buffer, context.Cancellation)) > 0)
            {
                await context.SendAsync(FrameType.Data, buffer.AsMemory(0, n), context.Cancellation);
            }
        }
        catch (Exception e) when (AgentException.IsIo(e))
        {
            throw AgentException.FromIo(e, path);
        }
        await context.SendAsync(FrameType.DataEnd, ReadOnlyMemory<byte>.Empty, context.Cancellation);
        await context.RespondAsync(FileSystem.Describe(path), ProtocolJson.Default.FileInfoBody);
    }

    public static async Task ListAsync(OperationContext context, AgentState state)
    {
        string path = state.ResolvePath(RequireFile(context).Path);
        if (FileSystem.Describe(path).Kind != FileKind.Directory)
        {
            throw new AgentException(ErrorCodes.IoError, $"{path}: not a directory");
        }
        var body = new FileListBody { Path = path };
        try
        {
            foreach (string entry in Directory.EnumerateFileSystemEntries(path))
            {
                // An entry removed while listing is simply left out.
                if (FileSystem.TryDescribe(entry) is { } info)
                {
                    body.Entries.Add(info);
                }
            }
        }
        catch (Exception e) when (AgentException.IsIo(e))
        {
            throw AgentException.FromIo(e, path);
        }
        body.Entries.Sort((a, b) => string.CompareOrdinal(a.Name, b.Name));
        await context.RespondAsync(body, ProtocolJson.Default.FileListBody);
    }

    public static async Task StatAsync(OperationContext context, AgentState state)
    {
        string path = state.ResolvePath(RequireFile(context).Path);
        await context.RespondAsync(FileSystem.Describe(path), ProtocolJson.Default.FileInfoBody);
    }

    public static async Task RemoveAsync(OperationContext context, AgentState state)
    {
        var request = RequireFile(context);
        string path = state.ResolvePath(request.Path);
        var info = FileSystem.Describe(path);
        try
        {
            if (info.Kind == FileKind.Directory)
            {
                Directory.Delete(path, request.Recursive);
            }
            else
            {
                File.Delete(path);
            }
        }
        catch (IOException) when (info.Kind == FileKind.Directory && !request.Recursive && Directory.Exists(path))
        {
            throw new AgentException(ErrorCodes.IoError, $"{path}: directory not empty (set recursive to remove it)");
        }
        catch (Exception e) when (AgentException.IsIo(e))
        {
            throw AgentException.FromIo(e, path);
        }
        await context.RespondAsync(new OkBody(), ProtocolJson.Default.OkBody);
    }

    /// <summary>Creates a directory; with Recursive its parents too. An existing directory is fine (like mkdir -p).</summary>
    public static async Task MkdirAsync(OperationContext context, AgentState state)
    {
        var request = RequireFile(context);
        string path = state.ResolvePath(request.Path);
        var existing = FileSystem.TryDescribe(path);
        if (existing is not null && existing.Kind != FileKind.Directory)
        {
            throw new AgentException(ErrorCodes.IoError, $"{path}: exists and is not a directory");
        }
        if (existing is null)
        {
            string parent = Path.GetDirectoryName(path) ?? "/";
            if (!request.Recursive && FileSystem.TryDescribe(parent)?.Kind != FileKind.Directory)
            {
                throw AgentException.NotFound(parent);
            }
            try
            {
                state.Options.User.CreateDirectory(path);
            }
            catch (Exception e) when (AgentException.IsIo(e))
            {
                throw AgentException.FromIo(e, path);
            }
        }
        await context.RespondAsync(FileSystem.Describe(path), ProtocolJson.Default.FileInfoBody);
    }

    /// <summary>Artifacts under the agent's outputs directory, or under <c>file.path</c> when the request gives one.</summary>
    public static async Task ListArtifactsAsync(OperationContext context, AgentState state)
    {
        string root = context.Request.File is { Path.Length: > 0 } file
            ? state.ResolvePath(file.Path)
            : state.Options.OutputsDir;
        var body = new ArtifactListBody { Artifacts = await FileSystem.ListArtifactsAsync(root, context.Cancellation) };
        await context.RespondAsync(body, ProtocolJson.Default.ArtifactListBody);
    }

    private static FileRequest RequireFile(OperationContext context) =>
        context.Request.File ?? throw AgentException.BadRequest($"{context.Request.Op} needs a 'file' member");
}
