#!/usr/bin/env bash
# Every benchmark, printed plainly, in one run on this machine:
#   broker: in-process decision (validate + Rego + mint) p50/p99, socket round
#           trip with a durable audit record (1 and 64 clients), decisions/s;
#   token:  mint and verify;
#   audit:  append latency, group commit, `audit verify` records/s;
#   policy: decision latency per backend;
#   mcp:    read_text_file through `airlock mcp` against the reference filesystem server (bench/mcp.sh);
#   sandbox: `airlock run -- /bin/true` against bare /bin/true and bwrap (bench/sandbox.sh),
#           and phase by phase against bwrap, as root (bench/sandbox-phases.sh);
#   staging: the same as the staging store fills (bench/staging.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/airlock-target}"
for pkg in airlock-broker airlock-token airlock-audit airlock-policy; do
  printf '\n=== %s\n' "$pkg"
  cargo bench -q -p "$pkg" 2>&1 | grep -v '^\s*$' | grep -vE '^(Gnuplot|Benchmarking|Warming|Collecting|Analyzing|Found|  [0-9]+ \(|time:|change:|thrpt:|No change|Change within|Performance has)' || true
done
if [ -f bench/mcp.sh ]; then
  printf '\n=== mcp\n'
  bash bench/mcp.sh || echo "(mcp benchmark skipped: run scripts/test.sh once to install its clients)"
fi
if [ -f bench/sandbox.sh ]; then
  printf '\n=== sandbox\n'
  bash bench/sandbox.sh
  if [ "$(id -u)" = 0 ]; then
    bash bench/sandbox-phases.sh
  else
    echo "(sandbox phases skipped: kernel tracepoints need root)"
  fi
fi
if [ -f bench/staging.sh ]; then
  printf '\n=== staging\n'
  bash bench/staging.sh
fi
