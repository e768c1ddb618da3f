#!/usr/bin/env bash
# Whole-process start-up cost of the sandbox, in one run, interleaved:
#   bare /bin/true | bwrap (comparable namespaces and mounts) | airlock run
# Prints the median wall time per process over N runs each (default 300)
# and the ratio airlock/bwrap.
#
#   bench/sandbox.sh                 build airlock (release) and measure
#   AIRLOCK=/path/airlock bench/sandbox.sh
#   BENCH_RUNS=500 BENCH_AS=nobody bench/sandbox.sh   (as root: measure as nobody)
#   AIRLOCK_BASE=/path/older/airlock bench/sandbox.sh
#       also that build (with its airlock-full beside it), interleaved in
#       the same loop, and the ratio of the two builds
set -euo pipefail

if ! command -v bwrap >/dev/null; then
    if [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null; then
        apt-get install -y -qq bubblewrap >/dev/null 2>&1 || { apt-get update -qq >/dev/null && apt-get install -y -qq bubblewrap >/dev/null; }
    fi
    command -v bwrap >/dev/null || { echo "bench: bwrap (Debian package bubblewrap) is needed" >&2; exit 2; }
fi
. "$(dirname "${BASH_SOURCE[0]}")/common.sh"
exec "$PY" - "$bench_root/bench" "$AIRLOCK" "${BENCH_RUNS:-300}" "${BENCH_AS:-}" "${AIRLOCK_BASE:-}" <<'PYEOF'
import json, os, random, statistics, subprocess, sys, time

sys.dont_write_bytecode = True  # nothing left in the checkout
sys.path.insert(0, sys.argv[1])
from sandbox_fixture import Fixture

airlock, runs, as_user, base = sys.argv[2], int(sys.argv[3]), sys.argv[4], sys.argv[5]
fx = Fixture(as_user, {"bin": airlock, **({"base": base} if base else {})})
ws, env, prefix, binary = fx.ws, fx.env, fx.prefix, fx.bins["bin"]

cases = [
    ("bare /bin/true", prefix + ["/bin/true"]),
    ("bwrap", fx.bwrap()),
    ("airlock run", fx.airlock("bin")),
]
if base:
    cases.append(("airlock (base)", fx.airlock("base")))

def staging_fs(path):
    """The filesystem holding `path` (where the overlay's upper and work dirs
    are), and for ext4 whether it has a journal: without one, every inode
    the overlay creates at mount skips those freed in the last seconds to
    minutes (see docs/benchmarks.md)."""
    best, fstype, dev = "", "?", ""
    with open("/proc/self/mountinfo") as f:
        for line in f:
            a, b = line.split(" - ", 1)
            point = a.split()[4]
            if (path == point or path.startswith(point.rstrip("/") + "/")) and len(point) >= len(best):
                best, fstype, dev = point, b.split()[0], b.split()[1]
    if fstype == "ext4":
        name = os.path.basename(os.path.realpath(dev)) if dev.startswith("/dev/") else ""
        try:
            with open("/sys/fs/ext4/%s/journal_task" % name) as f:
                fstype += " without a journal" if f.read().strip() == "<none>" else " with a journal"
        except OSError:
            pass
    return "%s (%s)" % (fstype, dev)

def measure():
    # Check each works once, then measure interleaved so that load on the
    # machine hits all three alike.
    for name, cmd in cases:
        r = subprocess.run(cmd, env=env, cwd=ws, capture_output=True)
        if r.returncode != 0:
            print("bench: %s failed (exit %d): %s" % (name, r.returncode, r.stderr.decode()[-500:]), file=sys.stderr)
            sys.exit(1)
    times = {name: [] for name, _ in cases}
    # A fresh order each round: a case's place in the loop (which case ran
    # just before it) moved the difference between two builds by up to 0.2 ms.
    rng = random.Random(1)
    for i in range(runs):
        for name, cmd in rng.sample(cases, len(cases)):
            t = time.perf_counter()
            subprocess.run(cmd, env=env, cwd=ws, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            times[name].append(time.perf_counter() - t)
    rep = subprocess.run(prefix + [binary, "run", "--workspace", ws, "--json", "--", "/bin/true"], env=env, cwd=ws,
                         capture_output=True).stderr.decode().strip().splitlines()[-1]
    return times, json.loads(rep)["outcome"]["report"]

try:
    times, layers = measure()
    staging = staging_fs(os.path.realpath(fx.state))
finally:
    fx.remove()

med = {k: statistics.median(v) * 1000 for k, v in times.items()}
print("median wall time per process, %d runs each, as %s:" % (runs, as_user or ("root" if os.geteuid() == 0 else "uid %d" % os.geteuid())))
for name, _ in cases:
    v = sorted(times[name])
    print("  %-15s %7.2f ms   (p10 %.2f, p90 %.2f)" % (name, med[name], v[len(v) // 10] * 1000, v[len(v) * 9 // 10] * 1000))
print("airlock run: workspace %s, Landlock %s (ABI %s), seccomp %s, limits %s, namespaces %s"
      % (layers["workspace"], layers["landlock"], layers["landlock_abi"], layers["seccomp"], layers["limits_mechanism"],
         ",".join(layers["namespaces"])))
print("staging area on %s (TMPDIR=DIR puts it elsewhere)" % staging)
print("ratio airlock/bwrap: %.2f" % (med["airlock run"] / med["bwrap"]))
if base:
    print("ratio base/bwrap: %.2f; this build against the base: %+.2f ms"
          % (med["airlock (base)"] / med["bwrap"], med["airlock run"] - med["airlock (base)"]))
PYEOF
