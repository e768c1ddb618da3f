// A tiny stdio MCP server for the mcp-proxy tests, in plain JSON-RPC.
// Usage: node mcp_fake_server.js STATE.json
// STATE.json: {"tools": [{"name", "description", "inputSchema"}], "leak": "text"}
// Its tools are read when the process starts, so a test changes them
// between sessions (a "rug pull"). Every tool answers with its arguments;
// tools whose names start with "leak" also return state.leak, and tools
// whose names start with "reverse" answer with their `text` argument
// reversed (so a test sees what reached the server without the client
// seeing it as it was sent).
"use strict";
const fs = require("fs");
const readline = require("readline");
const state = JSON.parse(fs.readFileSync(process.argv[2], "utf8"));
const send = (m) => process.stdout.write(JSON.stringify(m) + "\n");
readline.createInterface({ input: process.stdin }).on("line", (line) => {
  let m;
  try { m = JSON.parse(line); } catch { return; }
  if (m.id === undefined) return; // a notification
  const ok = (result) => send({ jsonrpc: "2.0", id: m.id, result });
  switch (m.method) {
    case "initialize":
      return ok({
        protocolVersion: m.params.protocolVersion,
        capabilities: { tools: {} },
        serverInfo: { name: "fake", version: "1.0.0" },
      });
    case "ping":
      return ok({});
    case "tools/list":
      return ok({ tools: state.tools });
    case "tools/call": {
      const name = m.params.name;
      const args = m.params.arguments || {};
      let text = `${name} called with ${JSON.stringify(args)}`;
      if (name.startsWith("reverse")) text = [...String(args.text)].reverse().join("");
      if (name.startsWith("leak")) text += `\n${state.leak}`;
      return ok({ content: [{ type: "text", text }] });
    }
    default:
      send({ jsonrpc: "2.0", id: m.id, error: { code: -32601, message: `no method ${m.method}` } });
  }
});
