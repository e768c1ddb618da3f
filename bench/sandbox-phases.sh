#!/usr/bin/env bash
# Where the start-up time of `airlock run -- /bin/true` goes, phase by
# phase, next to bwrap's (the configuration of bench/sandbox.sh), from
# kernel tracepoints (perf): no instrumentation in either program, a few
# events per run.
#
#   start → clone      the program's execve to the clone that makes the
#                      sandbox's namespaces (airlock: its last clone3
#                      before the command; bwrap: its clone with
#                      CLONE_NEWUSER)
#   clone → command    from there to the command's execve
#   command            the command's execve to its exit
#   command → end      the command's exit to the program's exit
#
# Prints the median of each phase for both and the difference. Needs root
# (tracepoints) and perf (Debian package linux-perf, installed if missing).
#
#   bench/sandbox-phases.sh                  build airlock (release), measure
#   AIRLOCK=/path/airlock BENCH_RUNS=200 BENCH_AS=nobody bench/sandbox-phases.sh
set -euo pipefail

if [[ $(id -u) -ne 0 ]]; then
    echo "bench: run as root (kernel tracepoints); BENCH_AS=nobody measures as nobody" >&2
    exit 2
fi
if ! command -v perf >/dev/null; then
    apt-get install -y -qq linux-perf >/dev/null 2>&1 || { apt-get update -qq >/dev/null && apt-get install -y -qq linux-perf >/dev/null; } || true
    command -v perf >/dev/null || { echo "bench: perf (Debian package linux-perf) is needed" >&2; exit 2; }
fi
if ! command -v bwrap >/dev/null; then
    apt-get install -y -qq bubblewrap >/dev/null 2>&1 || { apt-get update -qq >/dev/null && apt-get install -y -qq bubblewrap >/dev/null; }
    command -v bwrap >/dev/null || { echo "bench: bwrap (Debian package bubblewrap) is needed" >&2; exit 2; }
fi
. "$(dirname "${BASH_SOURCE[0]}")/common.sh"
exec "$PY" - "$bench_root/bench" "$AIRLOCK" "${BENCH_RUNS:-100}" "${BENCH_AS:-}" <<'PYEOF'
import json, os, re, statistics, subprocess, sys

sys.dont_write_bytecode = True  # nothing left in the checkout
sys.path.insert(0, sys.argv[1])
from sandbox_fixture import Fixture

