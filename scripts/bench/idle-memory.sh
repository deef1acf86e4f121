#!/usr/bin/env bash
# Memory per held idle connection: each server (one worker, pinned to CPU 0) gets N
# keep-alive connections that each made one POST /agent and then stay idle
# (scripts/bench/hold.py on CPU 1); its resident memory is read once all N are
# established and held, against its resident memory before. Servers alternate REPS
# times; prints one line per measurement, then the medians in KB per connection.
#
#   scripts/bench/idle-memory.sh [--reps N] [--connections N] NAME=BIN [NAME=BIN...]
#
# A BIN may be a small script that sets the environment and execs the server (the PID
# measured is the one started, so it must exec).
set -euo pipefail
REPS=3 CONNS=3000 PORT=${IDLE_PORT:-3812}
while [[ $# -gt 0 ]]; do
    case $1 in
        --reps) REPS=$2; shift 2 ;;
        --connections) CONNS=$2; shift 2 ;;
        *) break ;;
    esac
done
(($# >= 1)) || { echo "usage: $0 [--reps N] [--connections N] NAME=BIN..." >&2; exit 2; }
HERE=$(cd "$(dirname "$0")" && pwd)
RESULTS=$(mktemp)
PID="" HOLD=""
cleanup() {
    [[ -n $HOLD ]] && kill "$HOLD" 2>/dev/null
    [[ -n $PID ]] && kill "$PID" 2>/dev/null
    rm -f "$RESULTS"
}
trap cleanup EXIT
ulimit -n 65536 2>/dev/null || true
rss_kb() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status"; }
established() { ss -Htn state established "( sport = :$PORT )" | wc -l; }
for rep in $(seq 1 "$REPS"); do
    for spec in "$@"; do
        name=${spec%%=*} bin=${spec#*=}
        NODE_ENV=production PORT=$PORT HOST=127.0.0.1 WORKERS=1 MAX_CONNECTIONS=$((CONNS + 100)) \
            taskset -c 0 "$bin" >/dev/null 2>&1 &
        PID=$!
        for _ in $(seq 1 50); do curl -fs "http://127.0.0.1:$PORT/health/live" >/dev/null 2>&1 && break; sleep 0.1; done
        # Warm up the allocator and the worker with one round of connections first.
        taskset -c 1 python3 "$HERE/hold.py" --port "$PORT" --connections 200 --hold 0.5 >/dev/null
        sleep 0.5
        before=$(rss_kb "$PID")
        taskset -c 1 python3 "$HERE/hold.py" --port "$PORT" --connections "$CONNS" --hold 6 >/dev/null &
        HOLD=$!
        for _ in $(seq 1 200); do (( $(established) >= CONNS )) && break; sleep 0.1; done
        sleep 1
        held=$(rss_kb "$PID")
        n=$(established)
        wait "$HOLD" || true
        HOLD=""
        kill "$PID"; wait "$PID" 2>/dev/null || true
        PID=""
        per=$(awk -v a="$before" -v b="$held" -v n="$n" 'BEGIN {printf "%.2f", (b - a) / n}')
        echo "rep $rep $name: ${before} KB before, ${held} KB with $n held: $per KB/conn"
        echo "$name $per" >>"$RESULTS"
        sleep 0.5
    done
done
echo "medians (KB per held idle connection):"
for spec in "$@"; do
    name=${spec%%=*}
    awk -v n="$name" '$1 == n {print $2}' "$RESULTS" | sort -n |
        awk -v n="$name" '{v[NR] = $1} END {m = (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2; printf "  %-20s %8.2f\n", n, m}'
done
