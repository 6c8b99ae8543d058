using System.Collections.Concurrent;
using Microsoft.Extensions.Logging;
using SandboxVM.Core.Templates;
using SandboxVM.Egress;
using SandboxVM.Egress.Search;
using SandboxVM.Protocol;
using SandboxVM.Runtime;
using SandboxVM.Runtime.Agent;

namespace SandboxVM.Core.Egress;

/// <summary>
/// Connects sandboxes of <c>network.mode: proxy</c> templates to the host's way out: sets a request
/// handler on their agent channel that answers <c>egress_open</c> through an <see cref="EgressGateway"/>
/// (the template's policy plus <see cref="SandboxVmOptions.EgressAllow"/>) and <c>search</c> through the
/// configured <see cref="ISearchProvider"/> (within the <see cref="SearchBudget"/>), then tells the agent to
/// start its HTTP proxy. Sandboxes of other templates get no handler, so the host refuses anything their
/// agent opens.
/// </summary>
public sealed partial class EgressBridge : IDisposable
{
    private readonly SandboxVmOptions _options;
    private readonly ILogger _logger;
    private readonly ILoggerFactory _loggers;
    private readonly IEgressResolver? _resolver;
    private readonly TimeProvider _time;
    private readonly ConcurrentDictionary<string, EgressGateway> _gateways = new(StringComparer.Ordinal);
    private readonly Lazy<(ISearchProvider? Provider, string? NotConfigured)> _search;
    private HttpClient? _searchHttp;

    /// <param name="options">Extra allow rules and ports, guest proxy address, search settings.</param>
    /// <param name="loggers">Loggers of the bridge and its gateways (every egress decision is logged).</param>
    /// <param name="resolver">Name resolution for the gateways; the system resolver when null (tests map names without DNS).</param>
    /// <param name="search">A search provider to use instead of the one <paramref name="options"/> configure.</param>
    /// <param name="time">The clock of the search timeout and the gateways' rate windows; null: the system clock.</param>
    public EgressBridge(SandboxVmOptions options, ILoggerFactory loggers, IEgressResolver? resolver = null, ISearchProvider? search = null, TimeProvider? time = null)
    {
        _options = options;
        _time = time ?? TimeProvider.System;
        _loggers = loggers;
        _logger = loggers.CreateLogger<EgressBridge>();
        _resolver = resolver;
        _search = new Lazy<(ISearchProvider?, string?)>(() => search is not null ? (search, null) : CreateSearch());
    }

    /// <summary>How long a search may take, end to end.</summary>
    public TimeSpan SearchTimeout { get; init; } = TimeSpan.FromSeconds(20);

    /// <summary>Searches each sandbox may make; none counted when null.</summary>
    public ISearchBudget? SearchBudget { get; init; }

    public static bool NeedsEgress(TemplateDefinition template) => template.Network.Mode == NetworkMode.Proxy;

    /// <summary>The policy for <paramref name="template"/>: its allow rules plus the server's, its deny rules, its ports plus the server's.</summary>
    public EgressPolicy PolicyFor(TemplateDefinition template)
    {
        IEnumerable<int>? ports = template.Network.Ports;
        if (_options.EgressPorts.Count > 0)
        {
            ports = (ports ?? EgressPolicy.DefaultPorts).Concat(_options.EgressPorts);
        }
        return EgressPolicy.Create(template.Network.Allow.Concat(_options.EgressAllow), template.Network.Deny, ports);
    }

    /// <summary>
    /// Gives <paramref name="vm"/> its way out when its template has one (idempotent): the handler, then
    /// <c>egress_enable</c>. For other templates makes sure the channel has no handler.
    /// </summary>
    public async Task AttachAsync(TemplateDefinition template, IVm vm, CancellationToken cancellationToken)
    {
        if (!NeedsEgress(template))
        {
            vm.Agent.RequestHandler = null;
            return;
        }
        if (vm.Agent.RequestHandler is Handler h && h.VmId == vm.Id)
        {
            return;
        }
        var gateway = _gateways.GetOrAdd(template.Name, _ => new EgressGateway(PolicyFor(template),
            new EgressGatewayOptions
            {
                UpstreamProxy = UpstreamProxy.FromEnvironment(),
                MaxConnectionsPerSandbox = _options.EgressMaxConnections,
                MaxConnectionsPerMinutePerSandbox = _options.EgressMaxConnectionsPerMinute,
                MaxBytesPerSecondPerSandbox = _options.EgressMaxBytesPerSecond,
                TimeProvider = _time,
            },
            _loggers.CreateLogger("SandboxVM.Egress.EgressGateway"), _resolver));
        vm.Agent.RequestHandler = new Handler(this, gateway, vm.Id);
        _ = vm.Exited.ContinueWith(_ => gateway.Forget(vm.Id), TaskScheduler.Default);
        string listen = await vm.Agent.EnableEgressAsync(_options.EgressListen, cancellationToken);
        LogAttached(_logger, vm.Id, template.Name, listen);
    }

