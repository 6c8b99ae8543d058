using System.Net;
using System.Text;

namespace SandboxVM.Client.Tests;

/// <summary>Answers every request with a canned response and remembers what was sent (no network).</summary>
internal sealed class FakeHandler : HttpMessageHandler
{
    private readonly Func<HttpRequestMessage, HttpResponseMessage> _respond;

    public FakeHandler(Func<HttpRequestMessage, HttpResponseMessage> respond) => _respond = respond;

    public FakeHandler(HttpStatusCode status, string body, string mediaType = "application/json")
        : this(_ => Response(status, body, mediaType))
    {
    }

    public List<HttpRequestMessage> Requests { get; } = [];

    public List<string?> Bodies { get; } = [];

    public HttpRequestMessage LastRequest => Requests[^1];

    public string? LastBody => Bodies[^1];

    public static HttpResponseMessage Response(HttpStatusCode status, string body, string mediaType = "application/json") =>
        new(status) { Content = new StringContent(body, Encoding.UTF8, mediaType) };

    public static HttpResponseMessage Problem(HttpStatusCode status, string code, string? field = null, string detail = "it failed") =>
        Response(
            status,
            $$"""{"type":"about:blank","title":"Request failed","status":{{(int)status}},"detail":"{{detail}}","code":"{{code}}","field":{{(field is null ? "null" : $"\"{field}\"")}}}""",
            "application/problem+json");

    protected override async Task<HttpResponseMessage> SendAsync(HttpRequestMessage request, CancellationToken cancellationToken)
    {
        Requests.Add(request);
        Bodies.Add(request.Content is null ? null : await request.Content.ReadAsStringAsync(cancellationToken));
        var response = _respond(request);
        response.RequestMessage = request;
        return response;
    }
}
