#!/usr/bin/env python3
"""A stand-in agent for the integration tests: a separate process (so a
separate Airlock session) that speaks HTTP/1.1 over the broker's Unix
socket. It reads one JSON command per line on stdin and answers one JSON
line on stdout:

  {"method": "POST", "path": "/v1/requests", "json": {...}, "token": "..."}
  {"method": "POST", "path": "/v1/fs/read", "raw": "{not json", "token": "..."}
  {"op": "spawn", "argv": [...], "input"?: "..."}
                                    run a child process (stdin from "input"), answer its exit code and output
  {"op": "exit"}
"""
import http.client
import json
import socket
import subprocess
import sys
import time


class UnixConnection(http.client.HTTPConnection):
    def __init__(self, path):
        super().__init__("airlock", timeout=120)
        self.unix_path = path

    def connect(self):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(120)
        s.connect(self.unix_path)
        self.sock = s


def main():
    path = sys.argv[1]
    conn = UnixConnection(path)
    last_used = 0.0
    for line in sys.stdin:
        cmd = json.loads(line)
        op = cmd.get("op")
        if op == "exit":
            break
        if op == "spawn":
            p = subprocess.run(cmd["argv"], input=cmd.get("input"), capture_output=True, text=True)
            out = {"status": p.returncode, "stdout": p.stdout, "stderr": p.stderr}
            print(json.dumps(out), flush=True)
            continue
        headers = {}
        if cmd.get("token") is not None:
            headers["Authorization"] = "Bearer " + cmd["token"]
        body = cmd.get("raw")
        if body is None and "json" in cmd:
            body = json.dumps(cmd["json"])
        data = None if body is None else body.encode("utf-8", "surrogateescape")
        if data is not None:
            headers["Content-Type"] = "application/json"
        # The broker closes keep-alive connections idle for longer than its
        # header timeout (5 s by default); start afresh rather than race it.
        if time.monotonic() - last_used > 3:
            conn.close()
            conn = UnixConnection(path)
        try:
            try:
                conn.request(cmd["method"], cmd["path"], body=data, headers=headers)
                r = conn.getresponse()
            except (http.client.HTTPException, OSError):
                # The broker closes idle keep-alive connections; retry once on a new one.
                conn.close()
                conn = UnixConnection(path)
                conn.request(cmd["method"], cmd["path"], body=data, headers=headers)
                r = conn.getresponse()
            raw = r.read()
            try:
                parsed = json.loads(raw) if raw else None
            except ValueError:
                parsed = {"unparsed": raw.decode("utf-8", "replace")}
            out = {"status": r.status, "body": parsed, "retry_after": r.getheader("Retry-After")}
            last_used = time.monotonic()
        except Exception as e:  # noqa: BLE001 - report any transport failure to the test
            conn.close()
            conn = UnixConnection(path)
            out = {"status": 0, "error": repr(e)}
        print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
