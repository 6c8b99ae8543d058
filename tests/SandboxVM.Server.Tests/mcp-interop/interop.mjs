// Drives SandboxVM's Streamable HTTP MCP endpoint with the official TypeScript SDK, as a client nobody
// here wrote: lists the tools and runs the code given on stdin with run_code. Prints one JSON object
// (tools, the call's content, isError) on stdout for McpInteropTests to check; exit 1 with the error otherwise.
// Usage: node interop.mjs MCP_URL API_KEY TEMPLATE < code.py
import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { StreamableHTTPClientTransport } from "@modelcontextprotocol/sdk/client/streamableHttp.js";

const [url, apiKey, template] = process.argv.slice(2);
const chunks = [];
for await (const chunk of process.stdin) chunks.push(chunk);
const code = Buffer.concat(chunks).toString("utf8");

const transport = new StreamableHTTPClientTransport(new URL(url), {
  requestInit: { headers: apiKey ? { Authorization: `Bearer ${apiKey}` } : {} },
});
const client = new Client({ name: "sandboxvm-interop", version: "1.0.0" });
try {
  await client.connect(transport);
  const { tools } = await client.listTools();
  const result = await client.callTool({ name: "run_code", arguments: { template, code } }, undefined, { timeout: 120000 });
  process.stdout.write(JSON.stringify({
    sessionId: transport.sessionId ?? null,
    tools: tools.map(t => ({ name: t.name, description: t.description, required: t.inputSchema?.required ?? [] })),
    isError: result.isError ?? false,
    content: result.content,
  }));
  await transport.terminateSession();
  await client.close();
} catch (e) {
  console.error(`interop: ${e?.stack ?? e}`);
  process.exit(1);
}
