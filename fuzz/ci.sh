#!/usr/bin/env bash
# A bounded live fuzz run of every target, for CI (the replay of the seeds
# and their mutations runs anyway in `cargo test`, server/tests/fuzz_regressions.rs).
#
# Needs cargo-fuzz on PATH (`cargo install cargo-fuzz --version 0.13.2 --locked`).
# The toolchain is stable; RUSTC_BOOTSTRAP=1 lets it take the nightly flags
# cargo-fuzz passes. Each target runs FUZZ_SECONDS (default 20) on one core,
# starting from its committed seeds, in a scratch copy of the corpus so that
# the checkout stays clean. A crash fails the script and leaves its input under
# fuzz/artifacts/<target>/ (see fuzz/README.md, "A crash").
set -euo pipefail
cd "$(dirname "$0")"

seconds="${FUZZ_SECONDS:-20}"
export RUSTC_BOOTSTRAP=1
# The bundled SQLite trips ASan's ODR check at start-up (see README.md).
export ASAN_OPTIONS="${ASAN_OPTIONS:+$ASAN_OPTIONS:}detect_odr_violation=0"

targets=$(cargo fuzz list)
# FUZZ_BUILD_FLAGS=--dev (CI) builds without optimisation: a fraction of
# the compile time, fewer executions in the bounded run.
echo "== fuzz build"
cargo fuzz build ${FUZZ_BUILD_FLAGS:-}

scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
for target in $targets; do
    echo "== fuzz $target (${seconds}s)"
    mkdir -p "$scratch/$target"
    cp corpus/"$target"/seed-* "$scratch/$target/"
    extra=()
    [ "$target" = imap_mime ] && extra+=(-max_len=16384)
    cargo fuzz run ${FUZZ_BUILD_FLAGS:-} "$target" "$scratch/$target" -- \
        -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 \
        -print_final_stats=1 "${extra[@]}" 2>&1 \
        | grep -E '^(stat::number_of_executed_units|stat::peak_rss_mb|INFO: Running|==[0-9]+==|SUMMARY|Done)|panicked|ERROR' || true
    # grep above only trims the output; the run's own status decides.
    if [ "${PIPESTATUS[0]}" -ne 0 ]; then
        echo "fuzz target $target failed; its input is under fuzz/artifacts/$target/" >&2
        exit 1
    fi
done
echo "== fuzz: every target ran ${seconds}s without a finding"
