#!/usr/bin/env bash
# MCP front door cost, in one run, with the same client (the official MCP
# Python SDK over stdio):
#   read_text_file on a small file through `airlock mcp` (full broker path:
#   policy, token, durable audit records) against the reference
#   @modelcontextprotocol/server-filesystem doing the same read unbrokered;
#   ping through each, as the floor of one MCP round trip;
#   tools/call (server-everything's echo) straight to the server against the
#   same server behind `airlock mcp-proxy` (sandboxed child, broker decision,
#   pin check, secret scan of arguments and result, durable audit), policy
#   allowing MCP calls: the proxy's added latency.
# Prints median and p99 per call, the ratio airlock/reference and the added
# latency of the proxy.
#
#   bench/mcp.sh                          build airlock (release) and measure
#   AIRLOCK=/path/airlock BENCH_RUNS=500 bench/mcp.sh
set -euo pipefail
py="$HOME/.cache/airlock-py/bin/python"
nm="$HOME/.cache/airlock-node/node_modules"
if ! "$py" -c 'import mcp' 2>/dev/null || [ ! -f "$nm/@modelcontextprotocol/server-filesystem/dist/index.js" ] \
    || [ ! -f "$nm/@modelcontextprotocol/server-everything/dist/index.js" ]; then
    echo "bench: run scripts/test.sh once first (it installs the MCP Python SDK and the reference servers)" >&2
    exit 2
fi
. "$(dirname "${BASH_SOURCE[0]}")/common.sh"
exec "$py" - "$AIRLOCK" "$nm" "${BENCH_RUNS:-300}" <<'PYEOF'
import asyncio, os, statistics, subprocess, sys, tempfile, time

from mcp import ClientSession, StdioServerParameters
from mcp.client.stdio import stdio_client

airlock, nm, runs = sys.argv[1], sys.argv[2], int(sys.argv[3])
tmp = tempfile.mkdtemp(prefix="airlock-bench-mcp-")
home, run = os.path.join(tmp, "home"), os.path.join(tmp, "run")
ws = os.path.join(home, "proj")
os.makedirs(ws)
os.makedirs(run, mode=0o700)
with open(os.path.join(ws, "small.txt"), "w") as f:
    f.write("Q4 revenue: 100\n" * 8)
env = {"HOME": home, "XDG_RUNTIME_DIR": run, "PATH": os.environ["PATH"], "AIRLOCK_LOG": "warn"}


def start_broker(env, *args):
    b = subprocess.Popen([airlock, "serve", *args], env=env,
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    sock = os.path.join(env["XDG_RUNTIME_DIR"], "airlock/broker.sock")
    for _ in range(500):
        if os.path.exists(sock):
            break
        time.sleep(0.01)
    time.sleep(0.2)
    return b


brokers = [start_broker(env, "--workspace", ws)]

# A second broker for the proxy, whose only policy allows MCP calls (the
# default policy asks a human for each, which a benchmark cannot answer).
penv = dict(env, HOME=os.path.join(tmp, "phome"), XDG_RUNTIME_DIR=os.path.join(tmp, "prun"))
os.makedirs(os.path.join(penv["HOME"], ".config/airlock/policy"))
os.makedirs(penv["XDG_RUNTIME_DIR"], mode=0o700)
with open(os.path.join(penv["HOME"], ".config/airlock/policy/bench.rego"), "w") as f:
    f.write("""package bench.mcp

import rego.v1

decision := "allow" if input.action in {"mcp_tool", "mcp_resource", "mcp_prompt"}
else := {"decision": "deny", "rule": "only_mcp", "reasons": ["this benchmark allows MCP calls only"]}
""")
pconf = os.path.join(tmp, "proxy-broker.toml")
with open(pconf, "w") as f:
    f.write("[policy]\ninclude_default = false\n")
brokers.append(start_broker(penv, "--config", pconf, "--workspace", ws))
everything = os.path.join(nm, "@modelcontextprotocol/server-everything/dist/index.js")


async def measure(cmd, args, env=env, calls=None):
    params = StdioServerParameters(command=cmd, args=args, env=env)
    out = {}
    path = os.path.join(ws, "small.txt")
    async with stdio_client(params, errlog=open(os.devnull, "w")) as (r, w):
        async with ClientSession(r, w) as s:
            await s.initialize()
            if calls is None:
                calls = [("ping", lambda: s.send_ping()),
                         ("read_text_file", lambda: s.call_tool("read_text_file", {"path": path}))]
            else:
                calls = [(n, (lambda t=t, a=a: s.call_tool(t, a))) for n, t, a in calls]
            for name, call in calls:
                for _ in range(20):
                    await call()
                times = []
                for _ in range(runs):
                    t = time.perf_counter()
                    res = await call()
                    times.append(time.perf_counter() - t)
                    if name != "ping" and getattr(res, "is_error", False):
                        raise SystemExit(f"{cmd}: {name} failed: {res.content}")
                times.sort()
                out[name] = (statistics.median(times) * 1e3, times[int(len(times) * 0.99) - 1] * 1e3)
    return out


async def main():
    ref = await measure("node", [os.path.join(nm, "@modelcontextprotocol/server-filesystem/dist/index.js"), ws])
    brokered = await measure(airlock, ["mcp", "--no-embedded", ws])
    print(f"MCP over stdio, Python SDK client, {runs} calls each (ms)")
    print(f"{'':24} {'reference fs':>16} {'airlock mcp':>16}")
    for k in ("ping", "read_text_file"):
        print(f"{k:24} {ref[k][0]:7.3f} p99 {ref[k][1]:5.2f} {brokered[k][0]:7.3f} p99 {brokered[k][1]:5.2f}")
    print(f"ratio read_text_file airlock/reference (median): {brokered['read_text_file'][0] / ref['read_text_file'][0]:.2f}")

    echo = [("tools/call echo", "echo", {"message": "hello from the benchmark"})]
    direct = await measure("node", [everything, "stdio"], calls=echo)
    proxied = await measure(airlock, ["mcp-proxy", "--name", "everything", "--workspace", ws,
                                      "--allow-read", nm, "--", "node", everything, "stdio"],
                            env=penv, calls=echo)
    k = "tools/call echo"
    print()
    print(f"{'':24} {'server-everything':>16} {'behind mcp-proxy':>16}")
    print(f"{k:24} {direct[k][0]:7.3f} p99 {direct[k][1]:5.2f} {proxied[k][0]:7.3f} p99 {proxied[k][1]:5.2f}")
    print(f"added latency of airlock mcp-proxy per tools/call (median): {proxied[k][0] - direct[k][0]:.3f} ms")


try:
    asyncio.run(main())
finally:
    for b in brokers:
        b.terminate()
        b.wait()
    subprocess.run(["rm", "-rf", tmp])
PYEOF
