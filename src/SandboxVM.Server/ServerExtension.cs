using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Http;
using SandboxVM.Core;

namespace SandboxVM.Server;

/// <summary>
/// A layer around the API that the server itself does not reference (the cluster, src/SandboxVM.Cluster):
/// single-node mode loads none of its assemblies.
/// </summary>
public interface IServerExtension
{
    /// <summary>Adds services before the application is built; <paramref name="urls"/> are where the server listens.</summary>
    void AddServices(WebApplicationBuilder builder, SandboxVmOptions options, IReadOnlyList<string> urls);

    /// <summary>Adds middleware after the caller's key and limits are checked, before the endpoints.</summary>
    void Use(WebApplication app);
}

/// <summary>
/// A caller vouched for by a trusted hop (another node of the cluster, which checked the key): the
/// caller middleware takes it instead of asking for a key.
/// </summary>
public interface ITrustedHop
{
    /// <summary>The caller the request was forwarded for, or null when it is not a trusted hop.</summary>
    Caller? CallerOf(HttpContext context);
}
