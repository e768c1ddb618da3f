# Sourced by the bench scripts (after `set -euo pipefail`).
#
# AIRLOCK: the airlock binary to measure; when unset, built here (release)
# into $CARGO_TARGET_DIR (default ~/.cache/airlock-target, the cache the
# tests use). PY: the system's Python 3.
bench_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
if [[ -z "${AIRLOCK:-}" ]]; then
    export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/airlock-target}"
    (cd "$bench_root" && cargo build -q --release -p airlock)
    AIRLOCK="$CARGO_TARGET_DIR/release/airlock"
fi
PY=/usr/bin/python3
[[ -x "$PY" ]] || PY="$(command -v python3)"
