#!/usr/bin/env bash
# Build the fuzz targets and run each one briefly from its seeds.
#
#   fuzz/smoke.sh                 # every target, 20 s each
#   FUZZ_SECONDS=60 fuzz/smoke.sh token api_decode
#
# Needs only the Rust toolchain and a C++ compiler (libfuzzer-sys builds
# libFuzzer from source): the targets are built with the same
# sanitizer-coverage flags cargo-fuzz uses (minus AddressSanitizer, which
# buys little for safe Rust), so cargo-fuzz need not be installed.
# Build output goes to ${CARGO_TARGET_DIR:-$HOME/.cache/airlock-target}-fuzz.
#
# Prints one line per target and exits non-zero if any target crashed,
# hung, ran out of memory, or failed to start. The crashing input is kept
# under fuzz/artifacts/<target>/ and the fuzzer's log is printed.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
seconds="${FUZZ_SECONDS:-20}"
all_targets=(manifest token api_decode)
if [ "$#" -gt 0 ]; then targets=("$@"); else targets=("${all_targets[@]}"); fi

target_dir="${CARGO_TARGET_DIR:-$HOME/.cache/airlock-target}-fuzz"
triple="$(rustc -vV | sed -n 's/^host: //p')"

# The flags cargo-fuzz passes (cargo-fuzz 0.13, --sanitizer none), plus
# debug assertions and overflow checks. `--target` keeps them away from
# build scripts and proc macros.
flags="-Cpasses=sancov-module"
flags+=" -Cllvm-args=-sanitizer-coverage-level=4"
flags+=" -Cllvm-args=-sanitizer-coverage-inline-8bit-counters"
flags+=" -Cllvm-args=-sanitizer-coverage-pc-table"
flags+=" -Cllvm-args=-sanitizer-coverage-trace-compares"
flags+=" -Cllvm-args=-simplifycfg-branch-fold-threshold=0"
flags+=" --cfg fuzzing -Cdebug-assertions -Coverflow-checks"
case "$triple" in *-linux-*) flags+=" -Cllvm-args=-sanitizer-coverage-stack-depth" ;; esac

build_start=$(date +%s)
env -u CARGO_ENCODED_RUSTFLAGS -u CARGO_BUILD_RUSTFLAGS RUSTFLAGS="$flags" \
  CARGO_TARGET_DIR="$target_dir" \
  cargo build --quiet --release --manifest-path "$here/Cargo.toml" --target "$triple" \
  $(printf -- '--bin %s ' "${targets[@]}")
echo "fuzz build: $(( $(date +%s) - build_start )) s"

bin_dir="$target_dir/$triple/release"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
failed=0

for t in "${targets[@]}"; do
  mkdir -p "$work/$t" "$here/artifacts/$t"
  log="$work/$t.log"
  # New inputs go to the scratch corpus (first directory); the committed
  # seeds are only read. Replaying fuzz/regressions/<target> as seeds
  # keeps fixed bugs fixed.
  dirs=("$work/$t" "$here/seeds/$t")
  [ -d "$here/regressions/$t" ] && dirs+=("$here/regressions/$t")
  set +e
  "$bin_dir/$t" -max_total_time="$seconds" -timeout=25 -rss_limit_mb=2048 \
    -print_final_stats=1 -artifact_prefix="$here/artifacts/$t/" "${dirs[@]}" >"$log" 2>&1
  rc=$?
  set -e
  runs="$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)"
  if [ "$rc" -eq 0 ]; then
    echo "$t: ${runs:-?} runs, no crash"
  else
    failed=1
    echo "$t: CRASH (exit $rc) after ${runs:-?} runs; input kept in fuzz/artifacts/$t/" >&2
    tail -n 60 "$log" >&2
  fi
done

exit "$failed"
