using System.Text.Json.Nodes;
using SandboxVM.Runtime.Qemu;

namespace SandboxVM.Runtime.Tests;

[Trait("tier", "unit")]
public sealed class QmpClientTests
{
    private static CancellationToken Ct => TestContext.Current.CancellationToken;

    [Fact]
    public async Task Connect_reads_the_greeting_and_negotiates_capabilities()
    {
        await using var server = new FakeQmpServer();
        await using var client = await QmpClient.ConnectAsync(server.SocketPath, Ct);

        Assert.True(server.CapabilitiesNegotiated);
        Assert.Equal(7, client.Greeting["QMP"]!["version"]!["qemu"]!["major"]!.GetValue<int>());
    }

    [Fact]
    public async Task Execute_sends_arguments_with_an_id_and_returns_the_return_member()
    {
        await using var server = new FakeQmpServer
        {
            Handler = c => [FakeQmpServer.Return(c, new JsonObject { ["status"] = "paused", ["running"] = false })],
        };
        await using var client = await QmpClient.ConnectAsync(server.SocketPath, Ct);

        var status = await client.ExecuteAsync("query-status", new JsonObject { ["x"] = 1 }, Ct);

        Assert.Equal("paused", status!["status"]!.GetValue<string>());
        var sent = Assert.Single(server.Received);
        Assert.Equal("query-status", sent["execute"]!.GetValue<string>());
        Assert.Equal(1, sent["arguments"]!["x"]!.GetValue<int>());
        Assert.NotNull(sent["id"]);
    }

    [Fact]
    public async Task Errors_become_QmpException_with_class_and_description()
    {
        await using var server = new FakeQmpServer
        {
            Handler = c => [FakeQmpServer.Error(c, "CommandNotFound", "The command nope has not been found")],
        };
        await using var client = await QmpClient.ConnectAsync(server.SocketPath, Ct);

        var e = await Assert.ThrowsAsync<QmpException>(() => client.ExecuteAsync("nope", null, Ct));

        Assert.Equal("nope", e.Command);
        Assert.Equal("CommandNotFound", e.ErrorClass);
        Assert.Equal("The command nope has not been found", e.Description);
    }

    [Fact]
    public async Task Events_before_a_reply_are_queued_and_do_not_answer_the_command()
    {
        await using var server = new FakeQmpServer
        {
            Handler = c =>
            [
                FakeQmpServer.Event("STOP"),
                FakeQmpServer.Event("MIGRATION", new JsonObject { ["status"] = "completed" }),
                FakeQmpServer.Return(c, new JsonObject { ["done"] = true }),
            ],
        };
        await using var client = await QmpClient.ConnectAsync(server.SocketPath, Ct);

        var result = await client.ExecuteAsync("stop", null, Ct);

        Assert.True(result!["done"]!.GetValue<bool>());
        var first = await client.Events.ReadAsync(Ct);
        var second = await client.Events.ReadAsync(Ct);
        Assert.Equal("STOP", first.Name);
        Assert.Equal(DateTimeOffset.FromUnixTimeSeconds(1700000000).AddTicks(50), first.Timestamp);
        Assert.Equal("MIGRATION", second.Name);
        Assert.Equal("completed", second.Data!["status"]!.GetValue<string>());
    }

    [Fact]
    public async Task Replies_are_matched_by_id_even_out_of_order()
    {
        JsonObject? held = null;
        var firstArrived = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        await using var server = new FakeQmpServer();
        // The first command's reply is held back and sent after the second's.
        server.Handler = c =>
        {
            if (held is null)
            {
                held = c;
                firstArrived.SetResult();
                return [];
            }
            return [FakeQmpServer.Return(c, "second"), FakeQmpServer.Return(held, "first")];
        };
        await using var client = await QmpClient.ConnectAsync(server.SocketPath, Ct);

        var first = client.ExecuteAsync("a", null, Ct);
        await firstArrived.Task.WaitAsync(Ct);
        var second = client.ExecuteAsync("b", null, Ct);

        Assert.Equal("first", (await first)!.GetValue<string>());
        Assert.Equal("second", (await second)!.GetValue<string>());
    }

    [Fact]
    public async Task A_file_descriptor_travels_with_its_command()
    {
        await using var server = new FakeQmpServer();
        await using var client = await QmpClient.ConnectAsync(server.SocketPath, Ct);
        string file = Path.GetTempFileName();
        try
        {
            using (var handle = File.OpenHandle(file, FileMode.Open, FileAccess.Write))
            {
                await client.ExecuteWithFdAsync("getfd", new JsonObject { ["fdname"] = "state" }, handle, Ct);
            }
            // The server writes through its own copy of the descriptor, after ours is closed.
            var received = Assert.Single(server.ReceivedFds);
            RandomAccess.Write(received, "via-fd"u8, 0);
            received.Dispose();

            Assert.Equal("via-fd", await File.ReadAllTextAsync(file, Ct));
            Assert.Equal("state", Assert.Single(server.Received)["arguments"]!["fdname"]!.GetValue<string>());
        }
        finally
        {
            File.Delete(file);
        }
    }

    [Fact]
    public async Task A_closed_connection_fails_pending_and_later_commands()
    {
        var arrived = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        await using var server = new FakeQmpServer { Handler = _ => { arrived.TrySetResult(); return []; } };
        await using var client = await QmpClient.ConnectAsync(server.SocketPath, Ct);

        var pending = client.ExecuteAsync("quit", null, Ct);
        await arrived.Task.WaitAsync(Ct);
        server.Disconnect();

        await Assert.ThrowsAsync<QmpDisconnectedException>(() => pending);
        await client.Completion.WaitAsync(TimeSpan.FromSeconds(5), Ct);
        await Assert.ThrowsAsync<QmpDisconnectedException>(() => client.ExecuteAsync("query-status", null, Ct));
    }

