#!/usr/bin/env bash
# Builds agentd's cargo-fuzz targets (fuzz/) and runs each for SECONDS (default 20) on a
# working copy of its checked-in corpus, one target at a time. Fails on any crash
# (the input lands in fuzz/artifacts/<target>/); prints executions per target.
#
#   scripts/fuzz.sh [SECONDS]
#
# Needs the nightly toolchain and cargo-fuzz; installs either when missing.
# Environment: FUZZ_SANITIZER (address | none; default address), FUZZ_TARGETS (a
# space-separated subset), FUZZ_KEEP_CORPUS=1 (keep what a run found in
# fuzz/corpus-work/ instead of starting from the checked-in seeds again).
# The first build compiles the whole dependency tree under nightly with coverage
# instrumentation: about 10 minutes on 2 cores, then about a minute.
set -euo pipefail

SECONDS_PER_TARGET="${1:-20}"
SANITIZER="${FUZZ_SANITIZER:-address}"
cd "$(dirname "$0")/.."

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "installing cargo-fuzz" >&2
    cargo install cargo-fuzz
fi
if ! cargo +nightly --version >/dev/null 2>&1; then
    echo "installing the nightly toolchain (cargo-fuzz needs it)" >&2
    rustup toolchain install nightly --profile minimal
fi

cd fuzz
read -r -a targets <<<"${FUZZ_TARGETS:-$(cargo +nightly fuzz list | tr '\n' ' ')}"
cargo +nightly fuzz build --sanitizer "$SANITIZER"

status=0
summary=()
for t in "${targets[@]}"; do
    # New inputs go to the working directory; the checked-in corpus is only read.
    work="corpus-work/$t"
    if [[ "${FUZZ_KEEP_CORPUS:-0}" != 1 ]]; then
        rm -rf "$work"
    fi
    mkdir -p "$work" "artifacts/$t"
    log="$(mktemp)"
    echo "== $t: ${SECONDS_PER_TARGET}s"
    set +e
    cargo +nightly fuzz run --sanitizer "$SANITIZER" "$t" "$work" "corpus/$t" -- \
        -max_total_time="$SECONDS_PER_TARGET" -timeout=20 -rss_limit_mb=3072 \
        -print_final_stats=1 >"$log" 2>&1
    rc=$?
    set -e
    execs="$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)"
    if [[ $rc -ne 0 ]]; then
        tail -n 60 "$log"
        summary+=("$t: CRASH after ${execs:-?} executions (exit $rc; input in fuzz/artifacts/$t/)")
        status=1
    else
        units="$(find "$work" -type f | wc -l)"
        summary+=("$t: ${execs:-?} executions, 0 crashes, ${units} new corpus units")
    fi
    rm -f "$log"
done

echo "== fuzz summary (${SECONDS_PER_TARGET}s per target, sanitizer: $SANITIZER)"
printf '%s\n' "${summary[@]}"
exit "$status"
