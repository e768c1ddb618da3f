#!/usr/bin/env bash
# rustc wrapper for this workspace's crates (see .cargo/config.toml).
#
# It links one binary statically: `airlock`, the front that starts every
# `airlock run` (crates/airlock/src/front.rs). A statically linked front
# skips the dynamic loader's work (mapping libc and libgcc_s, resolving
# their symbols, libgcc_s's start-up CPU probing), which on the reference
# machine is 0.4 ms of each run's 4-5 ms (docs/benchmarks.md). Everything
# else, and the front when glibc's static libraries are missing or
# AIRLOCK_DYNAMIC_FRONT=1 is set, is compiled exactly as cargo asks.
#
# The trade-off: a static front carries the glibc it was built with (it
# resolves --allow-net host names with it) and picks up a glibc update only
# when rebuilt. Build with AIRLOCK_DYNAMIC_FRONT=1 to link it dynamically.
#
# bash, not sh: cargo passes variables such as CARGO_BIN_EXE_airlock-full,
# whose names are not shell identifiers; bash hands them on to rustc, dash
# drops them.
rustc=$1
shift
name= type= target=
prev=
for a in "$@"; do
    case $prev in
        --crate-name) name=$a ;;
        --crate-type) type=$a ;;
        --target) target=$a ;;
    esac
    prev=$a
done
if [ "$name" = airlock ] && [ "$type" = bin ] && [ "${AIRLOCK_DYNAMIC_FRONT:-0}" = 0 ]; then
    case ${target:-$("$rustc" -vV | sed -n 's/^host: //p')} in
        *-linux-gnu)
            # glibc's static libraries (Debian: libc6-dev, which the C
            # linker Rust uses already needs; Fedora: glibc-static).
            cc=${CC:-cc}
            libc_a=$($cc -print-file-name=libc.a 2>/dev/null)
            if [ -f "$libc_a" ]; then
                # Its 15,000 relative relocations as a bitmap (DT_RELR) where
                # the linker makes one and glibc's start-up applies it (2.36+).
                relr=()
                glibc=$(getconf GNU_LIBC_VERSION 2>/dev/null)
                glibc=${glibc#glibc }
                if $cc -Wl,--help 2>/dev/null | grep -q pack-relative-relocs &&
                    [ "$(printf '%s\n' 2.36 "$glibc" | sort -V | head -n1)" = 2.36 ]; then
                    relr=(-C link-arg=-Wl,-z,pack-relative-relocs)
                fi
                exec "$rustc" "$@" -C target-feature=+crt-static "${relr[@]}"
            fi
            ;;
    esac
fi
exec "$rustc" "$@"
