#!/usr/bin/env bash
# Every test Airlock has, on a fresh machine that has the Rust toolchain,
# Python 3 and Node 20. Installs what the tests need (idempotently), runs the
# Rust suites, re-runs the broker and sandbox suites as an unprivileged user
# when started as root (desktops are not root), builds the release binaries
# and runs the start-up benchmark briefly, then the fuzz smoke run.
#
#   bash scripts/test.sh            # everything
#   AIRLOCK_SKIP_FUZZ=1 bash scripts/test.sh
#   AIRLOCK_SKIP_RELEASE=1 bash scripts/test.sh   # no release build, no bench run
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/airlock-target}"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"

# The cache may serve several checkouts. Tests find their fixtures through
# the checkout path compiled into them (CARGO_MANIFEST_DIR), and cargo keeps
# a test binary built from another checkout when that build is newer than
# this checkout's files: its fixtures are then looked for in the other
# checkout. When the cache was last used from elsewhere, make this
# checkout's sources newer than anything in it.
mkdir -p "$CARGO_TARGET_DIR"
if [ "$(cat "$CARGO_TARGET_DIR/.airlock-checkout" 2>/dev/null)" != "$root" ]; then
  find "$root/crates" -type f -name '*.rs' -exec touch {} + 2>/dev/null || true
  echo "$root" > "$CARGO_TARGET_DIR/.airlock-checkout"
fi

step() { printf '\n=== %s\n' "$*"; }

# --- what the tests need --------------------------------------------------
need=()
command -v unshare >/dev/null || need+=(util-linux)
command -v setpriv >/dev/null || need+=(util-linux)
command -v cc >/dev/null || need+=(gcc)
command -v python3 >/dev/null || need+=(python3)
[ -x /usr/bin/python3 ] || need+=(python3)
# a workspace on a filesystem that refuses idmapped mounts (tests/run.rs)
command -v mksquashfs >/dev/null || need+=(squashfs-tools)
command -v squashfuse >/dev/null || need+=(squashfuse)
if [ ${#need[@]} -gt 0 ]; then
  step "installing ${need[*]}"
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${need[@]}" >/dev/null \
      || { apt-get update >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${need[@]}" >/dev/null; }
  else
    echo "missing: ${need[*]} (install them, or run as root on Debian)" >&2
    exit 1
  fi
fi

# --- MCP clients for the front-door tests (outside the clone, idempotent) ----
# The official MCP Python SDK, the TypeScript SDK, the conformance suite and
# the reference servers, pinned; tests find them under ~/.cache.
py_env="$HOME/.cache/airlock-py"
if ! "$py_env/bin/python" -c 'import mcp' 2>/dev/null; then
  step "installing the MCP Python SDK into $py_env"
  python3 -m venv "$py_env" 2>/dev/null || {
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends python3-venv >/dev/null
    python3 -m venv "$py_env"
  }
  "$py_env/bin/pip" install -q "mcp==2.3.0"
fi
node_dir="$HOME/.cache/airlock-node"
node_pkgs=(@modelcontextprotocol/sdk@1.32.2 @modelcontextprotocol/conformance@0.1.13
  @modelcontextprotocol/server-everything@2026.8.31 @modelcontextprotocol/server-filesystem@2026.8.31)
if command -v npm >/dev/null && [ "$(cat "$node_dir/.installed" 2>/dev/null)" != "${node_pkgs[*]}" ]; then
  step "installing MCP npm packages into $node_dir"
  mkdir -p "$node_dir"
  [ -f "$node_dir/package.json" ] || echo '{"name": "airlock-test-clients", "private": true}' > "$node_dir/package.json"
  (cd "$node_dir" && npm install --no-audit --no-fund --loglevel=error "${node_pkgs[@]}" >/dev/null)
  echo "${node_pkgs[*]}" > "$node_dir/.installed"
fi

# --- the Rust suites ---------------------------------------------------------
step "cargo test (as $(id -un))"
cargo test --workspace --no-fail-fast

# --- again as an unprivileged user -------------------------------------------
if [ "$(id -u)" = 0 ]; then
  step "broker and sandbox suites as nobody"
  unpriv=$(mktemp -d /tmp/airlock-unpriv.XXXXXX)
  trap 'rm -rf "$unpriv"' EXIT
  chmod 755 "$unpriv"
  exes=$(cargo test --workspace --no-run --message-format=json 2>/dev/null | python3 -c '
import json, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["target"]["kind"] == ["test"] \
       and m["target"]["name"] in ("broker", "suite") and m["package_id"].split("#")[0].rsplit("/", 1)[-1] in ("airlock", "airlock-sandbox"):
        print(m["target"]["name"] + "-" + m["package_id"].split("#")[0].rsplit("/", 1)[-1] + " " + m["executable"])
')
  cp "$CARGO_TARGET_DIR/debug/airlock" "$CARGO_TARGET_DIR/debug/airlock-full" "$unpriv/"
  cp crates/airlock/tests/support/agent.py "$unpriv/agent.py"
  while read -r name exe; do
    [ -n "$name" ] || continue
    cp "$exe" "$unpriv/$name"
  done <<< "$exes"
  chmod -R a+rX "$unpriv"
  while read -r name exe; do
    [ -n "$name" ] || continue
    echo "--- $name as nobody"
    (cd "$unpriv" && setpriv --reuid=65534 --regid=65534 --clear-groups \
      env -i PATH=/usr/local/bin:/usr/bin:/bin HOME="$unpriv" TMPDIR=/tmp \
      AIRLOCK_TEST_BIN="$unpriv/airlock" AIRLOCK_TEST_AGENT="$unpriv/agent.py" \
      RUST_BACKTRACE=1 "$unpriv/$name" --test-threads=2)
  done <<< "$exes"
fi

# --- the release build, and the start-up benchmark run briefly ------------------
# The README's first command builds the release binaries, whose front is
# linked with whole-program LTO (scripts/rustc-front.sh): build them as a
# user does. The benchmark asserts nothing about time; it must run its
# three cases and print the comparison.
if [ -z "${AIRLOCK_SKIP_RELEASE:-}" ]; then
  step "release build"
  cargo build --release -p airlock
  if command -v bwrap >/dev/null || [ "$(id -u)" = 0 ]; then
    step "bench/sandbox.sh, 20 runs"
    BENCH_RUNS=20 AIRLOCK="$CARGO_TARGET_DIR/release/airlock" bash bench/sandbox.sh
    if [ "$(id -u)" = 0 ]; then
      BENCH_AS=nobody BENCH_RUNS=20 AIRLOCK="$CARGO_TARGET_DIR/release/airlock" bash bench/sandbox.sh
    fi
  else
    echo "SKIPPED: bench/sandbox.sh needs bwrap (Debian package bubblewrap), which only root can install here"
  fi
fi

# --- fuzz smoke ----------------------------------------------------------------
if [ -z "${AIRLOCK_SKIP_FUZZ:-}" ] && [ -f fuzz/smoke.sh ]; then
  step "fuzz smoke"
  bash fuzz/smoke.sh
fi

step "all tests passed"
