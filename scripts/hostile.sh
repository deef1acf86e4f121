#!/usr/bin/env bash
# Hostile clients against a real agentd process: slowloris (slowhttptest), HTTP/2 rapid
# reset, made-you-reset and paced resets, and a CONTINUATION flood (Python h2 scripts
# in scripts/hostile/), while normal traffic's latency is measured against a baseline.
#
#   scripts/hostile.sh                          # build (cargo build --release) and run
#   AGENTD_BIN=target/release/agentd scripts/hostile.sh   # run an existing binary
#
# Creates .venv-hostile/ at the repo root (ignored by git) with the pinned
# scripts/hostile/requirements.txt; installs slowhttptest with apt-get when it is
# missing and this runs as root. Starts agentd on a free 127.0.0.1 port, runs each
# attack bounded in time (about 40 s in all), prints a summary of figures, stops the
# server. Exit status: 0 when every defence held, non-zero otherwise.
# Knobs: PYTHON (interpreter for the venv), HOSTILE_VENV, HOSTILE_HEADER_TIMEOUT_MS
# (agentd's HEADER_READ_TIMEOUT for the run, default 2000), HOSTILE_CONNECTIONS and
# HOSTILE_RATE (slowhttptest -c and -r, default 1000 and 200), HOSTILE_P99_FACTOR and
# HOSTILE_P99_SLACK_MS (normal p99 under slowloris may be at most baseline x factor +
# slack; default 10 and 100), HOSTILE_RESULTS (keep the JSON results in this folder).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

PYTHON="${PYTHON:-python3}"
VENV="${HOSTILE_VENV:-$ROOT/.venv-hostile}"
REQS="$ROOT/scripts/hostile/requirements.txt"
HERE="$ROOT/scripts/hostile"
HEADER_TIMEOUT_MS="${HOSTILE_HEADER_TIMEOUT_MS:-2000}"
CONNECTIONS="${HOSTILE_CONNECTIONS:-1000}"
RATE="${HOSTILE_RATE:-200}"

log() { printf 'hostile.sh: %s\n' "$*" >&2; }

# --- tools --------------------------------------------------------------------
# shellcheck source=lib/venv.sh
source "$ROOT/scripts/lib/venv.sh"
ensure_venv "$VENV" "$REQS"

if ! command -v slowhttptest >/dev/null; then
    if [[ $(id -u) == 0 ]] && command -v apt-get >/dev/null; then
        log "installing slowhttptest"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq slowhttptest >/dev/null
    else
        log "slowhttptest is missing (apt-get install slowhttptest)"
        exit 1
    fi
fi

# Both ends of every slow connection need a descriptor.
want_fds=$((CONNECTIONS * 2 + 512))
if (( $(ulimit -n) < want_fds )); then
    ulimit -n "$want_fds" 2>/dev/null || ulimit -n "$(ulimit -Hn)"
fi

# --- binary -------------------------------------------------------------------
if [[ -n "${AGENTD_BIN:-}" ]]; then
    BIN="$AGENTD_BIN"
else
    log "cargo build --release"
    cargo build --release --bin agentd
    BIN="$(source "$ROOT/scripts/lib/target_dir.sh"; cargo_target_dir "$ROOT")/release/agentd"
fi
[[ -x "$BIN" ]] || { log "no executable agentd at $BIN"; exit 1; }

# --- server -------------------------------------------------------------------
RESULTS="${HOSTILE_RESULTS:-$(mktemp -d -t agentd-hostile.XXXXXX)}"
mkdir -p "$RESULTS"
PORT_NUM="$("$VPY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()')"
BASE="http://127.0.0.1:$PORT_NUM"
SERVER_LOG="$RESULTS/agentd.log"
SERVER_PID=""
TRAFFIC_PID=""

