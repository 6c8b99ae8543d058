using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Routing;
using SandboxVM.Core.Sessions;

namespace SandboxVM.Server;

/// <summary>
/// /v1/admin: every caller's sandboxes and the keys in use, for an admin key only (the caller middleware
/// answers 403 to others). No key or hash is ever shown.
/// </summary>
internal static class AdminEndpoints
{
    public static void Map(IEndpointRouteBuilder app)
    {
        var g = app.MapGroup(CallerMiddleware.AdminPath);
        g.MapGet("/sandboxes", (SessionManager sessions) => Results.Json(new
        {
            sandboxes = sessions.List().Select(s => new
            {
                id = s.Id,
                owner = s.Owner,
                template = s.Template.Name,
                state = s.State.ToString().ToLowerInvariant(),
                created_at = s.CreatedAt.UtcDateTime,
                expires_at = s.ExpiresAt.UtcDateTime,
                last_activity_at = s.LastActivityAt.UtcDateTime,
            }).ToList(),
        }));
        g.MapDelete("/sandboxes/{id}", async (string id, SessionManager sessions) =>
            await sessions.DeleteAsync(id)
                ? Results.NoContent()
                : Problems.Result(404, SandboxVM.Core.Runs.ProblemCodes.SandboxNotFound, null, $"no live sandbox '{id}'"));
        g.MapGet("/keys", (CallerStore callers, SessionManager sessions) =>
        {
            var live = sessions.List().GroupBy(s => s.Owner).ToDictionary(x => x.Key, x => x.Count(), StringComparer.Ordinal);
            return Results.Json(new
            {
                keys_required = callers.KeysRequired,
                keys_file = callers.FilePath,
                keys = callers.All.Select(c => new
                {
                    name = c.Name,
                    admin = c.Admin,
                    limits = new
                    {
                        sandboxes = c.Limits.Sandboxes,
                        runs_per_minute = c.Limits.RunsPerMinute,
                        concurrent_runs = c.Limits.ConcurrentRuns,
                        searches_per_minute = c.Limits.SearchesPerMinute,
                    },
                    sandboxes_live = live.GetValueOrDefault(c.Name),
                }).ToList(),
            });
        });
    }
}
