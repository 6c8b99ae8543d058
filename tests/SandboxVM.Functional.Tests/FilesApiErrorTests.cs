using System.Text.Json;

namespace SandboxVM.Functional.Tests;

/// <summary>
/// The files API answers every read it cannot serve with a problem and a 4xx: /proc pseudo-files (whose
/// size says 0), devices, pipes, directories, missing files. It answered 500 for /proc files.
/// </summary>
[Collection(ProcessServer.Collection)]
[Trait("tier", "vm")]
public sealed class FilesApiErrorTests(ProcessServer server)
{
    private static CancellationToken Ct => TestContext.Current.CancellationToken;

    [Fact]
    public async Task FilesApi_ReadsOfProcAndOtherNonFiles_AnswerA4xxProblem()
    {
        string id = await server.CreateSandboxAsync("python-data-analysis", Ct);
        try
        {
            foreach (var (path, status, problem) in new[]
            {
                ("/proc/self/status", 400, "not_regular_file"),   // a pseudo-file: stat says 0 bytes, it has more
                ("/proc/1/cmdline", 400, "not_regular_file"),
                ("/proc/self/fd/0", 400, null),                    // a pipe
                ("/dev/zero", 400, "invalid_path"),                // a device
                ("/tmp", 400, "invalid_path"),                     // a directory
                ("/no/such/file", 404, "file_not_found"),
            })
            {
                using var response = await server.Http.GetAsync($"/v1/sandboxes/{id}/files?path={Uri.EscapeDataString(path)}", Ct);
                string body = await response.Content.ReadAsStringAsync(Ct);
                Assert.True((int)response.StatusCode == status, $"{path}: {(int)response.StatusCode} {body}");
                Assert.Equal("application/problem+json", response.Content.Headers.ContentType?.MediaType);
                if (problem is not null)
                {
                    Assert.Equal(problem, JsonDocument.Parse(body).RootElement.GetProperty("code").GetString());
                }
            }
            // The sandbox is fine afterwards: a regular file still downloads whole.
            using (var put = await server.Http.PutAsync($"/v1/sandboxes/{id}/files?path=ok.txt", new StringContent("still here"), Ct))
            {
                Assert.True(put.IsSuccessStatusCode, await put.Content.ReadAsStringAsync(Ct));
            }
            Assert.Equal("still here", await server.Http.GetStringAsync($"/v1/sandboxes/{id}/files?path=ok.txt", Ct));
        }
        finally
        {
            await server.DeleteSandboxAsync(id);
        }
    }
}