cleanup() {
    local rc=$?
    if [[ -n "$TRAFFIC_PID" ]] && kill -0 "$TRAFFIC_PID" 2>/dev/null; then
        kill "$TRAFFIC_PID" 2>/dev/null || true
    fi
    if [[ -n "$SERVER_PID" ]] && kill -0 "$SERVER_PID" 2>/dev/null; then
        kill -TERM "$SERVER_PID" 2>/dev/null || true
        for _ in $(seq 1 50); do
            kill -0 "$SERVER_PID" 2>/dev/null || break
            sleep 0.1
        done
        kill -0 "$SERVER_PID" 2>/dev/null && kill -KILL "$SERVER_PID" 2>/dev/null
        wait "$SERVER_PID" 2>/dev/null || true
    fi
    if [[ $rc -ne 0 && -s "$SERVER_LOG" ]]; then
        log "last lines of the agentd log ($SERVER_LOG):"
        tail -n 20 "$SERVER_LOG" >&2 || true
    fi
    if [[ -z "${HOSTILE_RESULTS:-}" ]]; then
        rm -rf "$RESULTS"
    fi
    exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

log "starting $BIN on $BASE (HEADER_READ_TIMEOUT=$HEADER_TIMEOUT_MS)"
HOST=127.0.0.1 PORT="$PORT_NUM" WORKERS=2 NODE_ENV=production \
    HEADER_READ_TIMEOUT="$HEADER_TIMEOUT_MS" "$BIN" >"$SERVER_LOG" 2>&1 &
SERVER_PID=$!
for _ in $(seq 1 100); do
    [[ "$(cd "$HERE" && "$VPY" -c "import procstat,sys; print(procstat.live_status('127.0.0.1', $PORT_NUM, 0.5))")" == 200 ]] && break
    kill -0 "$SERVER_PID" 2>/dev/null || { log "agentd exited at start"; exit 1; }
    sleep 0.1
done

# Each step writes one JSON line into $RESULTS; a step's own failure is judged by
# summary.py, so the run goes on to the end.
step() {
    local name="$1"
    shift
    log "$name"
    (cd "$HERE" && timeout 60 "$VPY" "$@") >"$RESULTS/$name.json" || true
}

# --- normal traffic, then slowloris with normal traffic beside it ---------------
step baseline normal_traffic.py --url "$BASE" --seconds 5
slow_seconds=$((CONNECTIONS / RATE + HEADER_TIMEOUT_MS / 1000 + 3))
log "slowloris: slowhttptest -c $CONNECTIONS -r $RATE (about $slow_seconds s)"
(cd "$HERE" && timeout 60 "$VPY" normal_traffic.py --url "$BASE" --seconds "$slow_seconds") \
    >"$RESULTS/during_slowloris.json" &
TRAFFIC_PID=$!
(cd "$RESULTS" && timeout 90 slowhttptest -c "$CONNECTIONS" -H -i 1 -r "$RATE" -t GET \
    -u "$BASE/health" -x 24 -p 3 -l $((slow_seconds * 3)) -g -o slowloris \
    >slowhttptest.out 2>&1) || log "slowhttptest exited with $?"
wait "$TRAFFIC_PID" || true
TRAFFIC_PID=""
step slowloris slowloris_report.py "$RESULTS/slowloris.csv" --connections "$CONNECTIONS" \
    --rate "$RATE" --header-timeout-ms "$HEADER_TIMEOUT_MS" --stdout "$RESULTS/slowhttptest.out"

# --- HTTP/2 ---------------------------------------------------------------------
step rapid_reset rapid_reset.py --url "$BASE" --pid "$SERVER_PID" --mode reset
step made_you_reset rapid_reset.py --url "$BASE" --pid "$SERVER_PID" --mode made-you-reset --path /health
step paced_reset rapid_reset.py --url "$BASE" --pid "$SERVER_PID" --mode paced --seconds 5
step continuation_flood continuation_flood.py --url "$BASE" --pid "$SERVER_PID"
step after procstat.py --pid "$SERVER_PID" --url "$BASE"

(cd "$HERE" && "$VPY" summary.py "$RESULTS" \
    --p99-factor "${HOSTILE_P99_FACTOR:-10}" --p99-slack-ms "${HOSTILE_P99_SLACK_MS:-100}")
