#!/usr/bin/env bash
# The hostile suite: every attack in tests/hostile/attacks.py runs through
# `airlock run`, as root and as nobody, and is judged from the host side.
# Prints a table and exits non-zero if any attack escaped or could not be
# judged.
#
#   tests/hostile/run.sh              build airlock (debug) and run everything
#   AIRLOCK=/path/to/airlock run.sh   use that binary
#   HOSTILE_ONLY=read_ssh_key,tcp...  run only these attacks
#   HOSTILE_USERS=nobody              run as these users only (root,nobody)
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"

if [[ -z "${AIRLOCK:-}" ]]; then
    export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/airlock-target-sandbox}"
    (cd "$root" && cargo build -q -p airlock)
    AIRLOCK="$CARGO_TARGET_DIR/debug/airlock"
fi
[[ -x "$AIRLOCK" ]] || { echo "hostile: $AIRLOCK is not executable" >&2; exit 2; }

command -v cc >/dev/null || { echo "hostile: a C compiler (cc) is needed for the attack programs" >&2; exit 2; }
PY=/usr/bin/python3
[[ -x "$PY" ]] || PY="$(command -v python3)"

exec "$PY" "$here/attacks.py" --airlock "$AIRLOCK" --src "$here/attacks"
