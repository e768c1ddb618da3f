#!/usr/bin/env bash
# rustc wrapper for every crate this workspace builds (see .cargo/config.toml).
#
# It changes the build of one binary: `airlock`, the front that starts every
# `airlock run` (crates/airlock/src/front.rs). Every other crate is
# compiled as cargo asks, less the release profile's LTO (2).
#
# 1. The front is linked statically. A static front skips the dynamic
#    loader's work (mapping libc and libgcc_s, resolving their symbols,
#    libgcc_s's start-up CPU probing), which on the reference machine is
#    0.4 ms of each run's 4-5 ms (docs/benchmarks.md). Not when glibc's
#    static libraries are missing, or with AIRLOCK_DYNAMIC_FRONT=1.
#
#    The trade-off: a static front carries the glibc it was built with (it
#    resolves --allow-net host names with it) and picks up a glibc update
#    only when rebuilt. Build with AIRLOCK_DYNAMIC_FRONT=1 to link it
#    dynamically.
#
# 2. In the release and bench profiles, the static front is built with
#    whole-program (fat) LTO. The front writes every pointer of its
#    read-only data at start-up (it is position independent); most of them
#    were regular-expression Unicode tables that the protected-path globs
#    link in and never use, and LTO drops what is unreachable: 0.15-0.2 ms
#    less per run. Those profiles ask cargo for fat LTO (Cargo.toml), so
#    that the libraries carry LLVM bitcode; this script takes LTO off every
#    crate but the front again (`-C lto=fat` on the binaries, and
#    `-C linker-plugin-lto`, bitcode without machine code, on the
#    libraries, which then get both). LTO of airlock-full takes minutes per
#    relink; the front's takes under a minute. AIRLOCK_FRONT_LTO=0 builds
#    the front without it too.
#
# A RUSTC_WRAPPER in the environment (sccache, for one) replaces this
# script: the front is then dynamic, and every binary of a release build is
# linked with fat LTO, as the profile says (slower to build, not wrong).
#
# bash, not sh: cargo passes variables such as CARGO_BIN_EXE_airlock-full,
# whose names are not shell identifiers; bash hands them on to rustc, dash
# drops them.
rustc=$1
shift
name= type= target= lto_on=
prev=
args=()
for a in "$@"; do
    case $prev in
        --crate-name) name=$a ;;
        --crate-type) type=$a ;;
        --target) target=$a ;;
    esac
    if [ "$prev" = -C ]; then
        case $a in
            lto | lto=fat | lto=true | lto=yes | lto=on | linker-plugin-lto)
                # Drop the pair: `-C` went into args a step ago.
                unset 'args[${#args[@]}-1]'
                lto_on=1
                prev=
                continue
                ;;
        esac
    fi
    args+=("$a")
    prev=$a
done
# The front: this workspace's crates/airlock, binary `airlock`.
if [ "$name" = airlock ] && [ "$type" = bin ] && [ "${AIRLOCK_DYNAMIC_FRONT:-0}" = 0 ] &&
    [ "$(cd "${CARGO_MANIFEST_DIR:-/nonexistent}" 2>/dev/null && pwd -P)" = \
        "$(cd "$(dirname "${BASH_SOURCE[0]}")/../crates/airlock" && pwd -P)" ]; then
    case ${target:-$("$rustc" -vV | sed -n 's/^host: //p')} in
        *-linux-gnu)
            # glibc's static libraries (Debian: libc6-dev, which the C
            # linker Rust uses already needs; Fedora: glibc-static).
            cc=${CC:-cc}
            libc_a=$($cc -print-file-name=libc.a 2>/dev/null)
            if [ -f "$libc_a" ]; then
                # Its 15,000 relative relocations as a bitmap (DT_RELR) where
                # the linker makes one and glibc's start-up applies it (2.36+).
                extra=()
                glibc=$(getconf GNU_LIBC_VERSION 2>/dev/null)
                glibc=${glibc#glibc }
                if $cc -Wl,--help 2>/dev/null | grep -q pack-relative-relocs &&
                    [ "$(printf '%s\n' 2.36 "$glibc" | sort -V | head -n1)" = 2.36 ]; then
                    extra+=(-C link-arg=-Wl,-z,pack-relative-relocs)
                fi
                if [ -n "$lto_on" ] && [ "${AIRLOCK_FRONT_LTO:-1}" != 0 ]; then
                    extra+=(-C lto=fat)
                fi
                exec "$rustc" "${args[@]}" -C target-feature=+crt-static "${extra[@]}"
            fi
            ;;
    esac
fi
exec "$rustc" "${args[@]}"