    private (ISearchProvider?, string?) CreateSearch()
    {
        try
        {
            _searchHttp = SearchProviderFactory.CreateHttpClient(UpstreamProxy.FromEnvironment());
            var provider = SearchProviderFactory.Create(new SearchOptions
            {
                Provider = _options.SearchProvider,
                BaseUrl = _options.SearchBaseUrl,
                ApiKey = _options.SearchApiKey,
            }, _searchHttp);
            return (provider, null);
        }
        catch (Exception e) when (e is SearchNotConfiguredException or FormatException)
        {
            return (null, e.Message);
        }
    }

    public void Dispose() => _searchHttp?.Dispose();

    private sealed class Handler(EgressBridge owner, EgressGateway gateway, string vmId) : IAgentRequestHandler
    {
        public string VmId => vmId;

        public Task HandleAsync(AgentIncomingRequest request, CancellationToken cancellationToken) => request.Request.Op switch
        {
            Ops.EgressOpen => OpenAsync(request, cancellationToken),
            Ops.Search => SearchAsync(request, cancellationToken),
            _ => request.FailAsync(ErrorCodes.UnknownOp, $"unknown op '{request.Request.Op}'"),
        };

        private async Task OpenAsync(AgentIncomingRequest request, CancellationToken cancellationToken)
        {
            var target = request.Request.EgressOpen;
            if (target is null)
            {
                await request.FailAsync(EgressReasonCodes.InvalidRequest, "egress_open needs host and port");
                return;
            }
            await using var connection = await gateway.ConnectAsync(new EgressRequest(vmId, target.Host, target.Port), cancellationToken);
            if (!connection.IsConnected)
            {
                await request.FailAsync(connection.Decision.ReasonCode, connection.Decision.Message);
                return;
            }
            await request.RespondAsync(new OkBody(), ProtocolJson.Default.OkBody);
            await request.Stream.RelayAsync(connection.Stream!, connection.ShutdownWrite, ReadOnlyMemory<byte>.Empty, cancellationToken);
        }

        private async Task SearchAsync(AgentIncomingRequest request, CancellationToken cancellationToken)
        {
            var (provider, notConfigured) = owner._search.Value;
            var search = request.Request.Search;
            if (provider is null)
            {
                await request.FailAsync(ErrorCodes.SearchNotConfigured, notConfigured ?? "web search is not configured");
                return;
            }
            if (search is null)
            {
                await request.FailAsync("invalid_argument", "search needs a query");
                return;
            }
            if (owner.SearchBudget?.TryTake(vmId) is { } refused)
            {
                LogSearchRefused(owner._logger, vmId, refused);
                await request.FailAsync(EgressReasonCodes.RateLimited, refused);
                return;
            }
            using var expiry = new CancellationTokenSource(owner.SearchTimeout, owner._time);
            using var timeout = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken, expiry.Token);
            try
            {
                var results = await provider.SearchAsync(search.Query, search.MaxResults, timeout.Token);
                LogSearch(owner._logger, vmId, provider.Name, results.Count);
                await request.RespondAsync(new SearchReply
                {
                    Results = [.. results.Select(r => new SearchHit { Title = r.Title, Url = r.Url, Snippet = r.Snippet })],
                }, ProtocolJson.Default.SearchReply);
            }
            catch (ArgumentException e)
            {
                await request.FailAsync("invalid_argument", e.Message);
            }
            catch (SearchNotConfiguredException e)
            {
                await request.FailAsync(ErrorCodes.SearchNotConfigured, e.Message);
            }
            catch (Exception e) when (e is SearchFailedException or HttpRequestException
                                          || (e is OperationCanceledException && !cancellationToken.IsCancellationRequested))
            {
                LogSearchFailed(owner._logger, vmId, provider.Name, e.Message);
                await request.FailAsync(ErrorCodes.SearchFailed, e is OperationCanceledException
                    ? $"web search did not answer within {owner.SearchTimeout.TotalSeconds:0} s" : e.Message);
            }
        }
    }

    [LoggerMessage(Level = LogLevel.Information, Message = "egress attached to vm {Vm} (template {Template}); guest proxy on {Listen}")]
    private static partial void LogAttached(ILogger logger, string vm, string template, string listen);

    [LoggerMessage(Level = LogLevel.Information, Message = "search from vm {Vm} via {Provider}: {Count} results")]
    private static partial void LogSearch(ILogger logger, string vm, string provider, int count);

    [LoggerMessage(Level = LogLevel.Warning, Message = "search from vm {Vm} refused: {Reason}")]
    private static partial void LogSearchRefused(ILogger logger, string vm, string reason);

    [LoggerMessage(Level = LogLevel.Warning, Message = "search from vm {Vm} via {Provider} failed: {Message}")]
    private static partial void LogSearchFailed(ILogger logger, string vm, string provider, string message);
}