    [Fact]
    public async Task Connect_fails_when_nobody_listens()
    {
        string path = Path.Combine(Path.GetTempPath(), "no-qmp-" + Guid.NewGuid().ToString("N")[..8] + ".sock");
        await Assert.ThrowsAnyAsync<System.Net.Sockets.SocketException>(() => QmpClient.ConnectAsync(path, Ct));
    }

    private static JsonObject Migration(string status) => FakeQmpServer.Event("MIGRATION", new JsonObject { ["status"] = status });

    [Fact]
    public async Task A_migration_wait_ends_on_QEMUs_completed_event_without_polling()
    {
        // As QEMU 10.0 with the events capability: setup, active, completed after migrate(-incoming).
        await using var server = new FakeQmpServer
        {
            Handler = c => c["execute"]!.GetValue<string>() == "migrate-incoming"
                ? [FakeQmpServer.Return(c, new JsonObject()), Migration("setup"), Migration("active"), Migration("completed")]
                : [FakeQmpServer.Return(c, new JsonObject())],
        };
        await using var client = await QmpClient.ConnectAsync(server.SocketPath, Ct);

        await client.ExecuteAsync("migrate-incoming", new JsonObject { ["uri"] = "fd:state" }, Ct);
        await client.WaitForMigrationAsync(Ct);

        Assert.Equal(["migrate-incoming"], server.Received.Select(c => c["execute"]!.GetValue<string>()));
    }

    [Fact]
    public async Task A_failed_migration_throws_with_QEMUs_reason()
    {
        await using var server = new FakeQmpServer
        {
            Handler = c => c["execute"]!.GetValue<string>() switch
            {
                "migrate" => [FakeQmpServer.Return(c, new JsonObject()), Migration("setup"), Migration("failed")],
                "query-migrate" => [FakeQmpServer.Return(c, new JsonObject { ["status"] = "failed", ["error-desc"] = "Unable to write to file" })],
                _ => [FakeQmpServer.Return(c, new JsonObject())],
            },
        };
        await using var client = await QmpClient.ConnectAsync(server.SocketPath, Ct);

        await client.ExecuteAsync("migrate", new JsonObject { ["uri"] = "fd:state" }, Ct);
        var e = await Assert.ThrowsAsync<InvalidOperationException>(() => client.WaitForMigrationAsync(Ct));

        Assert.Equal("migration failed: Unable to write to file", e.Message);
    }

    [Fact]
    public async Task A_migration_wait_fails_when_QEMU_exits_instead()
    {
        // A destination that cannot load the state exits: the wait must end, not run to its deadline.
        var arrived = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        await using var server = new FakeQmpServer { Handler = c => { arrived.TrySetResult(); return [FakeQmpServer.Return(c, new JsonObject()), Migration("active")]; } };
        await using var client = await QmpClient.ConnectAsync(server.SocketPath, Ct);
        await client.ExecuteAsync("migrate-incoming", null, Ct);

        var wait = client.WaitForMigrationAsync(Ct);
        await arrived.Task.WaitAsync(Ct);
        server.Disconnect();

        await Assert.ThrowsAsync<QmpDisconnectedException>(() => wait);
    }

    [Fact]
    public async Task A_migration_wait_ends_at_its_deadline_on_the_injected_clock()
    {
        var clock = new Microsoft.Extensions.Time.Testing.FakeTimeProvider();
        await using var server = new FakeQmpServer();
        await using var client = await QmpClient.ConnectAsync(server.SocketPath, Ct, clock);
        using var deadline = new CancellationTokenSource(TimeSpan.FromSeconds(30), clock);
        using var linked = CancellationTokenSource.CreateLinkedTokenSource(deadline.Token, Ct);

        var wait = client.WaitForMigrationAsync(linked.Token);
        clock.Advance(TimeSpan.FromSeconds(29));
        Assert.False(wait.IsCompleted);
        clock.Advance(TimeSpan.FromSeconds(1));

        await Assert.ThrowsAnyAsync<OperationCanceledException>(() => wait);
    }
    [Fact]
    public async Task Continuing_after_a_save_waits_out_QEMUs_not_finalized_refusal()
    {
        // QEMU sends MIGRATION "completed" before it leaves finish-migrate; a cont in between is refused.
        // (Three refusals cost 15 ms of the client's own waits on the real clock.)
        int refusals = 3;
        await using var server = new FakeQmpServer
        {
            Handler = c => c["execute"]!.GetValue<string>() == "cont" && Interlocked.Decrement(ref refusals) >= 0
                ? [FakeQmpServer.Error(c, "GenericError", "Migration is not finalized yet")]
                : [FakeQmpServer.Return(c, new JsonObject())],
        };
        await using var client = await QmpClient.ConnectAsync(server.SocketPath, Ct);

        await client.ContinueAfterMigrationAsync(Ct).WaitAsync(TimeSpan.FromSeconds(30), Ct);

        Assert.Equal(4, server.Received.Count(c => c["execute"]!.GetValue<string>() == "cont"));
    }

    [Fact]
    public async Task Continuing_after_a_save_does_not_retry_other_refusals()
    {
        await using var server = new FakeQmpServer
        {
            Handler = c => [FakeQmpServer.Error(c, "GenericError", "Resetting the Virtual Machine is required")],
        };
        await using var client = await QmpClient.ConnectAsync(server.SocketPath, Ct);

        var e = await Assert.ThrowsAsync<QmpException>(() => client.ContinueAfterMigrationAsync(Ct));

        Assert.Equal("Resetting the Virtual Machine is required", e.Description);
        Assert.Single(server.Received, c => c["execute"]!.GetValue<string>() == "cont");
    }
}