airlock, runs, as_user = sys.argv[2], int(sys.argv[3]), sys.argv[4]
fx = Fixture(as_user, {"bin": airlock})
try:
    ws, env = fx.ws, fx.env
    cases = {"airlock": fx.airlock("bin"), "bwrap": fx.bwrap()}
    for name, cmd in cases.items():
        r = subprocess.run(cmd, env=env, cwd=ws, capture_output=True)
        if r.returncode != 0:
            sys.exit("bench: %s failed (exit %d): %s" % (name, r.returncode, r.stderr.decode()[-500:]))

    # The loop runs under perf; it runs the cases interleaved, in a fresh
    # order each round, and writes which pid ran which case.
    order = os.path.join(fx.dir, "order")
    loop = os.path.join(fx.dir, "loop.py")
    with open(loop, "w") as f:
        f.write("""
import json, random, subprocess, sys
cases, env, cwd, runs, out = json.loads(sys.argv[1])
rng = random.Random(1)
with open(out, "w") as o:
    for _ in range(runs):
        for name in rng.sample(sorted(cases), len(cases)):
            p = subprocess.Popen(cases[name], env=env, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            p.wait()
            o.write("%d %s\\n" % (p.pid, name))
""")
    data = os.path.join(fx.dir, "perf.data")
    events = ["syscalls:sys_enter_execve", "syscalls:sys_enter_clone", "syscalls:sys_enter_clone3",
              "sched:sched_process_exit", "sched:sched_process_fork"]
    rec = subprocess.run(["perf", "record", "-q", "-o", data] + sum((["-e", e] for e in events), []) +
                         [sys.executable, loop, json.dumps([cases, env, ws, runs, order])],
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    if rec.returncode != 0:
        sys.exit("bench: perf record failed (exit %d): %s" % (rec.returncode, rec.stderr.strip()[-500:]))
    rep = subprocess.run(["perf", "script", "-i", data, "-F", "comm,pid,time,event,trace"],
                         capture_output=True, text=True)
    if rep.returncode != 0:
        sys.exit("bench: perf script failed (exit %d): %s" % (rep.returncode, rep.stderr.strip()[-500:]))
    script = rep.stdout
    which = dict(l.split() for l in open(order).read().split("\n") if l)
finally:
    fx.remove()

# Events by process, and which process forked which.
ev, parent = {}, {}
for line in script.splitlines():
    m = re.match(r"\s*(.+?)\s+(\d+)\s+([\d.]+):\s+(\S+):\s*(.*)", line)
    if not m:
        continue
    comm, pid, t, name, rest = m.group(1), m.group(2), float(m.group(3)) * 1e6, m.group(4), m.group(5)
    if name == "sched:sched_process_fork":
        c = re.search(r"child_pid=(\d+)", rest)
        if c:
            parent[c.group(1)] = pid
        continue
    ev.setdefault(pid, []).append((t, name, comm, rest))

def descendants(top):
    out, todo = set(), [top]
    while todo:
        p = todo.pop()
        out.add(p)
        todo += [c for c, par in parent.items() if par == p]
    return out

def new_user_ns(trace):
    """Whether a clone event's flags have CLONE_NEWUSER."""
    m = re.search(r"clone_flags: (0x[0-9a-f]+)", trace)
    return m is not None and int(m.group(1), 16) & 0x10000000 != 0

phases = ["start → clone", "clone → command", "command", "command → end", "whole"]
res = {name: {p: [] for p in phases} for name in cases}
for top, name in which.items():
    mine = ev.get(top, [])
    starts = [t for t, n, _, _ in mine if n.endswith("sys_enter_execve")]
    ends = [t for t, n, _, r in mine if n == "sched:sched_process_exit"]
    if not starts or not ends:
        continue
    # The command: the process among the descendants that exits as `true`.
    cmd = [p for p in descendants(top) if any(n == "sched:sched_process_exit" and "comm=true" in r
                                              for _, n, _, r in ev.get(p, []))]
    if not cmd:
        continue
    cmd_ev = ev[cmd[0]]
    execs = [t for t, n, _, _ in cmd_ev if n.endswith("sys_enter_execve")]
    cmd_end = [t for t, n, _, _ in cmd_ev if n == "sched:sched_process_exit"]
    if not execs or not cmd_end:
        continue
    if name == "airlock":
        clones = [t for t, n, _, _ in mine if n.endswith("sys_enter_clone3") and t < execs[-1]]
        clone = clones[-1] if clones else None
    else:
        clones = [t for p in descendants(top) for t, n, _, r in ev.get(p, [])
                  if n.endswith("sys_enter_clone") and new_user_ns(r)]
        clone = min(clones) if clones else None
    if clone is None:
        continue
    start, end = starts[0], max(ends)
    for p, v in zip(phases, [clone - start, execs[-1] - clone, cmd_end[0] - execs[-1], end - cmd_end[0], end - start]):
        res[name][p].append(v)

n = min(len(res[k]["whole"]) for k in res)
if n < runs // 2:
    sys.exit("bench: only %d of %d runs could be read from the trace" % (n, runs))
print("median per phase, µs, %d runs each, interleaved, as %s:" % (n, as_user or "root"))
print("  %-18s %9s %9s %11s" % ("", "airlock", "bwrap", "difference"))
for p in phases:
    a, b = statistics.median(res["airlock"][p]), statistics.median(res["bwrap"][p])
    print("  %-18s %9.0f %9.0f %+11.0f" % (p, a, b, a - b))
PYEOF
