#!/usr/bin/env python3
"""Verify an Airlock audit directory without Airlock: python3 verify-audit.py DIR"""
import glob, hashlib, json, os, sys

d = sys.argv[1]
prev, seq = "0" * 64, 0
paths = sorted(glob.glob(os.path.join(d, "audit-*.jsonl")))
for k, path in enumerate(paths, 1):
    assert os.path.basename(path) == "audit-%06d.jsonl" % k, (path, "segment missing")
    for n, raw in enumerate(open(path, "rb"), 1):
        assert raw.endswith(b"\n"), (path, n, "truncated line")
        line = raw[:-1]
        rec = json.loads(line)
        cut = line.rindex(b',"hash":"')
        assert line[cut:] == b',"hash":"' + rec["hash"].encode() + b'"}', (path, n, "layout")
        assert hashlib.sha256(line[:cut]).hexdigest() == rec["hash"], (path, n, "hash mismatch")
        assert rec["prev_hash"] == prev, (path, n, "chain broken")
        seq += 1
        assert rec["seq"] == seq, (path, n, "seq")
        prev = rec["hash"]
head = os.path.join(d, "head.json")
if os.path.exists(head) and open(head).read().strip():
    a = json.load(open(head))
    assert a["seq"] <= seq, ("log ends at seq %d, anchor says %d" % (seq, a["seq"]))
print("ok", seq, prev)
