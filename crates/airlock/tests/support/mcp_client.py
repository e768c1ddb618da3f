"""End-to-end checks of `airlock mcp` with the official MCP Python SDK.

Started by crates/airlock/tests/mcp/python.rs with a running broker whose
workspace is WS under a temp HOME that holds ~/.ssh/id_rsa. The script
plays the agent's MCP client (stdio) and, where a human is needed, the
human at the desk (the `airlock approvals` / `airlock staged` CLI, from a
process that is no part of the agent's session).

Usage: mcp_client.py AIRLOCK_BIN WS
Exit status 0 when every check passed; each failure is printed.
"""

import asyncio
import json
import os
import subprocess
import sys

from mcp import ClientSession, StdioServerParameters
from mcp.client.stdio import stdio_client

AIRLOCK, WS = sys.argv[1], sys.argv[2]
HOME = os.environ["HOME"]
FAILURES = []


def check(name, cond, detail=""):
    print(("ok   " if cond else "FAIL ") + name + ("" if cond else f": {detail}"), flush=True)
    if not cond:
        FAILURES.append(name)


def human(*args):
    """The person at the desk, in another terminal."""
    r = subprocess.run([AIRLOCK, *args], capture_output=True, text=True, timeout=60)
    if r.returncode != 0:
        raise RuntimeError(f"airlock {' '.join(args)}: {r.stderr}")
    return r.stdout


def text_of(res):
    return "\n".join(c.text for c in res.content if getattr(c, "type", "") == "text")


