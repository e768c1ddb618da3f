// End-to-end checks of `airlock mcp` with the official MCP TypeScript SDK
// (npm @modelcontextprotocol/sdk), over stdio. Started by
// crates/airlock/tests/mcp/typescript.rs with NODE_PATH pointing at the
// installed SDK. Usage: node mcp_client_ts.mjs AIRLOCK_BIN WS
import { createRequire } from "node:module";
import { execFileSync } from "node:child_process";
import { existsSync } from "node:fs";

const require = createRequire(process.env.NODE_PATH + "/");
const { Client } = require("@modelcontextprotocol/sdk/client/index.js");
const { StdioClientTransport } = require("@modelcontextprotocol/sdk/client/stdio.js");

const [AIRLOCK, WS] = process.argv.slice(2);
const HOME = process.env.HOME;
const failures = [];
const check = (name, cond, detail = "") => {
  console.log((cond ? "ok   " : "FAIL ") + name + (cond ? "" : `: ${typeof detail === "string" ? detail : JSON.stringify(detail)}`));
  if (!cond) failures.push(name);
};
const human = (...args) => execFileSync(AIRLOCK, args, { encoding: "utf8" });
const text = (r) => (r.content || []).filter((c) => c.type === "text").map((c) => c.text).join("\n");

const transport = new StdioClientTransport({
  command: AIRLOCK,
  args: ["mcp", "--no-embedded", WS],
  env: { HOME, XDG_RUNTIME_DIR: process.env.XDG_RUNTIME_DIR, AIRLOCK_LOG: "info" },
  stderr: "inherit",
});
const client = new Client({ name: "airlock-ts-check", version: "1.0.0" });
await client.connect(transport);

const { tools } = await client.listTools();
const names = tools.map((t) => t.name);
check("tools/list", ["read_text_file", "write_file", "edit_file", "run_command", "staged_changes"].every((n) => names.includes(n)), names);

let r = await client.callTool({ name: "read_text_file", arguments: { path: `${WS}/report.txt` } });
check("allowed read", !r.isError && text(r) === "Q4 revenue: 100\n", text(r));

r = await client.callTool({ name: "read_text_file", arguments: { path: `${WS}/.env` } });
check("credential file denied by policy", r.isError && text(r).includes("Airlock denied") && !text(r).includes("canary"), text(r));

r = await client.callTool({ name: "read_text_file", arguments: { path: `${WS}/innocent.txt` } });
check("symlink to ~/.ssh refused", r.isError && !text(r).includes("canary"), text(r));

r = await client.callTool({ name: "read_text_file", arguments: { path: `${WS}-evil/secret.txt` } });
check("prefix trick refused", r.isError && text(r).includes("Access denied"), text(r));

r = await client.callTool({ name: "write_file", arguments: { path: `${WS}/ts.txt`, content: "from ts\n" } });
check("staged write", !r.isError && text(r).includes("staged for review") && !existsSync(`${WS}/ts.txt`), text(r));
r = await client.callTool({ name: "read_text_file", arguments: { path: `${WS}/ts.txt` } });
check("reads its staged write", text(r) === "from ts\n", text(r));

r = await client.callTool({ name: "write_file", arguments: { path: `${WS}/x.txt` } });
check("bad arguments are a tool error", r.isError && text(r).includes("Invalid arguments"), text(r));

let approved = false;
r = await client.callTool(
  { name: "run_command", arguments: { argv: ["echo", "from-sandbox"] } },
  undefined,
  {
    timeout: 60000,
    resetTimeoutOnProgress: true,
    onprogress: (p) => {
      if (!approved && p.message && p.message.includes("approvals approve")) {
        approved = true;
        const id = p.message.split("approval ")[1].split(" ")[0];
        human("approvals", "approve", id);
      }
    },
  },
);
check("ask resolved by the human, then run in the sandbox", approved && text(r).includes("from-sandbox"), text(r));

await client.close();
console.log(JSON.stringify({ failures }));
process.exit(failures.length ? 1 : 0);
