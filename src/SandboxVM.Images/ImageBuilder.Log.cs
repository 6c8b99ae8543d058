using Microsoft.Extensions.Logging;

namespace SandboxVM.Images;

public sealed partial class ImageBuilder
{
    [LoggerMessage(Level = LogLevel.Debug, Message = "Template {Template}: {Phase} {Key} is cached")]
    private partial void LogCached(string template, string phase, string key);

    [LoggerMessage(Level = LogLevel.Information, Message = "Template {Template}: {Step}")]
    private partial void LogBaseStep(string template, string step);
}