async def main():
    env = {k: os.environ[k] for k in ("HOME", "XDG_RUNTIME_DIR") if k in os.environ}
    env["AIRLOCK_LOG"] = "info"
    # AIRLOCK_MCP_ARGS: extra `airlock mcp` options (`--own-process`).
    extra = os.environ.get("AIRLOCK_MCP_ARGS", "").split()
    params = StdioServerParameters(command=AIRLOCK, args=["mcp", "--no-embedded", *extra, WS], env=env)
    async with stdio_client(params) as (read, write):
        async with ClientSession(read, write) as s:
            await s.initialize()
            tools = {t.name: t for t in (await s.list_tools()).tools}
            reference = [
                "read_file", "read_text_file", "read_media_file", "read_multiple_files", "write_file",
                "edit_file", "create_directory", "list_directory", "list_directory_with_sizes",
                "directory_tree", "move_file", "search_files", "get_file_info", "list_allowed_directories",
            ]
            check("tools/list has every reference tool and ours",
                  all(n in tools for n in reference + ["run_command", "fetch", "staged_changes"]),
                  sorted(tools))
            check("read tools are annotated read-only, writes are not",
                  tools["read_text_file"].annotations.read_only_hint is True
                  and tools["write_file"].annotations.read_only_hint is False
                  and tools["write_file"].annotations.destructive_hint is False,
                  tools["write_file"].annotations)
            check("the reference argument shapes",
                  set(tools["edit_file"].input_schema["properties"]) == {"path", "edits", "dryRun"}
                  and set(tools["move_file"].input_schema["properties"]) == {"source", "destination"},
                  tools["edit_file"].input_schema)

            r = await s.call_tool("list_allowed_directories", {})
            check("list_allowed_directories", WS in text_of(r), text_of(r))

            # --- allowed reads
            r = await s.call_tool("read_text_file", {"path": f"{WS}/report.txt"})
            check("allowed read", not r.is_error and text_of(r) == "Q4 revenue: 100\n", text_of(r))
            check("structured content like the reference",
                  r.structured_content == {"content": "Q4 revenue: 100\n"}, r.structured_content)
            r = await s.call_tool("read_text_file", {"path": "report.txt"})
            check("relative path resolves in the allowed directory", text_of(r) == "Q4 revenue: 100\n", text_of(r))
            r = await s.call_tool("read_text_file", {"path": f"{WS}/lines.txt", "head": 2})
            check("head", text_of(r) == "one\ntwo", repr(text_of(r)))
            r = await s.call_tool("read_text_file", {"path": f"{WS}/lines.txt", "tail": 2})
            check("tail", text_of(r) == "three\n", repr(text_of(r)))
            r = await s.call_tool("read_file", {"path": f"{WS}/report.txt"})
            check("deprecated read_file still works", text_of(r) == "Q4 revenue: 100\n", text_of(r))
            # A reused read capability is still checked on every use: once
            # the human revokes it, the next read is refused, then a fresh
            # decision is made.
            human("tokens", "revoke", "--all")
            r = await s.call_tool("read_text_file", {"path": f"{WS}/report.txt"})
            check("a revoked capability is refused on its next use", r.is_error and "revoked" in text_of(r), text_of(r))
            r = await s.call_tool("read_text_file", {"path": f"{WS}/report.txt"})
            check("and a fresh decision follows", not r.is_error and text_of(r) == "Q4 revenue: 100\n", text_of(r))

            # --- credentials and escapes
            r = await s.call_tool("read_text_file", {"path": f"{WS}/.env"})
            t = text_of(r)
            check("credential file inside the workspace is denied by policy",
                  r.is_error and "Airlock denied" in t and "Policy: airlock.default" in t
                  and "cannot be granted" in t and "API_KEY" not in t, t)
            for name, path in [
                ("absolute path outside", f"{HOME}/.ssh/id_rsa"),
                ("dot-dot escape", f"{WS}/../.ssh/id_rsa"),
                ("prefix trick", f"{WS}-evil/secret.txt"),
                ("tilde", "~/.ssh/id_rsa"),
            ]:
                r = await s.call_tool("read_text_file", {"path": path})
                t = text_of(r)
                check(f"{name} is refused", r.is_error and "canary" not in t and "Access denied" in t, t)
            r = await s.call_tool("read_text_file", {"path": f"{WS}/innocent.txt"})
            t = text_of(r)
            check("symlink out of the workspace is refused", r.is_error and "canary" not in t, t)
            r = await s.call_tool("read_multiple_files", {"paths": [f"{WS}/report.txt", f"{WS}/.env"]})
            t = text_of(r)
            check("read_multiple_files: one read, one denied",
                  "Q4 revenue: 100" in t and f"{WS}/.env: Error - " in t and "API_KEY" not in t, t)
            r = await s.call_tool("read_media_file", {"path": f"{WS}/pixel.png"})
            check("read_media_file returns an image block",
                  r.content[0].type == "image" and r.content[0].mime_type == "image/png", r.content)

            # --- listings
            r = await s.call_tool("list_directory", {"path": WS})
            t = text_of(r)
            check("list_directory", "[FILE] report.txt" in t and "[DIR] src" in t, t)
            r = await s.call_tool("list_directory_with_sizes", {"path": WS, "sortBy": "size"})
            check("list_directory_with_sizes", "Combined size:" in text_of(r), text_of(r))
            r = await s.call_tool("directory_tree", {"path": WS, "excludePatterns": ["node_modules"]})
            tree = json.loads(text_of(r))
            names = [e["name"] for e in tree]
            check("directory_tree", "src" in names and "node_modules" not in names
                  and any(e["name"] == "src" and e["children"][0]["name"] == "main.rs" for e in tree), tree)
            r = await s.call_tool("search_files", {"path": WS, "pattern": "**/*.rs"})
            check("search_files", text_of(r).strip() == f"{WS}/src/main.rs", text_of(r))
            r = await s.call_tool("get_file_info", {"path": f"{WS}/report.txt"})
            check("get_file_info", "size: 16" in text_of(r) and "isFile: true" in text_of(r), text_of(r))

            # --- staged writes
            r = await s.call_tool("write_file", {"path": f"{WS}/new.txt", "content": "hello\n"})
            t = text_of(r)
            check("write_file is staged and says how to review",
                  not r.is_error and "staged for review" in t and "airlock staged commit" in t, t)
            check("the real file is untouched until commit", not os.path.exists(f"{WS}/new.txt"))
            r = await s.call_tool("read_text_file", {"path": f"{WS}/new.txt"})
            check("the session reads its staged version", text_of(r) == "hello\n", text_of(r))
            r = await s.call_tool("edit_file", {"path": f"{WS}/report.txt",
                                                "edits": [{"oldText": "100", "newText": "120"}], "dryRun": True})
            check("edit_file dry run shows a diff", "-Q4 revenue: 100" in text_of(r) and "+Q4 revenue: 120" in text_of(r), text_of(r))
            r = await s.call_tool("edit_file", {"path": f"{WS}/report.txt",
                                                "edits": [{"oldText": "100", "newText": "120"}]})
            check("edit_file is staged", "staged for review" in text_of(r), text_of(r))
            with open(f"{WS}/report.txt") as f:
                check("the real report is unchanged", f.read() == "Q4 revenue: 100\n")
            r = await s.call_tool("edit_file", {"path": f"{WS}/report.txt", "edits": [{"oldText": "nope", "newText": "x"}]})
            check("an edit that does not match is an error", r.is_error and "Could not find exact match" in text_of(r), text_of(r))
            r = await s.call_tool("create_directory", {"path": f"{WS}/docs/api"})
            check("create_directory is staged", not r.is_error and "staged" in text_of(r), text_of(r))
            r = await s.call_tool("move_file", {"source": f"{WS}/new.txt", "destination": f"{WS}/docs/new.txt"})
            check("move_file", not r.is_error, text_of(r))
            r = await s.call_tool("move_file", {"source": f"{WS}/docs/new.txt", "destination": f"{WS}/report.txt"})
            check("move_file onto an existing file is refused", r.is_error and "already exists" in text_of(r), text_of(r))
            r = await s.call_tool("staged_changes", {})
            t = text_of(r)
            check("staged_changes lists the changes", "docs/new.txt" in t and "report.txt" in t and "airlock staged commit" in t, t)
            area = t.split("Staging area ", 1)[1].split(" ", 1)[0]
            human("staged", "commit", area)
            with open(f"{WS}/report.txt") as f:
                check("after the human commits, the edit is real", f.read() == "Q4 revenue: 120\n")
            check("after the human commits, the moved file is real", open(f"{WS}/docs/new.txt").read() == "hello\n")
            check("and the new directory is real", os.path.isdir(f"{WS}/docs/api"))

            # --- bad input
            r = await s.call_tool("read_text_file", {})
            check("missing argument is a clear tool error", r.is_error and "Invalid arguments for tool read_text_file" in text_of(r), text_of(r))
            r = await s.call_tool("read_text_file", {"path": 42})
            check("wrong argument type is a clear tool error", r.is_error and "Invalid arguments" in text_of(r), text_of(r))
            r = await s.call_tool("no_such_tool", {})
            check("unknown tool is a clear tool error", r.is_error and "Unknown tool" in text_of(r), text_of(r))
            r = await s.call_tool("fetch", {"url": "http://example.com/"})
            check("fetch is refused with the reason", r.is_error and "egress" in text_of(r), text_of(r))

            # --- ask: run_command waits for the human, with progress
            seen = []
            approved = asyncio.Event()

            async def on_progress(progress, total, message):
                seen.append(message or "")
                if message and "approvals approve" in message and not approved.is_set():
                    aid = message.split("approval ", 1)[1].split(" ", 1)[0]
                    approved.set()
                    await asyncio.to_thread(human, "approvals", "approve", aid)

            r = await s.call_tool("run_command", {"argv": ["sh", "-c", "echo sandboxed; cat ~/.ssh/id_rsa; echo out > made.txt"]},
                                  progress_callback=on_progress)
            t = text_of(r)
            check("ask: progress told the client who must approve", approved.is_set(), seen)
            check("run_command ran after approval", "sandboxed" in t, t)
            check("the sandbox hid the ssh key", "canary" not in t, t)
            check("the command's writes are staged", "made.txt" in t and not os.path.exists(f"{WS}/made.txt"), t)

            # --- deny by the human
            async def deny(progress, total, message):
                if message and "approvals deny" in message:
                    aid = message.split("approval ", 1)[1].split(" ", 1)[0]
                    await asyncio.to_thread(human, "approvals", "deny", aid, "--reason", "not now")
            r = await s.call_tool("run_command", {"argv": ["rm", "-rf", "."]}, progress_callback=deny)
            t = text_of(r)
            check("a human denial is a tool error that says so", r.is_error and "A human denied" in t, t)

    print(json.dumps({"failures": FAILURES}))
    sys.exit(1 if FAILURES else 0)


asyncio.run(main())
