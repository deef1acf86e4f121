#!/usr/bin/env bash
# A/B of two (or more) server binaries on /health and /agent, alternating them REPS
# times so that drifting load on the machine hits each alike: one worker pinned to CPU 0,
# wrk (1 thread, 50 connections) pinned to CPU 1, 1 s warm-up then DURATION s per path,
# CPU µs per request from /proc. Prints one line per measurement, then the medians.
#
#   scripts/bench/ab.sh [--reps N] [--duration S] BIN_A BIN_B [BIN...]
#
# Use it for a change on a hot path: build the base and the change, run both here.
set -euo pipefail
REPS=6 DURATION=5 PORT=${AB_PORT:-3811}
while [[ $# -gt 0 ]]; do
    case $1 in
        --reps) REPS=$2; shift 2 ;;
        --duration) DURATION=$2; shift 2 ;;
        *) break ;;
    esac
done
(($# >= 2)) || { echo "usage: $0 [--reps N] [--duration S] BIN_A BIN_B [BIN...]" >&2; exit 2; }
command -v wrk >/dev/null || { echo "wrk is needed (apt-get install wrk)" >&2; exit 1; }
LUA=$(mktemp --suffix=.lua)
RESULTS=$(mktemp)
PID=""
cleanup() { [[ -n $PID ]] && kill "$PID" 2>/dev/null; rm -f "$LUA" "$RESULTS"; }
trap cleanup EXIT
cat >"$LUA" <<'LUA'
wrk.method = "POST"
wrk.body = '{"query":{"id":"01JDX3ABCDEFGHJKMNPQRSTVWX","prompt":"hello"}}'
wrk.headers["Content-Type"] = "application/json"
LUA
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
for rep in $(seq 1 "$REPS"); do
    for bin in "$@"; do
        NODE_ENV=production PORT=$PORT HOST=127.0.0.1 WORKERS=1 taskset -c 0 "$bin" >/dev/null 2>&1 &
        PID=$!
        for _ in $(seq 1 50); do curl -fs "http://127.0.0.1:$PORT/health/live" >/dev/null 2>&1 && break; sleep 0.1; done
        for path in /health /agent; do
            script=(); [[ $path == /agent ]] && script=(-s "$LUA")
            taskset -c 1 wrk -t1 -c50 -d1s "${script[@]}" "http://127.0.0.1:$PORT$path" >/dev/null
            t0=$(cpu_ticks "$PID")
            out=$(taskset -c 1 wrk -t1 -c50 "-d${DURATION}s" "${script[@]}" "http://127.0.0.1:$PORT$path")
            t1=$(cpu_ticks "$PID")
            reqs=$(awk '/requests in/{print $1}' <<<"$out")
            rps=$(awk '/Requests\/sec/{print $2}' <<<"$out")
            tck=$(getconf CLK_TCK)
            us=$(awk -v a="$t0" -v b="$t1" -v n="$reqs" -v t="$tck" 'BEGIN{printf "%.2f", (b-a)/t*1e6/n}')
            echo "rep $rep  $bin  $path  $rps req/s  $us cpu_us/req" | tee -a "$RESULTS"
        done
        kill "$PID"; wait "$PID" 2>/dev/null || true; PID=""
    done
done
echo "medians:"
python3 - "$RESULTS" <<'PY'
import statistics, sys
rows = {}
for line in open(sys.argv[1]):
    f = line.split()
    rows.setdefault((f[2], f[3]), ([], []))
    rows[(f[2], f[3])][0].append(float(f[4]))
    rows[(f[2], f[3])][1].append(float(f[6]))
for (binary, path), (rps, us) in rows.items():
    print(f"  {binary} {path}: {statistics.median(rps):,.0f} req/s, {statistics.median(us):.2f} cpu_us/req")
PY
