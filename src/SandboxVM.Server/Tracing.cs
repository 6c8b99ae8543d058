using Microsoft.Extensions.DependencyInjection;
using OpenTelemetry.Exporter;
using OpenTelemetry.Resources;
using OpenTelemetry.Trace;
using SandboxVM.Core;
using SandboxVM.Core.Runs;

namespace SandboxVM.Server;

/// <summary>
/// Traces by OTLP: the runs' phase spans (<see cref="RunTracing"/>) under ASP.NET Core's request spans,
/// sent to <see cref="SandboxVmOptions.OtlpEndpoint"/> (HTTP/protobuf, <c>/v1/traces</c> appended as the
/// OTLP specification says for a base URL) or, without it, to where the standard
/// <c>OTEL_EXPORTER_OTLP_*</c> environment variables say. Neither set: no tracer at all.
/// </summary>
internal static class Tracing
{
    public const string ServiceName = "sandboxvm";

    public static void AddServices(IServiceCollection services, SandboxVmOptions options)
    {
        string? endpoint = options.OtlpEndpoint;
        if (string.IsNullOrEmpty(endpoint) && string.IsNullOrEmpty(Environment.GetEnvironmentVariable("OTEL_EXPORTER_OTLP_ENDPOINT")))
        {
            return;
        }
        services.AddOpenTelemetry()
            .ConfigureResource(r => r.AddService(ServiceName))
            .WithTracing(t => t
                .AddSource(RunTracing.SourceName)
                .AddAspNetCoreInstrumentation()
                .AddOtlpExporter(o =>
                {
                    if (!string.IsNullOrEmpty(endpoint))
                    {
                        o.Protocol = OtlpExportProtocol.HttpProtobuf;
                        o.Endpoint = new Uri(endpoint.TrimEnd('/') + "/v1/traces");
                    }
                }));
    }
}
