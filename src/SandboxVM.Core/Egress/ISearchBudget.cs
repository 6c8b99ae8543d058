namespace SandboxVM.Core.Egress;

/// <summary>
/// How many searches a sandbox (and the caller it belongs to) may ask the host for. A search a guest
/// asks for costs the host a call to a paid or rate-limited service, so it is budgeted like a connection.
/// </summary>
public interface ISearchBudget
{
    /// <summary>Takes one search for the sandbox on VM <paramref name="vmId"/>; null when allowed, else why not.</summary>
    string? TryTake(string vmId);
}
