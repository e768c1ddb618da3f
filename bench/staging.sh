#!/usr/bin/env bash
# What the staging store costs `airlock run -- /bin/true` as it fills up,
# in one run, interleaved:
#   clean          an empty store, nothing staged
#   500 areas      the store holds 500 other workspaces' areas
#   2,200 staged   this workspace has 2,000 new files, their directory and
#                  200 rewritten (unchanged) files staged
# Prints the median wall time per process over N runs each (default 100)
# and each case's cost over the clean one. With AIRLOCK_BASE set, the same
# cases run with that build too, alternating, for a comparison.
#
#   bench/staging.sh
#   AIRLOCK=/path/airlock AIRLOCK_BASE=/path/older/airlock BENCH_RUNS=60 bench/staging.sh
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/common.sh"
exec "$PY" - "$AIRLOCK" "${AIRLOCK_BASE:-}" "${BENCH_RUNS:-100}" <<'PYEOF'
import json, os, random, secrets, shutil, statistics, subprocess, sys, tempfile, time

builds = [("this build", sys.argv[1])] + ([("base", sys.argv[2])] if sys.argv[2] else [])
runs = int(sys.argv[3])
fix = tempfile.mkdtemp(prefix="airlock-bench-staging-")

def make_case(build, case):
    """A workspace and a state dir for one build and case."""
    d = os.path.join(fix, "%s-%s" % (build, case))
    ws, state = os.path.join(d, "ws"), os.path.join(d, "state")
    os.makedirs(os.path.join(ws, "src"))
    os.makedirs(state, 0o700)
    for i in range(200):
        with open(os.path.join(ws, "src", "b%d.txt" % i), "w") as f:
            f.write("base %d\n" % i)
    if case == "500 areas":
        store = os.path.join(state, "airlock", "staging")
        os.makedirs(store, 0o700)
        for i in range(500):
            a = os.path.join(store, "st-" + secrets.token_hex(5))
            for sub in ("upper", "work", "tmp"):
                os.makedirs(os.path.join(a, sub), 0o700)
            with open(os.path.join(a, "meta.json"), "w") as f:
                json.dump({"id": os.path.basename(a), "session": "run-%d" % os.geteuid(),
                           "base": "/home/u/project%d" % i, "created": 1, "bases": {}}, f)
    return ws, {"PATH": "/usr/bin:/bin", "HOME": d, "XDG_STATE_HOME": state,
                "XDG_CONFIG_HOME": os.path.join(d, "config")}

cases = []
for bname, binary in builds:
    for case in ("clean", "500 areas", "2,200 staged"):
        ws, env = make_case(bname, case)
        script = "true"
        if case == "2,200 staged":
            script = ("mkdir out; i=0; while [ $i -lt 2000 ]; do echo $i > out/f$i.txt; i=$((i+1)); done; "
                      "for f in src/*; do cat $f > $f.tmp; mv $f.tmp $f; done")
        r = subprocess.run([binary, "run", "--", "sh", "-c", script], env=env, cwd=ws, capture_output=True)
        if r.returncode != 0:
            print("bench: %s, %s failed (exit %d): %s" % (bname, case, r.returncode, r.stderr.decode()[-500:]),
                  file=sys.stderr)
            sys.exit(1)
        cases.append((bname, case, [binary, "run", "--", "/bin/true"], ws, env))

times = {(b, c): [] for b, c, *_ in cases}
rng = random.Random(1)
for _ in range(runs):
    # A fresh order each round: a case is not always the one after the
    # slowest.
    for b, c, cmd, ws, env in rng.sample(cases, len(cases)):
        t = time.perf_counter()
        subprocess.run(cmd, env=env, cwd=ws, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        times[(b, c)].append(time.perf_counter() - t)
shutil.rmtree(fix, ignore_errors=True)

print("airlock run -- /bin/true, median wall time per process, %d runs each:" % runs)
for bname, _ in builds:
    clean = statistics.median(times[(bname, "clean")]) * 1000
    for case in ("clean", "500 areas", "2,200 staged"):
        m = statistics.median(times[(bname, case)]) * 1000
        extra = "" if case == "clean" else "   (%+.2f ms)" % (m - clean)
        print("  %-11s %-13s %7.2f ms%s" % (bname, case, m, extra))
PYEOF
