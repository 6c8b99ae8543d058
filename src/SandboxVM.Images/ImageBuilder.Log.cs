using Microsoft.Extensions.Logging;

namespace SandboxVM.Images;

public sealed partial class ImageBuilder
{
    [LoggerMessage(Level = LogLevel.Debug, Message = "Template {Template}: {Phase} {Key} is cached")]
    private partial void LogCached(string template, string phase, string key);

    [LoggerMessage(Level = LogLevel.Information, Message = "Template {Template}: building {Phase} {Key}")]
    private partial void LogBuilding(string template, string phase, string key);

    [LoggerMessage(Level = LogLevel.Information, Message = "Template {Template}: built {Phase} {Key} in {Seconds:F1} s")]
    private partial void LogBuilt(string template, string phase, string key, double seconds);

    [LoggerMessage(Level = LogLevel.Warning, Message = "Template {Template}: building {Phase} {Key} failed")]
    private partial void LogBuildFailed(Exception exception, string template, string phase, string key);

    [LoggerMessage(Level = LogLevel.Information, Message = "Template {Template}: {Step}")]
    private partial void LogBaseStep(string template, string step);

    [LoggerMessage(Level = LogLevel.Information, Message = "Waiting for another build of {Phase} {Key}")]
    private partial void LogWaitingForLock(string phase, string key);

    [LoggerMessage(Level = LogLevel.Information, Message = "Removing leftover of an interrupted build: {Path}")]
    private partial void LogRemovingStale(string path);

    [LoggerMessage(Level = LogLevel.Warning, Message = "Could not remove {Path}; the next build will retry")]
    private partial void LogDeleteFailed(Exception exception, string path);
}
