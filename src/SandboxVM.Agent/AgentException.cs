using SandboxVM.Protocol;

namespace SandboxVM.Agent;

/// <summary>Ends an operation with an Error frame carrying <see cref="Code"/>.</summary>
internal sealed class AgentException(string code, string message) : Exception(message)
{
    /// <summary>Error code for an operation stopped by a Cancel frame (not yet in <see cref="ErrorCodes"/>).</summary>
    public const string Cancelled = "cancelled";

    public string Code { get; } = code;

    public static AgentException BadRequest(string message) => new(ErrorCodes.BadRequest, message);

    public static AgentException NotFound(string path) => new(ErrorCodes.NotFound, $"{path}: no such file or directory");

    /// <summary>True for the exceptions file system calls throw.</summary>
    public static bool IsIo(Exception e) => e is IOException or UnauthorizedAccessException;

    /// <summary>Maps a file system exception to not_found or io_error with a message naming the path.</summary>
    public static AgentException FromIo(Exception e, string path) => e switch
    {
        FileNotFoundException or DirectoryNotFoundException => NotFound(path),
        UnauthorizedAccessException => new(ErrorCodes.PermissionDenied, $"{path}: permission denied"),
        _ => new(ErrorCodes.IoError, $"{path}: {e.Message}"),
    };
}
